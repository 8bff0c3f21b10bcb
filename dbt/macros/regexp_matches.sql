{#
    Boolean: does `expression` contain a match of the RE2 `pattern` (anchor it with ^...$ for a
    full match). Both warehouses use RE2, so one pattern behaves the same on both.
#}
{% macro regexp_matches(expression, pattern) -%}
    {{ return(adapter.dispatch('regexp_matches')(expression, pattern)) }}
{%- endmacro %}

{% macro default__regexp_matches(expression, pattern) -%}
    regexp_like({{ expression }}, '{{ pattern | replace("'", "''") }}')
{%- endmacro %}

{% macro duckdb__regexp_matches(expression, pattern) -%}
    {#- DuckDB string literals keep backslashes as written. -#}
    regexp_matches({{ expression }}, '{{ pattern | replace("'", "''") }}')
{%- endmacro %}

{% macro bigquery__regexp_matches(expression, pattern) -%}
    {#- A raw string, so backslashes reach RE2 as written. -#}
    regexp_contains({{ expression }}, r'{{ pattern | replace("'", "\\'") }}')
{%- endmacro %}
