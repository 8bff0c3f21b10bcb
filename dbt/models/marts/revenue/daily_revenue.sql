{{ config(**daily_incremental_config('revenue_date', unique_key=['revenue_date'])) }}

-- Completed orders per business date (the date of created_at in the business time zone, see
-- macros/business_date.sql). See macros/daily_window.sql for the min_date/max_date window an
-- incremental run replaces.

with

orders as (

    select * from {{ ref('fct_orders') }}
    where is_completed
    -- the window applies on the first build too: a partition run builds only its dates
    and {{ daily_window_predicate('order_date') }}

),

daily as (

    select
        order_date as revenue_date,
        count(distinct customer_id) as unique_customers,
        count(*) as order_count,
        sum(total) as total_revenue

    from orders
    group by order_date

),

final as (

    select
        revenue_date,
        cast(unique_customers as {{ dbt.type_bigint() }}) as unique_customers,
        cast(order_count as {{ dbt.type_bigint() }}) as order_count,
        cast(total_revenue as decimal(18, 2)) as total_revenue,
        cast(total_revenue / order_count as decimal(18, 2)) as avg_order_value

    from daily

)

select * from final
