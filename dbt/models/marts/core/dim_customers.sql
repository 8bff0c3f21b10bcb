with

users as (

    select * from {{ ref('stg_app__users') }}

),

orders as (

    select * from {{ ref('int_customer_orders_ranked') }}

),

customer_orders_summary as (

    select
        customer_id,
        count(*) as order_count,
        sum(case when is_completed then 1 else 0 end) as completed_order_count,
        sum(case when is_completed then total else 0 end) as lifetime_revenue,
        min(customer_first_order_date) as first_order_date,
        min(customer_first_completed_order_date) as first_completed_order_date,
        max(created_at) as last_ordered_at

    from orders
    group by customer_id

),

joined as (

    select
        users.user_id as customer_id,
        users.email,
        users.full_name,
        users.country_code,
        users.created_at,
        customer_orders_summary.first_order_date,
        customer_orders_summary.first_completed_order_date,
        customer_orders_summary.last_ordered_at,
        coalesce(customer_orders_summary.order_count, 0) as order_count,
        coalesce(customer_orders_summary.completed_order_count, 0) as completed_order_count,
        coalesce(customer_orders_summary.lifetime_revenue, 0) as lifetime_revenue

    from users
    left join customer_orders_summary
        on users.user_id = customer_orders_summary.customer_id

),

final as (

    select
        cast(customer_id as {{ dbt.type_bigint() }}) as customer_id,
        cast(email as {{ dbt.type_string() }}) as email,
        cast(full_name as {{ dbt.type_string() }}) as full_name,
        cast(country_code as {{ dbt.type_string() }}) as country_code,
        created_at,
        first_order_date,
        first_completed_order_date,
        last_ordered_at,
        cast(order_count as {{ dbt.type_bigint() }}) as order_count,
        cast(completed_order_count as {{ dbt.type_bigint() }}) as completed_order_count,
        cast(lifetime_revenue as decimal(18, 2)) as lifetime_revenue,
        completed_order_count > 0 as has_completed_order,
        completed_order_count > 1 as is_repeat_customer

    from joined

)

select * from final
