"""Thresholds of the Python checks, from the environment, read when a check runs (never at import).

| variable | default | meaning |
|---|---|---|
| QUALITY_VOLUME_BAND | 0.5 | volume anomaly WARNs when a day's order count or revenue is more than this fraction away from the trailing 7-day median |
| QUALITY_VOLUME_MIN_DAYS | 3 | fewer known days in the trailing window: no verdict (passes, says so) |
| QUALITY_VOLUME_SETTLE_DAYS | 2 | a day is judged only once the CDC watermark has passed its end plus PARTITION_GRACE_MINUTES plus this many days: its orders keep completing for days after it ends, so a younger day is not yet comparable (passes, says so) |
| QUALITY_RECONCILE_MARGIN_SECONDS | 300 | source rows changed up to this long before the CDC watermark count as in flux too (a transaction's `updated_at` is its start, its commit comes later) |
| QUALITY_SLOT_WAL_WARN_FRACTION | 0.5 | WARN when the slot retains this fraction of `max_slot_wal_keep_size` |
| QUALITY_SLOT_WAL_ERROR_FRACTION | 0.8 | ERROR (blocks the marts) from this fraction on |
| QUALITY_SLOT_HEARTBEAT_WARN_MINUTES | 60 | WARN when CDC last confirmed a table's position this long ago |
| QUALITY_SLOT_HEARTBEAT_ERROR_MINUTES | 1440 | ERROR from this age on |
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from analytics_assets.lib.errors import ConfigError


def _number(name: str, default: float, *, low: float, high: float | None = None) -> float:
    raw = os.environ.get(name) or str(default)
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number.") from None
    if value < low or (high is not None and value > high):
        bounds = f">= {low}" if high is None else f"between {low} and {high}"
        raise ConfigError(f"{name}={raw!r} must be {bounds}.")
    return value


@dataclass(frozen=True)
class QualitySettings:
    volume_band: float
    volume_min_days: int
    volume_settle_days: float
    reconcile_margin_seconds: float
    slot_wal_warn_fraction: float
    slot_wal_error_fraction: float
    heartbeat_warn_minutes: float
    heartbeat_error_minutes: float


def quality_settings() -> QualitySettings:
    s = QualitySettings(
        volume_band=_number("QUALITY_VOLUME_BAND", 0.5, low=0.0),
        volume_min_days=int(_number("QUALITY_VOLUME_MIN_DAYS", 3, low=1, high=7)),
        volume_settle_days=_number("QUALITY_VOLUME_SETTLE_DAYS", 2, low=0.0, high=30.0),
        reconcile_margin_seconds=_number("QUALITY_RECONCILE_MARGIN_SECONDS", 300, low=0.0),
        slot_wal_warn_fraction=_number("QUALITY_SLOT_WAL_WARN_FRACTION", 0.5, low=0.0, high=1.0),
        slot_wal_error_fraction=_number("QUALITY_SLOT_WAL_ERROR_FRACTION", 0.8, low=0.0, high=1.0),
        heartbeat_warn_minutes=_number("QUALITY_SLOT_HEARTBEAT_WARN_MINUTES", 60, low=0.0),
        heartbeat_error_minutes=_number("QUALITY_SLOT_HEARTBEAT_ERROR_MINUTES", 1440, low=0.0),
    )
    if s.slot_wal_warn_fraction > s.slot_wal_error_fraction:
        raise ConfigError(
            "QUALITY_SLOT_WAL_WARN_FRACTION must not be above QUALITY_SLOT_WAL_ERROR_FRACTION."
        )
    if s.heartbeat_warn_minutes > s.heartbeat_error_minutes:
        raise ConfigError(
            "QUALITY_SLOT_HEARTBEAT_WARN_MINUTES must not be above "
            "QUALITY_SLOT_HEARTBEAT_ERROR_MINUTES."
        )
    return s
