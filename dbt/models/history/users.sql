{{ config(**history_config('users', ['id'])) }}

-- Every version of every users row (macros/history.sql).

{{ history_versions('users', ['id']) }}
