"""Which models the lag-driven runs build, and when the other unpartitioned models refresh.

The lag sensor's runs carry the raw tables and the fast path only: the models tagged `realtime`
in dbt (`revenue_minutely`) and their upstream models (`stg_app__orders`), so a run cycle costs
what near-real-time needs. Every other unpartitioned model (the rest of staging, intermediate,
`fct_orders`, `dim_customers`) refreshes on a declared cadence, an `on_cron` automation
condition every MODELS_REFRESH_MINUTES that waits for its parents to have updated since the
tick (the UI shows it on each asset, the automation sensor requests it). The daily marts keep
their own sensors; the runs that close a day also rebuild the unpartitioned models the marts
read (`DAILY_UPSTREAM`), so a closed day never reads a `fct_orders` older than its watermark.
"""

from __future__ import annotations

import dagster as dg

from analytics_assets.settings import get_settings

DAILY = dg.AssetSelection.tag("daily", "")
MODELS = dg.AssetSelection.groups("staging", "intermediate", "marts") - DAILY
FAST_PATH = dg.AssetSelection.tag("realtime", "").upstream() & MODELS
CADENCE_MODELS = MODELS - FAST_PATH
DAILY_UPSTREAM = DAILY.upstream() & MODELS


def cadence_condition(minutes: int) -> dg.AutomationCondition:
    """Every `minutes` (dividing an hour), once every parent has updated since the tick."""
    cron = "0 * * * *" if minutes == 60 else f"*/{minutes} * * * *"
    return dg.AutomationCondition.on_cron(cron).with_label(f"every {minutes} min")


def apply_cadence(defs: dg.Definitions) -> dg.Definitions:
    """The cadence condition on every unpartitioned model off the fast path."""
    condition = cadence_condition(get_settings().models_refresh_minutes)
    return defs.permissive_map_resolved_asset_specs(
        func=lambda spec: spec.replace_attributes(automation_condition=condition),
        selection=CADENCE_MODELS,
    )
