{{ config(**history_config('orders', ['id'])) }}

-- Every version of every orders row (macros/history.sql).

{{ history_versions('orders', ['id']) }}
