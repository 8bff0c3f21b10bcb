{#
    Daily-partitioned incremental marts (tag `daily`; Dagster partitions them by day).

    Vars, both or neither, as 'YYYY-MM-DD' business dates (dates in var partition_timezone,
    macros/business_date.sql):
      min_date  first business date to rebuild (inclusive)
      max_date  first business date NOT to rebuild (exclusive)

    With the vars, an incremental run replaces exactly the dates in [min_date, max_date): every
    row of those dates is removed first, so a date that no longer has any qualifying order ends
    with no row. Without the vars the model is rebuilt from full history (full refresh).

    How the window is replaced:
      BigQuery  insert_overwrite with *static* `partitions` (one per date in the window); its MERGE
                deletes every row of those partitions, whether or not the new data has the date.
      DuckDB    delete+insert on the date key deletes only dates present in the new data, so a
                pre-hook first deletes the whole window, inside the same transaction.
#}

{% macro daily_window() %}
    {%- set min_date = var('min_date', none) -%}
    {%- set max_date = var('max_date', none) -%}
    {%- if min_date is none and max_date is none -%}
        {{ return(none) }}
    {%- endif -%}
    {%- if min_date is none or max_date is none -%}
        {{ exceptions.raise_compiler_error(
            "Pass both vars min_date and max_date ('YYYY-MM-DD', max exclusive) or neither; got min_date="
            ~ min_date ~ ", max_date=" ~ max_date) }}
    {%- endif -%}
    {%- set bounds = [] -%}
    {%- for value in [min_date, max_date] -%}
        {#- YAML --vars turn an unquoted 2024-01-31 into a date; `string` turns it back. -#}
        {%- set text = value | string | trim -%}
        {%- if not modules.re.match('^[0-9]{4}-[0-9]{2}-[0-9]{2}$', text) -%}
            {{ exceptions.raise_compiler_error(
                "vars min_date/max_date must be 'YYYY-MM-DD' dates; got '" ~ text ~ "'") }}
        {%- endif -%}
        {%- do bounds.append(modules.datetime.date.fromisoformat(text)) -%}
    {%- endfor -%}
    {%- if bounds[0] >= bounds[1] -%}
        {{ exceptions.raise_compiler_error(
            "min_date must be before max_date (max_date is exclusive); got "
            ~ bounds[0] ~ " and " ~ bounds[1]) }}
    {%- endif -%}
    {%- set dates = [] -%}
    {%- for offset in range((bounds[1] - bounds[0]).days) -%}
        {%- do dates.append((bounds[0] + modules.datetime.timedelta(days=offset)).isoformat()) -%}
    {%- endfor -%}
    {{ return({'min_date': bounds[0].isoformat(), 'max_date': bounds[1].isoformat(), 'dates': dates}) }}
{% endmacro %}


{# SQL predicate: `column_name` (a DATE) falls in the window; always true without the vars. #}
{% macro daily_window_predicate(column_name) %}
    {%- set window = daily_window() -%}
    {%- if window is none -%}
        1 = 1
    {%- else -%}
        {{ column_name }} >= cast('{{ window.min_date }}' as date)
        and {{ column_name }} < cast('{{ window.max_date }}' as date)
    {%- endif -%}
{% endmacro %}


{#
    The whole config of a daily mart, one place for both warehouses:
    {{ config(**daily_incremental_config('revenue_date', unique_key=['revenue_date'])) }}
#}
{% macro daily_incremental_config(date_column, unique_key, cluster_by=none) %}
    {%- set window = daily_window() -%}
    {%- set settings = {
        'materialized': 'incremental',
        'tags': ['daily'],
        'on_schema_change': 'fail',
    } -%}
    {%- if window is none -%}
        {#- No window: rebuild from full history. Otherwise `--full-refresh` still applies. -#}
        {%- do settings.update({'full_refresh': true}) -%}
    {%- endif -%}
    {%- if target.type == 'bigquery' -%}
        {%- set partitions = none -%}
        {%- if window is not none -%}
            {%- set partitions = [] -%}
            {%- for day in window.dates -%}
                {%- do partitions.append("cast('" ~ day ~ "' as date)") -%}
            {%- endfor -%}
        {%- endif -%}
        {%- do settings.update({
            'incremental_strategy': 'insert_overwrite',
            'partition_by': {'field': date_column, 'data_type': 'date', 'granularity': 'day'},
            'partitions': partitions,
            'cluster_by': cluster_by,
        }) -%}
    {%- else -%}
        {%- do settings.update({
            'incremental_strategy': 'delete+insert',
            'unique_key': unique_key,
            'pre_hook': ["{{ delete_daily_window('" ~ date_column ~ "') }}"],
        }) -%}
    {%- endif -%}
    {{ return(settings) }}
{% endmacro %}


{# Pre-hook (delete+insert targets): empty the window before the insert; no-op otherwise. #}
{% macro delete_daily_window(date_column) %}
    {%- if is_incremental() and daily_window() is not none -%}
        delete from {{ this }} where {{ daily_window_predicate(date_column) }}
    {%- endif -%}
{% endmacro %}
