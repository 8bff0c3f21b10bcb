{{ config(**daily_incremental_config(
    'revenue_date',
    unique_key=['revenue_date', 'product_id'],
    cluster_by=['product_id'],
)) }}

-- Units, line revenue and orders per product and business date, over completed orders.
-- Its product ids are checked against the catalogue (relationships test), so the catalogue is
-- upstream: a run of the marts and their parents builds it in a new warehouse.
-- depends_on: {{ ref('stg_app__products') }}

with

order_items as (

    select * from {{ ref('int_order_items_joined') }}
    where order_status = 'completed'
    -- the window applies on the first build too: a partition run builds only its dates
    and {{ daily_window_predicate('order_date') }}

),

daily as (

    select
        order_date as revenue_date,
        product_id,
        sum(quantity) as units_sold,
        count(distinct order_id) as order_count,
        sum(line_total) as total_revenue

    from order_items
    group by order_date, product_id

),

final as (

    select
        revenue_date,
        cast(product_id as {{ dbt.type_bigint() }}) as product_id,
        cast(units_sold as {{ dbt.type_bigint() }}) as units_sold,
        cast(order_count as {{ dbt.type_bigint() }}) as order_count,
        cast(total_revenue as decimal(18, 2)) as total_revenue

    from daily

)

select * from final
