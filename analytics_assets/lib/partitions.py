"""Daily partitions and the dbt arguments that follow from a partition time window."""

from __future__ import annotations

import datetime as dt
import functools
import json

import dagster as dg

from analytics_assets.settings import get_settings


@functools.cache
def daily_partitions() -> dg.DailyPartitionsDefinition:
    s = get_settings()
    return dg.DailyPartitionsDefinition(start_date=s.partition_start, timezone=s.timezone)


def dbt_vars_for_window(start: dt.datetime, end: dt.datetime) -> dict[str, str]:
    """`min_date` inclusive, `max_date` exclusive, as ISO dates: what the incremental marts read."""
    if end <= start:
        raise ValueError(f"empty partition window {start:%Y-%m-%d}..{end:%Y-%m-%d}")
    return {"min_date": start.date().isoformat(), "max_date": end.date().isoformat()}


def dbt_build_args(start: dt.datetime | None = None, end: dt.datetime | None = None) -> list[str]:
    """The `dbt build` argument list for an optional partition time window (pure, unit-tested)."""
    args = ["build"]
    if start is not None and end is not None:
        args += ["--vars", json.dumps(dbt_vars_for_window(start, end), sort_keys=True)]
    return args
