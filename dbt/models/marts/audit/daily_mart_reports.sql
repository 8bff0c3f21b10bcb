{#- BigQuery has no `append` strategy: a merge on the report's key appends the same rows. -#}
{{ config(
    materialized='incremental',
    incremental_strategy='merge' if target.type == 'bigquery' else 'append',
    unique_key=['business_date', 'mart', 'measure', 'invocation_id'],
    tags=['daily'],
    full_refresh=false,
    on_schema_change='fail',
) }}

-- The restatement log. Every figure a build of the daily marts reported: per business date of
-- the build's window, mart and measure, the value and when (this dbt invocation), beside what the
-- build before reported for that date; a changed figure is a restatement (is_restated), with the
-- changes that caused it: the change-log rows of that date's orders and order lines loaded
-- between the two builds, counted per table and operation. Append only, never rebuilt. A date
-- with no row in a mart reports zero, so a day whose orders all went away is restated too.

-- depends_on: {{ source('app_changes', 'orders_changes') }}
-- depends_on: {{ source('app_changes', 'order_items_changes') }}

{%- set window = daily_window() %}
{%- set measures = reported_measures() %}

with

{% if window is not none %}
dates as (

    {% for day in window.dates %}
    select cast('{{ day }}' as date) as business_date
    {% if not loop.last %}union all{% endif %}
    {% endfor %}

),
{% else %}
dates as (

    {% for mart in measures %}
    select revenue_date as business_date from {{ ref(mart) }}
    {% if not loop.last %}union distinct{% endif %}
    {% endfor %}

),
{% endif %}

figures as (

    {% for mart, columns in measures.items() %}
    {% for column in columns %}
    select
        '{{ mart }}' as mart,
        revenue_date as business_date,
        '{{ column }}' as measure,
        sum({{ column }}) as value
    from {{ ref(mart) }}
    where {{ daily_window_predicate('revenue_date') }}
    group by revenue_date
    {% if not loop.last %}union all{% endif %}
    {% endfor %}
    {% if not loop.last %}union all{% endif %}
    {% endfor %}

),

measures as (

    {% for mart, columns in measures.items() %}
    {% for column in columns %}
    select '{{ mart }}' as mart, '{{ column }}' as measure
    {% if not loop.last %}union all{% endif %}
    {% endfor %}
    {% if not loop.last %}union all{% endif %}
    {% endfor %}

),

{% if is_incremental() %}
previous as (

    select mart, business_date, measure, value, reported_at from (
        select
            *,
            row_number() over (
                partition by mart, business_date, measure order by reported_at desc
            ) as nth
        from {{ this }}
        where business_date in (select business_date from dates)
    ) as reports
    where nth = 1

),

changes as (

    {% for table in ['orders', 'order_items'] %}
    select
        '{{ table }}' as table_name,
        {{ change_op_name('_op') }} as op,
        {{ business_date(to_utc_timestamp('created_at')) }} as business_date,
        _loaded_at as loaded_at
    from {{ source('app_changes', table ~ '_changes') }}
    where _op <> 't'
    {% if not loop.last %}union all{% endif %}
    {% endfor %}

),

-- per date: the changes loaded since that date's previous build, per table and operation
causes as (

    select c.business_date, c.table_name, c.op, count(*) as changes
    from changes c
    inner join (
        select business_date, max(reported_at) as reported_at from previous group by 1
    ) as p
        on c.business_date = p.business_date and c.loaded_at > p.reported_at
    group by 1, 2, 3

),

caused_by as (

    select
        business_date,
        {{ dbt.listagg(
            "table_name || ' ' || op || ' ' || cast(changes as " ~ dbt.type_string() ~ ")",
            "', '",
            "order by table_name, op",
        ) }} as caused_by
    from causes
    group by 1

),
{% endif %}

reported as (

    select
        d.business_date,
        m.mart,
        m.measure,
        cast(coalesce(f.value, 0) as decimal(18, 2)) as value
    from dates d
    cross join measures m
    left join figures f
        on f.business_date = d.business_date and f.mart = m.mart and f.measure = m.measure

),

final as (

    select
        r.business_date,
        r.mart,
        r.measure,
        r.value,
        {{ run_started_timestamp() }} as reported_at,
        cast('{{ invocation_id }}' as {{ dbt.type_string() }}) as invocation_id,
        {% if is_incremental() %}
        p.value as previous_value,
        p.reported_at as previous_reported_at,
        coalesce(p.value <> r.value, false) as is_restated,
        case when p.value <> r.value
            then coalesce(c.caused_by, 'no change in the change log') end as caused_by
        {% else %}
        cast(null as decimal(18, 2)) as previous_value,
        case when false then {{ run_started_timestamp() }} end as previous_reported_at,
        false as is_restated,
        cast(null as {{ dbt.type_string() }}) as caused_by
        {% endif %}
    from reported r
    {% if is_incremental() %}
    left join previous p
        on p.mart = r.mart and p.business_date = r.business_date and p.measure = r.measure
    left join caused_by c on c.business_date = r.business_date
    {% endif %}

)

select * from final
