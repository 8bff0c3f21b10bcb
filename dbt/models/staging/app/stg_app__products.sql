with

source as (

    select * from {{ source('app', 'products') }}

),

renamed as (

    select
        ----------  ids
        cast(id as {{ dbt.type_bigint() }}) as product_id,

        ---------- text
        cast(name as {{ dbt.type_string() }}) as product_name,
        cast(category as {{ dbt.type_string() }}) as category,

        ---------- numerics
        cast(price as decimal(12, 2)) as price,

        ---------- timestamps
        {{ to_utc_timestamp('created_at') }} as created_at,
        {{ to_utc_timestamp('updated_at') }} as updated_at

    from source
    where not coalesce(_is_deleted, false)

)

select * from renamed
