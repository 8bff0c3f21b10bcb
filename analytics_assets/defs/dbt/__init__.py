"""The dbt project as assets: staging, intermediate and the daily-partitioned marts."""

from __future__ import annotations

import dagster as dg


def definitions() -> dg.Definitions:
    """This domain's entry point, merged by `analytics_assets/definitions.py`. Imports inside, so
    importing one module of the domain does not load (or circle through) the whole domain."""
    from analytics_assets.defs.dbt.assets import build_dbt_assets
    from analytics_assets.defs.dbt.project import dbt_cli_resource

    return dg.Definitions(assets=build_dbt_assets(), resources={"dbt": dbt_cli_resource()})
