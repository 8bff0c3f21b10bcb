{#
    A source TIMESTAMPTZ as a UTC timestamp, the `<event>_at` convention.
    DuckDB: convert to UTC explicitly and drop the zone, so later casts to date never depend on
    the session time zone. BigQuery: TIMESTAMP is already an instant in UTC.
#}
{% macro to_utc_timestamp(column_name) -%}
    {{ return(adapter.dispatch('to_utc_timestamp')(column_name)) }}
{%- endmacro %}

{% macro default__to_utc_timestamp(column_name) -%}
    cast({{ column_name }} as {{ dbt.type_timestamp() }})
{%- endmacro %}

{% macro duckdb__to_utc_timestamp(column_name) -%}
    cast(timezone('UTC', {{ column_name }}) as {{ dbt.type_timestamp() }})
{%- endmacro %}
