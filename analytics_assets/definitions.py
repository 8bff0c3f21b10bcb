"""The code location: every domain's assets, checks, sensors and schedules in one Definitions."""

from __future__ import annotations

import dagster as dg

from analytics_assets.defs.automation.cadence import apply_cadence
from analytics_assets.defs.automation.sensors import build_automation_defs
from analytics_assets.defs.cdc.assets import build_cdc_assets
from analytics_assets.defs.dbt.assets import build_dbt_assets
from analytics_assets.defs.dbt.project import dbt_cli_resource
from analytics_assets.defs.freshness import apply_freshness
from analytics_assets.defs.notify.sensors import build_notify_defs
from analytics_assets.defs.quality.checks import build_quality_defs
from analytics_assets.defs.sources.assets import build_source_assets
from analytics_assets.settings import get_settings


def build_definitions() -> dg.Definitions:
    settings = get_settings()
    # DuckDB allows one writer process: in dev the steps of a run share one process.
    executor = dg.multiprocess_executor if settings.is_prod else dg.in_process_executor
    defs = dg.Definitions.merge(
        dg.Definitions(
            assets=[*build_source_assets(), *build_cdc_assets(), *build_dbt_assets()],
            resources={"dbt": dbt_cli_resource()},
            executor=executor,
        ),
        build_notify_defs(),
        build_automation_defs(),
        build_quality_defs(),
    )
    # Global policies last, over every domain's assets (as dagster-open-platform does).
    return apply_cadence(apply_freshness(defs))


defs = build_definitions()
