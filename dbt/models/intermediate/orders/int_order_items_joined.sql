-- One row per line of a live (not deleted) order, with the order's status, date and customer.
-- Lines of deleted orders drop out here.

with

order_items as (

    select * from {{ ref('stg_app__order_items') }}

),

orders as (

    select * from {{ ref('stg_app__orders') }}

),

joined as (

    select
        order_items.order_item_id,
        order_items.order_id,
        orders.user_id as customer_id,
        order_items.product_id,
        order_items.quantity,
        order_items.unit_price,
        order_items.quantity * order_items.unit_price as line_total,
        orders.status as order_status,
        orders.order_date,
        orders.created_at as ordered_at

    from order_items
    inner join orders
        on order_items.order_id = orders.order_id

)

select * from joined
