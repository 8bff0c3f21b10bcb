"""Change data capture: `raw/<table>` and `raw/<table>_changes`, applied by one ingest asset."""

from __future__ import annotations

import dagster as dg


def definitions() -> dg.Definitions:
    """This domain's entry point, merged by `analytics_assets/definitions.py`. Imports inside, so
    importing one module of the domain does not load (or circle through) the whole domain."""
    from analytics_assets.defs.cdc.assets import build_cdc_assets

    return dg.Definitions(assets=build_cdc_assets())
