"""Warehouse adapters: one contract (`base`), DuckDB in dev (`duckdb`), BigQuery (`bigquery`), and
the raw layer's relation names (`names`, free of Arrow/DuckDB imports for the code location).
Import from the modules themselves."""
