{#
    What the daily marts report, as (mart, measure) pairs summed per business date: the figures
    marts/daily_mart_reports logs on every build and marts/restatements compares.
#}
{% macro reported_measures() %}
    {{ return({
        'daily_revenue': ['order_count', 'unique_customers', 'total_revenue'],
        'daily_product_sales': ['units_sold', 'order_count', 'total_revenue'],
        'daily_customer_mix': ['new_customers', 'returning_customers',
                               'new_customer_revenue', 'returning_customer_revenue'],
    }) }}
{% endmacro %}


{# This dbt invocation's start (UTC) as a timestamp with zone on both warehouses; as epoch
   microseconds, since the BigQuery emulator misreads a fractional-second timestamp literal. #}
{% macro run_started_timestamp() -%}
    {%- set micros = (run_started_at.timestamp() * 1000000) | round | int -%}
    {{ return(adapter.dispatch('run_started_timestamp')(micros)) }}
{%- endmacro %}

{% macro default__run_started_timestamp(micros) -%}
    timestamp_micros({{ micros }})
{%- endmacro %}

{% macro duckdb__run_started_timestamp(micros) -%}
    make_timestamptz({{ micros }})
{%- endmacro %}


{# Operation code of the change log -> the word the restatement log uses. #}
{% macro change_op_name(column_name) -%}
    case {{ column_name }}
        when 'c' then 'inserted' when 'u' then 'updated' when 'd' then 'deleted'
        when 't' then 'truncated' when 'r' then 'snapshot' else {{ column_name }}
    end
{%- endmacro %}
