"""The code location: every domain's entry point merged into one Definitions.

Each folder under `defs/` exposes `definitions()` in its `__init__.py` (its assets, checks,
sensors, schedules and resources); this module merges them and then applies the global policies,
as dagster-open-platform does.
"""

from __future__ import annotations

import dagster as dg

from analytics_assets.defs import automation, cdc, dbt, notify, quality, sources
from analytics_assets.defs.automation.cadence import apply_cadence
from analytics_assets.defs.freshness import apply_freshness
from analytics_assets.settings import get_settings

DOMAINS = (sources, cdc, dbt, notify, automation, quality)


def build_definitions() -> dg.Definitions:
    # DuckDB allows one writer process: in dev the steps of a run share one process.
    executor = dg.multiprocess_executor if get_settings().is_prod else dg.in_process_executor
    defs = dg.Definitions.merge(
        dg.Definitions(executor=executor), *(domain.definitions() for domain in DOMAINS)
    )
    # Global policies last, over every domain's assets (as dagster-open-platform does).
    return apply_cadence(apply_freshness(defs))


defs = build_definitions()
