{{ config(**history_config('products', ['id'])) }}

-- Every version of every products row (macros/history.sql).

{{ history_versions('products', ['id']) }}
