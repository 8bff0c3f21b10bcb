"""`app_db/<table>`: the application's tables, observed (row count, newest change, CDC lag) not
copied. The observations come from the lag sensor's every tick and from every ingest
(`observe.py`), so the assets are plain external asset specs: nothing to launch."""

from __future__ import annotations

import dagster as dg

from analytics_assets.defs.sources.observe import source_key
from analytics_assets.settings import get_settings

DESCRIPTIONS = {
    "users": "People with an account in the app (source of truth for customers).",
    "products": "The catalogue of things the app sells.",
    "orders": "Orders placed in the app, one row per order, moving pending → paid → completed.",
    "order_items": "Lines of each order: product, quantity and unit price.",
}
OBSERVED = (
    " Observed every lag-sensor tick and after every ingest: row count (Postgres statistics "
    "estimate), newest updated_at, CDC lag."
)


def build_source_assets() -> list[dg.AssetSpec]:
    return [
        dg.AssetSpec(
            source_key(table),
            group_name="app_db",
            description=DESCRIPTIONS.get(table, f"Source table {table} in the app database.")
            + OBSERVED,
            kinds={"postgres"},
        )
        for table in get_settings().source.tables
    ]
