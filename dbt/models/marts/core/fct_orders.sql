with

orders as (

    select * from {{ ref('int_customer_orders_ranked') }}

),

final as (

    select
        cast(order_id as {{ dbt.type_bigint() }}) as order_id,
        cast(customer_id as {{ dbt.type_bigint() }}) as customer_id,
        cast(status as {{ dbt.type_string() }}) as status,
        cast(total as decimal(12, 2)) as total,
        cast(item_count as {{ dbt.type_bigint() }}) as item_count,
        cast(unit_count as {{ dbt.type_bigint() }}) as unit_count,
        cast(items_subtotal as decimal(18, 2)) as items_subtotal,
        cast(customer_order_number as {{ dbt.type_bigint() }}) as customer_order_number,
        cast(customer_completed_order_number as {{ dbt.type_bigint() }}) as customer_completed_order_number,
        order_date,
        cast(time_to_pay_seconds as {{ dbt.type_bigint() }}) as time_to_pay_seconds,
        is_paid,
        is_completed,
        created_at,
        paid_at,
        updated_at

    from orders

)

select * from final
