"""Slot health: a replication slot that nobody reads keeps WAL until Postgres gives up on it
(`max_slot_wal_keep_size`) and the changes in between are gone. Catch it before that.

From `SlotFeed.slot_status()` (pg_replication_slots) and the warehouse's `raw._cdc_state`:

- the slot exists and its `wal_status` is not `lost` (WAL already removed: changes lost) or
  `unreserved` (WAL past the limit, removed at the next checkpoint): ERROR;
- retained WAL as a fraction of `max_slot_wal_keep_size` (retained + `safe_wal_size`, which
  Postgres reports as what may still be written before the slot is at risk): WARN / ERROR
  beyond the configured fractions; an unlimited size (-1) reports the bytes only;
- heartbeat age: how long ago CDC last read the slot and stored a table's position (every ingest
  writes a heartbeat message, so an idle source still moves it): WARN / ERROR beyond the
  configured minutes. The slot's own `active` flag says nothing here: the feed peeks in short
  sessions, so the slot is inactive between ingests by design.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from analytics_assets.defs.quality.verdict import Verdict
from analytics_assets.settings import QualitySettings

LOST_STATES = ("lost", "unreserved")


def wal_fraction(status: Mapping[str, Any]) -> float | None:
    retained, safe = status.get("retained_bytes"), status.get("safe_wal_size")
    if retained is None or safe is None:
        return None
    budget = int(retained) + max(int(safe), 0)
    return 1.0 if budget <= 0 else int(retained) / budget


def slot_findings(status: Mapping[str, Any], q: QualitySettings, verdict: Verdict) -> None:
    slot = status.get("slot")
    if not status.get("exists"):
        verdict.error(
            f"replication slot {slot} does not exist: changes since the last ingest are not "
            "being kept; the next ingest re-snapshots"
        )
        return
    wal_status = status.get("wal_status")
    if wal_status == "lost":
        verdict.error(
            f"slot {slot} is lost: Postgres removed WAL it still needed "
            "(max_slot_wal_keep_size exceeded); changes were lost, re-snapshot"
        )
    elif wal_status == "unreserved":
        verdict.error(
            f"slot {slot} is unreserved: the WAL it needs is past max_slot_wal_keep_size and goes "
            "at the next checkpoint; ingest now"
        )
    fraction = wal_fraction(status)
    if fraction is not None and wal_status not in LOST_STATES:
        retained = int(status["retained_bytes"])
        text = (
            f"slot {slot} retains {retained / 2**20:.1f} MiB of WAL, {fraction:.0%} of "
            "max_slot_wal_keep_size"
        )
        if fraction >= q.slot_wal_error_fraction:
            verdict.error(f"{text} (error from {q.slot_wal_error_fraction:.0%})")
        elif fraction >= q.slot_wal_warn_fraction:
            verdict.warn(f"{text} (warn from {q.slot_wal_warn_fraction:.0%})")


def heartbeat_findings(
    table: str,
    confirmed_at: dt.datetime | None,
    now: dt.datetime,
    q: QualitySettings,
    verdict: Verdict,
) -> float | None:
    if confirmed_at is None:
        verdict.warn(f"CDC has never stored a position for {table}: no heartbeat yet")
        return None
    age_minutes = (now - confirmed_at).total_seconds() / 60
    text = f"CDC last read the slot for {table} {age_minutes:.0f} min ago"
    if age_minutes >= q.heartbeat_error_minutes:
        verdict.error(f"{text} (error from {q.heartbeat_error_minutes:.0f} min)")
    elif age_minutes >= q.heartbeat_warn_minutes:
        verdict.warn(f"{text} (warn from {q.heartbeat_warn_minutes:.0f} min)")
    return age_minutes


def verdict(
    table: str,
    status: Mapping[str, Any],
    confirmed_at: dt.datetime | None,
    q: QualitySettings,
    now: dt.datetime | None = None,
) -> Verdict:
    now = now or dt.datetime.now(dt.UTC)
    v = Verdict(ok_message=f"slot {status.get('slot')} is healthy and read recently")
    slot_findings(status, q, v)
    age = heartbeat_findings(table, confirmed_at, now, q, v)
    fraction = wal_fraction(status)
    v.metadata = {
        "slot": status.get("slot"),
        "exists": bool(status.get("exists")),
        "wal_status": status.get("wal_status"),
        "active": status.get("active"),
        "retained_wal_bytes": status.get("retained_bytes"),
        "safe_wal_size_bytes": status.get("safe_wal_size"),
        "retained_wal_fraction": round(fraction, 4) if fraction is not None else None,
        "max_slot_wal_keep_size": "unlimited"
        if status.get("exists")
        and status.get("safe_wal_size") is None
        and status.get("wal_status") not in LOST_STATES
        else None,
        "confirmed_flush_lsn": status.get("confirmed_flush_lsn"),
        "heartbeat_age_minutes": round(age, 2) if age is not None else None,
    }
    return v
