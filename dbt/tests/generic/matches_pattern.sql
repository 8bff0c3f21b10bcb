{#
    Fails for each non-null `column_name` that does not match the RE2 `pattern` (anchor it with
    ^...$ to match the whole value). Works on DuckDB and BigQuery through `regexp_matches`.
#}
{% test matches_pattern(model, column_name, pattern) %}

select {{ column_name }} as failing_value
from {{ model }}
where {{ column_name }} is not null
    and not ({{ regexp_matches(column_name, pattern) }})

{% endtest %}
