"""The business day: daily partitions, the business date of an instant, and the dbt arguments that
follow from a partition time window.

A business date is a calendar date in PARTITION_TIMEZONE; its day runs from local midnight to the
next (23 or 25 hours on a daylight-saving change). Everything that names a day goes through the
helpers here or through the dbt macro `business_date` (dbt/macros/business_date.sql), which the
Dagster assets hand the same zone: the Dagster partitions, the marts' dates, the late-data dates
the warehouses report, the partition-close rule, reconciliation and the volume check.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from collections.abc import Iterable
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from analytics_assets.settings import get_settings

if TYPE_CHECKING:
    import dagster as dg

# The dbt var that carries PARTITION_TIMEZONE (dbt_project.yml has the same default, UTC).
DBT_TIMEZONE_VAR = "partition_timezone"

# Every UTC offset in use is a multiple of 15 minutes, so no 15-minute bucket of epoch time
# straddles a local midnight: a bucket's start names the business date of all its instants.
BUCKET_US = 15 * 60 * 1_000_000


@functools.cache
def daily_partitions() -> dg.DailyPartitionsDefinition:
    import dagster as dg  # here: the CDC command line imports this module without Dagster

    s = get_settings()
    return dg.DailyPartitionsDefinition(
        start_date=s.partitions.start, timezone=s.partitions.timezone
    )


def _zone(timezone: str | None) -> ZoneInfo:
    return ZoneInfo(timezone or get_settings().partitions.timezone)


def business_date(moment: dt.datetime, timezone: str | None = None) -> dt.date:
    """The business date of an instant (an aware datetime); `timezone` defaults to the setting."""
    if moment.tzinfo is None:
        raise ValueError(f"{moment} has no time zone: a business date needs an instant")
    return moment.astimezone(_zone(timezone)).date()


def day_bounds(day: dt.date, timezone: str | None = None) -> tuple[dt.datetime, dt.datetime]:
    """The instants [start, end) of a business date, in UTC."""
    zone = _zone(timezone)
    start = dt.datetime.combine(day, dt.time(), tzinfo=zone)
    end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=zone)
    return start.astimezone(dt.UTC), end.astimezone(dt.UTC)


def last_ended_day(now: dt.datetime | None = None, timezone: str | None = None) -> dt.date:
    """The newest business date whose day has ended at `now` (default: the clock): yesterday in
    the zone. A daily partition exists, and can close, only from then on."""
    now = now or dt.datetime.now(dt.UTC)
    return business_date(now, timezone) - dt.timedelta(days=1)


def business_dates(epoch_us: Iterable[int], timezone: str | None = None) -> set[dt.date]:
    """The business dates of many instants given as microseconds since the epoch (UTC), with
    Arrow's vectorised zone conversion; the warehouses pass one instant per 15-minute bucket."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    values = np.fromiter(epoch_us, np.int64) if not isinstance(epoch_us, np.ndarray) else epoch_us
    if len(values) == 0:
        return set()
    name = timezone or get_settings().partitions.timezone
    try:
        moments = pa.array(values.astype(np.int64, copy=False), pa.timestamp("us", tz=name))
        local = pc.cast(pc.local_timestamp(moments), pa.date32())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):  # a zone Arrow's database lacks
        epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
        return {
            business_date(epoch + dt.timedelta(microseconds=int(v)), name)
            for v in np.unique(values)
        }
    return set(pc.unique(local).to_pylist())


def dbt_vars_for_window(
    start: dt.datetime, end: dt.datetime, timezone: str | None = None
) -> dict[str, str]:
    """`min_date` inclusive, `max_date` exclusive: the business dates (in the zone) the window's
    instants start and end on, as ISO dates. What the incremental marts read."""
    if end <= start:
        raise ValueError(f"empty partition window {start:%Y-%m-%d}..{end:%Y-%m-%d}")
    return {
        "min_date": business_date(start, timezone).isoformat(),
        "max_date": business_date(end, timezone).isoformat(),
    }


def dbt_zone_vars(timezone: str | None = None) -> dict[str, str]:
    """The var every dbt invocation gets (parse included: dbt re-parses the whole project when
    an invocation's vars differ from the parse it starts from)."""
    return {DBT_TIMEZONE_VAR: timezone or get_settings().partitions.timezone}


def dbt_build_args(
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
    *,
    timezone: str | None = None,
) -> list[str]:
    """The `dbt build` argument list: the business day's zone (default: PARTITION_TIMEZONE), and
    for a partition time window its dates (pure apart from that default; unit-tested)."""
    dbt_vars = dbt_zone_vars(timezone)
    if start is not None and end is not None:
        dbt_vars.update(dbt_vars_for_window(start, end, dbt_vars[DBT_TIMEZONE_VAR]))
    return ["build", "--vars", json.dumps(dbt_vars, sort_keys=True)]
