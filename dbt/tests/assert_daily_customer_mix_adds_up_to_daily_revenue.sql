-- A failure means, for a date, new + returning customers is not daily_revenue.unique_customers,
-- their revenues do not add up to total_revenue, or the date is in one mart and not the other.
-- Each customer with a completed order that date must be exactly one of new or returning.
-- With min_date/max_date only that window is checked.

{{ config(meta={'dagster': {'ref': {'name': 'daily_customer_mix'}}}) }}

with

mix as (

    select * from {{ ref('daily_customer_mix') }}
    where {{ daily_window_predicate('revenue_date') }}

),

revenue as (

    select * from {{ ref('daily_revenue') }}
    where {{ daily_window_predicate('revenue_date') }}

),

compared as (

    select
        coalesce(mix.revenue_date, revenue.revenue_date) as revenue_date,
        mix.new_customers + mix.returning_customers as mix_customers,
        revenue.unique_customers,
        mix.new_customer_revenue + mix.returning_customer_revenue as mix_revenue,
        revenue.total_revenue

    from mix
    full outer join revenue
        on mix.revenue_date = revenue.revenue_date

)

select * from compared
where mix_customers is null
    or unique_customers is null
    or mix_customers != unique_customers
    or mix_revenue != total_revenue
