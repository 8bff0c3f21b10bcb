{#-
    Target `emulator` only (the BigQuery API emulator of the tests, tests/prod/emulator.py): the
    emulator cannot parse `create or replace table t (column definitions) ... as (query)`, the DDL
    BigQuery runs for a contract-enforced model, so there the column list is left out; dbt's
    contract assertion (get_assert_columns_equivalent: names and types of the query's columns)
    still runs before it. Every other target gets dbt's own column list.
-#}
{% macro bigquery__get_table_columns_and_constraints() -%}
    {%- if target.name != 'emulator' -%}
        {{ default__get_table_columns_and_constraints() }}
    {%- endif -%}
{%- endmacro %}
