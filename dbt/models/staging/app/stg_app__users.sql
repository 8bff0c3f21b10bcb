with

source as (

    select * from {{ source('app', 'users') }}

),

renamed as (

    select
        ----------  ids
        cast(id as {{ dbt.type_bigint() }}) as user_id,

        ---------- text
        cast(email as {{ dbt.type_string() }}) as email,
        cast(full_name as {{ dbt.type_string() }}) as full_name,
        upper(cast(country as {{ dbt.type_string() }})) as country_code,

        ---------- timestamps
        {{ to_utc_timestamp('created_at') }} as created_at,
        {{ to_utc_timestamp('updated_at') }} as updated_at

    from source
    where not coalesce(_is_deleted, false)
        and deleted_at is null

)

select * from renamed
