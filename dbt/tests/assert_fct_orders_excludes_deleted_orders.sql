-- A failure means fct_orders holds an order that is deleted at source (_is_deleted) or
-- soft-deleted in the app (deleted_at set); such orders must never count anywhere. The rows
-- returned are those orders.

{{ config(meta={'dagster': {'ref': {'name': 'fct_orders'}}}) }}

with

deleted_orders as (

    select id as order_id
    from {{ source('app', 'orders') }}
    where coalesce(_is_deleted, false)
        or deleted_at is not null

)

select fct_orders.order_id
from {{ ref('fct_orders') }} as fct_orders
inner join deleted_orders
    on fct_orders.order_id = deleted_orders.order_id
