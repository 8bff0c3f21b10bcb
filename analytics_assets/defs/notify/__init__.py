"""Notifications: run failures, ERROR checks, freshness failures and the daily summary."""

from __future__ import annotations

import dagster as dg


def definitions() -> dg.Definitions:
    """This domain's entry point, merged by `analytics_assets/definitions.py`. Imports inside, so
    importing one module of the domain does not load (or circle through) the whole domain."""
    from analytics_assets.defs.notify.sensors import build_notify_defs

    return build_notify_defs()
