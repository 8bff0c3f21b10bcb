{#
    Fails for each combination of `combination_of_columns` that occurs more than once: the
    uniqueness half of a composite primary key (pair with not_null on each column).
#}
{% test unique_combination_of_columns(model, combination_of_columns) %}

{%- set columns_csv = combination_of_columns | join(', ') %}

select
    {{ columns_csv }},
    count(*) as row_count
from {{ model }}
group by {{ columns_csv }}
having count(*) > 1

{% endtest %}
