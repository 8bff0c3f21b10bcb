with

source as (

    select * from {{ source('app', 'orders') }}

),

renamed as (

    select
        ----------  ids
        cast(id as {{ dbt.type_bigint() }}) as order_id,
        cast(user_id as {{ dbt.type_bigint() }}) as user_id,

        ---------- text
        cast(status as {{ dbt.type_string() }}) as status,

        ---------- numerics
        cast(total as decimal(12, 2)) as total,

        ---------- timestamps
        {{ to_utc_timestamp('created_at') }} as created_at,
        {{ to_utc_timestamp('paid_at') }} as paid_at,
        {{ to_utc_timestamp('updated_at') }} as updated_at

    from source
    where not coalesce(_is_deleted, false)
        and deleted_at is null

),

final as (

    select
        *,

        ---------- dates (the business date: in the partition time zone)
        {{ business_date('created_at') }} as order_date,

        ---------- durations (null while unpaid)
        {{ dbt.datediff('created_at', 'paid_at', 'second') }} as time_to_pay_seconds

    from renamed

)

select * from final
