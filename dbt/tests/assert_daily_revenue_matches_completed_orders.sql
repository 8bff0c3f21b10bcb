-- A failure means daily_revenue disagrees with the completed orders in fct_orders for a date:
-- a date missing or left over, or a different order count, customer count or total. The rows
-- returned are those dates. With min_date/max_date only that window is checked: dates outside it
-- were not rebuilt by this run.

{{ config(meta={'dagster': {'ref': {'name': 'daily_revenue'}}}) }}

with

expected as (

    select
        order_date as revenue_date,
        count(distinct customer_id) as unique_customers,
        count(*) as order_count,
        sum(total) as total_revenue

    from {{ ref('fct_orders') }}
    where is_completed
        and {{ daily_window_predicate('order_date') }}
    group by order_date

),

actual as (

    select * from {{ ref('daily_revenue') }}
    where {{ daily_window_predicate('revenue_date') }}

),

compared as (

    select
        coalesce(expected.revenue_date, actual.revenue_date) as revenue_date,
        expected.order_count as expected_order_count,
        actual.order_count as actual_order_count,
        expected.unique_customers as expected_unique_customers,
        actual.unique_customers as actual_unique_customers,
        expected.total_revenue as expected_total_revenue,
        actual.total_revenue as actual_total_revenue

    from expected
    full outer join actual
        on expected.revenue_date = actual.revenue_date

)

select * from compared
where expected_order_count is null
    or actual_order_count is null
    or expected_order_count != actual_order_count
    or expected_unique_customers != actual_unique_customers
    or expected_total_revenue != actual_total_revenue
