{#
    The business date of a UTC timestamp (the `<event>_at` convention): its calendar date in the
    business time zone, var `partition_timezone` (an IANA name; default in dbt_project.yml). The
    Dagster assets pass PARTITION_TIMEZONE as this var, so a mart's date holds exactly the hours
    of the Dagster partition of that date: 24, or 23 and 25 on a daylight-saving change.

    BigQuery  DATE(ts, zone)
    DuckDB    timezone('UTC', ts) makes the UTC wall time an instant, timezone(zone, instant) its
              wall time in the zone; then the date. Neither step reads the session time zone.
#}

{% macro business_timezone() -%}
    {%- set zone = var('partition_timezone') | string | trim -%}
    {#- The name goes into SQL as a literal: only the characters IANA names use. -#}
    {%- if not modules.re.match('^[A-Za-z0-9_+-]+(/[A-Za-z0-9_+-]+)*$', zone) -%}
        {{ exceptions.raise_compiler_error(
            "var partition_timezone must be an IANA time zone name such as UTC or Asia/Seoul; got '"
            ~ zone ~ "'") }}
    {%- endif -%}
    {{ return(zone) }}
{%- endmacro %}

{% macro business_date(column_name) -%}
    {{ return(adapter.dispatch('business_date')(column_name, business_timezone())) }}
{%- endmacro %}

{% macro default__business_date(column_name, zone) -%}
    cast(({{ column_name }} at time zone 'UTC') at time zone '{{ zone }}' as date)
{%- endmacro %}

{% macro duckdb__business_date(column_name, zone) -%}
    cast(timezone('{{ zone }}', timezone('UTC', {{ column_name }})) as date)
{%- endmacro %}

{% macro bigquery__business_date(column_name, zone) -%}
    date({{ column_name }}, '{{ zone }}')
{%- endmacro %}
