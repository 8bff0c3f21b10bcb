{#
    Schema = the model's folder layer (staging / intermediate / marts), set in dbt_project.yml.
    dev (one DuckDB file per developer): the layer name as is, e.g. `marts`.
    Any other target (prod, CI, a developer's own BigQuery dataset): `<target dataset>_<layer>`,
    e.g. `analytics_marts`, so several people can share one GCP project.
#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- if custom_schema_name is none -%}
        {{ target.schema }}
    {%- elif target.name == 'dev' -%}
        {{ custom_schema_name | trim }}
    {%- else -%}
        {{ target.schema }}_{{ custom_schema_name | trim }}
    {%- endif -%}
{%- endmacro %}
