"""The source app database: `app_db/<table>`, observed, not copied (`assets.py`, `observe.py`)."""

from __future__ import annotations

import dagster as dg


def definitions() -> dg.Definitions:
    """This domain's entry point, merged by `analytics_assets/definitions.py`. Imports inside, so
    importing one module of the domain does not load (or circle through) the whole domain."""
    from analytics_assets.defs.sources.assets import build_source_assets

    return dg.Definitions(assets=build_source_assets())
