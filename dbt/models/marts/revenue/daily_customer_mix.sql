{{ config(**daily_incremental_config('revenue_date', unique_key=['revenue_date'])) }}

-- New vs returning customers per business date, over completed orders. A customer is new on the
-- date of their first completed order and returning on every later date they complete one.

with

orders as (

    select * from {{ ref('fct_orders') }}
    where is_completed
    -- the window applies on the first build too: a partition run builds only its dates
    and {{ daily_window_predicate('order_date') }}

),

customer_days as (

    select
        order_date as revenue_date,
        customer_id,
        min(customer_completed_order_number) = 1 as is_new_customer,
        sum(total) as revenue

    from orders
    group by order_date, customer_id

),

daily as (

    select
        revenue_date,
        sum(case when is_new_customer then 1 else 0 end) as new_customers,
        sum(case when is_new_customer then 0 else 1 end) as returning_customers,
        sum(case when is_new_customer then revenue else 0 end) as new_customer_revenue,
        sum(case when is_new_customer then 0 else revenue end) as returning_customer_revenue

    from customer_days
    group by revenue_date

),

final as (

    select
        revenue_date,
        cast(new_customers as {{ dbt.type_bigint() }}) as new_customers,
        cast(returning_customers as {{ dbt.type_bigint() }}) as returning_customers,
        cast(new_customer_revenue as decimal(18, 2)) as new_customer_revenue,
        cast(returning_customer_revenue as decimal(18, 2)) as returning_customer_revenue

    from daily

)

select * from final
