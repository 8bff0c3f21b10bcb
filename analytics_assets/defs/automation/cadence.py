"""Which models the lag-driven runs build, and when the other unpartitioned models refresh.

The lag sensor's runs carry the raw tables and the fast path only: the models tagged `realtime`
in dbt (`revenue_minutely`) and their upstream models (`stg_app__orders`), so a run cycle costs
what near-real-time needs. Every other unpartitioned model (the rest of staging, intermediate,
`fct_orders`, `dim_customers`, `history/<table>`) refreshes on a declared cadence, an `on_cron` automation
condition every MODELS_REFRESH_MINUTES that waits for its parents to have updated since the
tick (the UI shows it on each asset, the automation sensor requests it), and that builds a model
never built yet (a new warehouse) as soon as its parents exist. The daily marts keep their own
sensors; the runs that close a day rebuild every unpartitioned model first (`CLOSE_RUN`), so a
closed day never reads an `fct_orders` older than its watermark and every view its tests read
exists.
"""

from __future__ import annotations

import dagster as dg

from analytics_assets.defs.dbt.selection import REALTIME_TAG
from analytics_assets.settings import get_settings

DAILY = dg.AssetSelection.tag("daily", "")
MODELS = dg.AssetSelection.groups("staging", "intermediate", "marts", "history") - DAILY
FAST_PATH = dg.AssetSelection.tag(REALTIME_TAG, "").upstream() & MODELS
CADENCE_MODELS = MODELS - FAST_PATH
CLOSE_RUN = DAILY | MODELS


def cadence_condition(minutes: int) -> dg.AutomationCondition:
    """Every `minutes` (dividing an hour), once every parent has updated since the tick; and
    once at first, when the model was never built and its parents exist."""
    cron = "0 * * * *" if minutes == 60 else f"*/{minutes} * * * *"
    # Dagster's on_missing() skips what was missing before the condition first ran (a new
    # warehouse); a run that failed is not asked again until the next tick
    never_built = (
        dg.AutomationCondition.missing()
        & ~dg.AutomationCondition.any_deps_missing()
        & ~dg.AutomationCondition.in_progress()
        & ~dg.AutomationCondition.execution_failed()
    )
    return (dg.AutomationCondition.on_cron(cron) | never_built).with_label(
        f"every {minutes} min (and when missing)"
    )


def apply_cadence(defs: dg.Definitions) -> dg.Definitions:
    """The cadence condition on every unpartitioned model off the fast path."""
    condition = cadence_condition(get_settings().dbt.models_refresh_minutes)
    return defs.permissive_map_resolved_asset_specs(
        func=lambda spec: spec.replace_attributes(automation_condition=condition),
        selection=CADENCE_MODELS,
    )
