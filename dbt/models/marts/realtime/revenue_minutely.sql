-- Orders placed and their value per minute over the last two days: the near-real-time revenue
-- metric (the reference stack computed it in a Kafka Streams job). Cancelled and deleted orders
-- do not count; an order counts in the minute it was placed, whatever its later status.

with

orders as (

    select * from {{ ref('stg_app__orders') }}
    where status != 'cancelled'

),

recent as (

    select
        {{ dbt.date_trunc('minute', 'created_at') }} as revenue_minute,
        total
    from orders
    where created_at >= (
        select {{ dbt.dateadd('day', -2, 'max(created_at)') }} from orders
    )

),

final as (

    select
        revenue_minute,
        cast(count(*) as {{ dbt.type_bigint() }}) as order_count,
        cast(sum(total) as decimal(18, 2)) as total_revenue
    from recent
    group by revenue_minute

)

select * from final
