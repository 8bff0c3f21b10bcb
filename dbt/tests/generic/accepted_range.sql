{#
    Fails for each row whose `column_name` lies outside [min_value, max_value] (or the open
    interval when inclusive=false). Either bound may be omitted. Nulls are not checked; pair with
    not_null. Same arguments as dbt_utils.accepted_range.
#}
{% test accepted_range(model, column_name, min_value=none, max_value=none, inclusive=true) %}

    {%- if min_value is none and max_value is none -%}
        {{ exceptions.raise_compiler_error("accepted_range needs min_value, max_value or both") }}
    {%- endif -%}

with

validation as (

    select {{ column_name }} as value_to_check
    from {{ model }}
    where {{ column_name }} is not null

),

validation_errors as (

    select *
    from validation
    where
        1 = 2
        {%- if min_value is not none %}
        or not (value_to_check {{ '>=' if inclusive else '>' }} {{ min_value }})
        {%- endif %}
        {%- if max_value is not none %}
        or not (value_to_check {{ '<=' if inclusive else '<' }} {{ max_value }})
        {%- endif %}

)

select * from validation_errors

{% endtest %}
