with

source as (

    select * from {{ source('app', 'order_items') }}

),

renamed as (

    select
        ----------  ids
        cast(id as {{ dbt.type_bigint() }}) as order_item_id,
        cast(order_id as {{ dbt.type_bigint() }}) as order_id,
        cast(product_id as {{ dbt.type_bigint() }}) as product_id,

        ---------- numerics
        cast(quantity as {{ dbt.type_int() }}) as quantity,
        cast(unit_price as decimal(12, 2)) as unit_price,

        ---------- timestamps
        {{ to_utc_timestamp('created_at') }} as created_at,
        {{ to_utc_timestamp('updated_at') }} as updated_at

    from source
    where not coalesce(_is_deleted, false)

)

select * from renamed
