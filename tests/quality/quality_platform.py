"""The platform a quality test module runs against: its own source database with history, DuckDB
warehouse, slot and Dagster instance (see conftest.py for the module-scoped fixture)."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import duckdb
import psycopg2
from graph_runs import load_history, platform_environment, scratch_source_database

END = dt.datetime(2026, 3, 10, tzinfo=dt.UTC)
DAY = "2026-03-07"


@dataclass
class Platform:
    settings: object
    defs: dg.Definitions
    instance: dg.DagsterInstance

    @property
    def source_url(self) -> str:
        return self.settings.source.url

    def source(self, sql: str, params=None) -> list[tuple]:
        conn = psycopg2.connect(self.source_url)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(sql, params)
                return cur.fetchall() if cur.description else []
        finally:
            conn.close()

    def warehouse(self, sql: str, params=None) -> list[tuple]:
        """One statement on the warehouse, connection closed at once (a run needs the file)."""
        con = duckdb.connect(str(self.settings.warehouse.path))
        try:
            cur = con.execute(sql, params or [])
            return cur.fetchall() if cur.description else []
        finally:
            con.close()

    def daily_revenue(self, day: str = DAY) -> tuple | None:
        rows = self.warehouse(
            "select order_count, unique_customers, total_revenue from marts.daily_revenue "
            "where revenue_date = ?",
            [day],
        )
        return rows[0] if rows else None


@contextlib.contextmanager
def build_platform(admin_url: str, workdir: Path) -> Iterator[Platform]:
    """History of 10 days (60 orders a day) ending 2026-03-10 in a fresh source database."""
    with scratch_source_database(admin_url) as url:
        load_history(url, days=10, orders_per_day=60, seed=21, end=END)
        with platform_environment(url, workdir, DAGSTER_HOME=str(workdir)) as settings:
            from analytics_assets.definitions import build_definitions

            instance = dg.DagsterInstance.ephemeral()
            try:
                yield Platform(settings, build_definitions(), instance)
            finally:
                instance.dispose()
