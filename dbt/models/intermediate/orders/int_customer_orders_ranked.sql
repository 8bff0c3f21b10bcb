-- Each live order numbered within its customer's history: all orders, and completed ones only.
-- customer_completed_order_number = 1 marks the order that made someone a customer.

with

orders as (

    select * from {{ ref('int_orders_joined') }}

),

ranked as (

    select
        *,

        row_number() over (
            partition by customer_id
            order by created_at, order_id
        ) as customer_order_number,

        case
            when is_completed
                then row_number() over (
                    partition by customer_id, is_completed
                    order by created_at, order_id
                )
        end as customer_completed_order_number,

        min(order_date) over (partition by customer_id) as customer_first_order_date,

        min(case when is_completed then order_date end) over (
            partition by customer_id
        ) as customer_first_completed_order_date

    from orders

)

select * from ranked
