{#
    Retention of the change log and the history (docs/production.md, "History and retention"):
    CHANGE_LOG_RETENTION_DAYS (default 30) and HISTORY_RETENTION_DAYS (default 0 = forever),
    validated by analytics_assets/settings.py for every command. Post-hooks of history/<table>
    (macros/history.sql), so a change is pruned only after the history has read it.
#}

{% macro retention_days(value, name) -%}
    {%- set text = value | string | trim -%}
    {%- if not modules.re.match('^[0-9]+$', text) -%}
        {{ exceptions.raise_compiler_error(name ~ " must be a whole number of days; got '" ~ text ~ "'") }}
    {%- endif -%}
    {{ return(text | int) }}
{%- endmacro %}


{# The instant `days` days before now, as a timestamp with zone on both warehouses. #}
{% macro days_ago(days) -%}
    {{ return(adapter.dispatch('days_ago')(days)) }}
{%- endmacro %}

{% macro default__days_ago(days) -%}
    timestamp_sub(current_timestamp(), interval {{ days }} day)
{%- endmacro %}

{% macro duckdb__days_ago(days) -%}
    (current_timestamp - interval {{ days }} day)
{%- endmacro %}


{# Post-hook: drop history versions that ended more than HISTORY_RETENTION_DAYS ago. #}
{% macro prune_history() -%}
    {%- set days = retention_days(env_var('HISTORY_RETENTION_DAYS', '0'), 'HISTORY_RETENTION_DAYS') -%}
    {%- if days > 0 -%}
        delete from {{ this }} where valid_to < {{ days_ago(days) }}
    {%- endif -%}
{%- endmacro %}


{#
    Post-hook: drop changes committed more than CHANGE_LOG_RETENTION_DAYS ago that the history
    has read (positions before the newest it holds), so an unread change is never lost.
#}
{% macro prune_change_log(table) -%}
    {%- set days = retention_days(
        env_var('CHANGE_LOG_RETENTION_DAYS', '30'), 'CHANGE_LOG_RETENTION_DAYS') -%}
    {%- if days > 0 -%}
        delete from {{ source('app_changes', table ~ '_changes') }}
        where _commit_ts < {{ days_ago(days) }}
            and _lsn < (select max(valid_from_lsn) from {{ this }})
    {%- endif -%}
{%- endmacro %}
