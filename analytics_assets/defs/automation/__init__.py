"""What runs on its own: the CDC lag, late-data and partition-close sensors, the backstop."""

from __future__ import annotations

import dagster as dg


def definitions() -> dg.Definitions:
    """This domain's entry point, merged by `analytics_assets/definitions.py`. Imports inside, so
    importing one module of the domain does not load (or circle through) the whole domain."""
    from analytics_assets.defs.automation.sensors import build_automation_defs

    return build_automation_defs()
