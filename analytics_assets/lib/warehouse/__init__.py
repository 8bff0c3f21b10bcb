"""Warehouse adapters: the apply algorithm and its contract (`base`), every statement it runs
written once (`statements`, DuckDB SQL), the executors DuckDB in dev (`duckdb`) and BigQuery
(`bigquery`, the statements transpiled by sqlglot), and the raw layer's relation names (`names`,
free of Arrow/DuckDB imports for the code location). Import from the modules themselves."""
