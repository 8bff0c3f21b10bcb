{{ config(**history_config('order_items', ['id'])) }}

-- Every version of every order_items row (macros/history.sql).

{{ history_versions('order_items', ['id']) }}
