"""Warehouse adapters: one contract (`base`), DuckDB in dev (`duckdb`), BigQuery (bigquery.py)."""

from analytics_assets.lib.warehouse.base import (
    DEFAULT_BUSINESS_DATE_COLUMNS,
    ApplyResult,
    TableApplyResult,
    Warehouse,
)

__all__ = ["DEFAULT_BUSINESS_DATE_COLUMNS", "ApplyResult", "TableApplyResult", "Warehouse"]
