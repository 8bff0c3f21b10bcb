"""Pure decisions behind the sensors and schedules: which tables lag, where the CDC watermark is,
whether a daily partition is closed, which partitions late changes touched. No I/O here, so each
rule has its own unit tests."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import zoneinfo
from collections.abc import Collection, Iterable, Mapping
from dataclasses import replace

from analytics_assets.lib.feeds.base import TableLag
from analytics_assets.lib.partitions import day_bounds


def lagging_tables(
    lag: Mapping[str, TableLag],
    *,
    max_pending: int,
    max_seconds: float,
    max_bytes: int,
    quiet: Collection[str] = (),
) -> list[str]:
    """Tables whose pending changes, seconds behind or bytes behind reach a threshold.

    A sampled reading (the feed read only the first `max_bytes` of the backlog) decides as well:
    its counts are lower bounds and its oldest commits exact where found, and a backlog it could
    not see whole is at least `max_bytes` behind. Unless the table is `quiet` (`quiet_tables`)
    and the reading found nothing of it: then the WAL behind is other tables' or other
    databases' (on the dev stack, Dagster's own storage), not a backlog."""
    out = []
    for table, item in sorted(lag.items()):
        pending = item.pending_changes or 0
        behind = behind_by_bytes(item, max_bytes)
        if (
            pending >= max_pending
            or (pending > 0 and item.seconds_behind >= max_seconds)
            or (behind and not none_pending(table, item, quiet))
        ):
            out.append(table)
    return out


def behind_by_bytes(item: TableLag, max_bytes: int) -> bool:
    """At least `max_bytes` of WAL behind, or read from the window only (the backlog is larger
    than the window)."""
    return (item.position_lag_bytes or 0) >= max_bytes or item.pending_sampled


def quiet_tables(
    lag: Mapping[str, TableLag], activity_at_last_ingest: Mapping[str, str]
) -> set[str]:
    """Tables whose write counters are what they were when the last ingest was requested: no
    row of theirs has changed since (that ingest read everything committed before it started).
    Counters that moved, were reset or are unknown leave a table out."""
    return {
        t
        for t, item in lag.items()
        if item.activity is not None and activity_at_last_ingest.get(t) == item.activity
    }


def none_pending(table: str, item: TableLag, quiet: Collection[str]) -> bool:
    """A quiet table (`quiet_tables`) of which the reading found nothing: nothing is pending,
    whatever WAL lies behind it."""
    return table in quiet and item.pending_changes == 0


def settled(lag: Mapping[str, TableLag], quiet: Collection[str]) -> dict[str, TableLag]:
    """`lag` with the quiet tables (`quiet_tables`) that a bounded reading found nothing of read
    as exact: none of their rows changed since an ingest that read everything before it, so
    nothing is pending and they are 0 s behind (a reading alone cannot tell that apart from a
    change past its window)."""
    return {
        t: replace(item, pending_sampled=False)
        if item.pending_sampled and none_pending(t, item, quiet)
        else item
        for t, item in lag.items()
    }


def watermark_from_lag(lag: Mapping[str, TableLag], now: dt.datetime) -> dt.datetime | None:
    """The commit time up to which every captured table has been applied, estimated from a lag
    reading of the source (no warehouse query; `quality.warehouse.warehouse_watermark` reads it
    from the warehouse instead).

    A table with nothing pending is applied up to `now`; otherwise up to just before its oldest
    unapplied commit. None when some table's lag is unknown (the feed could not count), or when
    a sampled reading found no pending commit at all (the oldest lies past what it read). A
    sampled table with none found has its oldest pending commit after every commit the reading
    found, so the oldest found elsewhere still bounds the watermark."""
    mark, found, unseen = now, False, False
    for item in lag.values():
        if item.pending_changes is None:
            return None
        if item.pending_changes > 0 and item.oldest_commit_ts is not None:
            mark = min(mark, item.oldest_commit_ts - dt.timedelta(microseconds=1))
            found = True
        elif item.pending_sampled:
            unseen = True
    return None if unseen and not found else mark


def partition_end(key: str, timezone: str) -> dt.datetime:
    """When a daily partition's business day ends: the next midnight in the zone, in zone time."""
    end = day_bounds(dt.date.fromisoformat(key), timezone)[1]
    return end.astimezone(zoneinfo.ZoneInfo(timezone))


def partition_closed(
    key: str, watermark: dt.datetime | None, *, grace_minutes: int, timezone: str
) -> tuple[bool, str]:
    """A daily partition is closed once the watermark has passed its end plus the grace period.
    Returns the decision and a sentence saying why."""
    due = partition_end(key, timezone) + dt.timedelta(minutes=grace_minutes)
    if watermark is None:
        return False, f"partition {key} not closed: the CDC lag could not be measured"
    if watermark < due:
        return False, (
            f"partition {key} not closed: CDC watermark {watermark:%Y-%m-%d %H:%M:%S %Z} is before "
            f"its end plus {grace_minutes} min grace ({due:%Y-%m-%d %H:%M %Z})"
        )
    return True, f"partition {key} closed: CDC watermark {watermark:%Y-%m-%d %H:%M:%S %Z}"


def contiguous_ranges(keys: Iterable[str]) -> list[tuple[str, str]]:
    """Daily partition keys grouped into contiguous (first, last) ranges, in order."""
    days = sorted({dt.date.fromisoformat(k) for k in keys})
    ranges: list[tuple[str, str]] = []
    for day in days:
        if ranges and dt.date.fromisoformat(ranges[-1][1]) + dt.timedelta(days=1) == day:
            ranges[-1] = (ranges[-1][0], day.isoformat())
        else:
            ranges.append((day.isoformat(), day.isoformat()))
    return ranges


def ingest_holds_back_the_next(status: str, ingest_step_done: bool) -> bool:
    """Whether an ingest run in flight (its status name) holds back the next lag-driven request.

    One that has not finished its ingest step yet will apply what is pending now, so asking
    again would only queue a run with nothing to do. Once its ingest step is done, what is
    pending is what it will not apply: the next run is requested then and waits in the queue,
    so it starts as soon as this one ends instead of a sensor tick later."""
    return not (status == "STARTED" and ingest_step_done)


def ingest_run_key(
    lag: Mapping[str, TableLag],
    lagging: Iterable[str],
    now: dt.datetime,
    *,
    heartbeat: bool,
    max_bytes: int,
    last_failed: str | None,
) -> str:
    """The run key of a lag-driven ingest: the same reading asks for no second run.

    A reading is each table's pending count and oldest pending commit, and where it was measured
    from: every ingest moves that (its heartbeat commits even when nothing else does), so a
    reading after a completed ingest is a new one, also when its window (a backlog read in part)
    shows the same count. A table lagging by bytes alone also gets the minute, so a source whose
    position cannot move (heartbeat refused) is still asked again each minute. An idle heartbeat
    is keyed by the minute. `last_failed`: the last ingest run, if it failed, which left the
    same reading behind and is asked again."""
    by_bytes = any(behind_by_bytes(lag[t], max_bytes) for t in lagging if t in lag)
    minute = now.strftime("%Y-%m-%dT%H:%M")
    reading = (
        {
            t: [item.pending_changes, str(item.oldest_commit_ts), item.measured_from]
            + ([minute] if by_bytes else [])
            for t, item in lag.items()
        }
        if not heartbeat
        else minute
    )
    fingerprint = json.dumps([reading, last_failed], sort_keys=True)
    return "ingest-" + hashlib.sha1(fingerprint.encode()).hexdigest()[:16]
