"""`app_db/<table>`: the application's tables, observed (row count, newest change) not copied."""

from __future__ import annotations

import warnings

import dagster as dg
from psycopg2 import sql

from analytics_assets.lib.pg import connect
from analytics_assets.settings import get_settings

DESCRIPTIONS = {
    "users": "People with an account in the app (source of truth for customers).",
    "products": "The catalogue of things the app sells.",
    "orders": "Orders placed in the app, one row per order, moving pending → paid → completed.",
    "order_items": "Lines of each order: product, quantity and unit price.",
}


def _observe(table: str):
    def observe(context) -> dg.ObserveResult:
        with connect() as conn, conn.cursor() as cur:
            cur.execute(
                sql.SQL("select count(*), max(updated_at) from {}").format(sql.Identifier(table))
            )
            count, newest = cur.fetchone()
        conn.close()
        return dg.ObserveResult(
            metadata={
                "row_count": dg.MetadataValue.int(count),
                "newest_updated_at": dg.MetadataValue.text(newest.isoformat() if newest else ""),
            },
            data_version=dg.DataVersion(f"{count}:{newest.isoformat() if newest else ''}"),
        )

    return observe


def build_source_assets() -> list[dg.AssetsDefinition]:
    assets = []
    for table in get_settings().captured_tables:
        fn = _observe(table)
        fn.__name__ = f"app_db_{table}"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", dg.BetaWarning)
            decorator = dg.observable_source_asset(
                key=["app_db", table],
                group_name="app_db",
                description=DESCRIPTIONS.get(table, f"Source table {table} in the app database."),
                kinds={"postgres"},
            )
        assets.append(decorator(fn))
    return assets
