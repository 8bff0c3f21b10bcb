-- One row per live order with its line counts; users become customers from here on.

with

orders as (

    select * from {{ ref('stg_app__orders') }}

),

order_items as (

    select * from {{ ref('int_order_items_joined') }}

),

order_items_summary as (

    select
        order_id,
        count(*) as item_count,
        sum(quantity) as unit_count,
        sum(line_total) as items_subtotal

    from order_items
    group by order_id

),

joined as (

    select
        orders.order_id,
        orders.user_id as customer_id,
        orders.status,
        orders.total,
        coalesce(order_items_summary.item_count, 0) as item_count,
        coalesce(order_items_summary.unit_count, 0) as unit_count,
        coalesce(order_items_summary.items_subtotal, 0) as items_subtotal,
        orders.created_at,
        orders.paid_at,
        orders.updated_at,
        orders.order_date,
        orders.time_to_pay_seconds,
        orders.paid_at is not null as is_paid,
        orders.status = 'completed' as is_completed

    from orders
    left join order_items_summary
        on orders.order_id = order_items_summary.order_id

)

select * from joined
