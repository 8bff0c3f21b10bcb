"""The Kafka feed's lag and consumer-group status, from the broker's offsets: per table the records
not yet applied (offset lag) and the source time of the oldest of them, read by a separate
consumer that never commits."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from analytics_assets.lib.feeds.base import TableLag

TopicPartitionKey = tuple[str, int]


def table_lags(
    topics: Mapping[str, Sequence[TopicPartitionKey]],
    behind: Mapping[TopicPartitionKey, int],
    oldest: Mapping[TopicPartitionKey, dt.datetime],
    now: dt.datetime,
) -> dict[str, TableLag]:
    """Per table (`topics`: its partitions): records behind and the oldest pending one's time."""
    out = {}
    for t, mine in topics.items():
        pending = sum(behind[tp] for tp in mine)
        stamps = [oldest[tp] for tp in mine if tp in oldest]
        first = min(stamps) if stamps else None
        out[t] = TableLag(
            pending_changes=pending,
            position_lag_bytes=pending,
            seconds_behind=max(0.0, (now - first).total_seconds()) if first else 0.0,
            oldest_commit_ts=first,
        )
    return out


def group_status(
    group: str,
    topics: Mapping[str, tuple[str, Sequence[int]]],
    marks: Mapping[TopicPartitionKey, tuple[int, int]],
    committed: Mapping[TopicPartitionKey, int],
) -> dict[str, Any]:
    """The consumer group's view: committed offsets, high watermarks and offset lag per table
    (`topics`: its topic and partitions), the Kafka counterpart of the slot's health."""
    tables = {}
    for t, (topic, parts) in topics.items():
        mine = [(topic, p) for p in parts]
        tables[t] = {
            "topic": topic,
            "partitions": len(mine),
            "committed": {p: committed.get((topic, p)) for p in parts},
            "high_watermarks": {p: marks[(topic, p)][1] for p in parts},
            "offset_lag": sum(
                max(0, marks[tp][1] - committed.get(tp, marks[tp][0])) for tp in mine
            ),
        }
    return {
        "kind": "kafka",
        "group": group,
        "reachable": True,
        "exists": bool(committed),
        "missing_topics": [topic for topic, parts in topics.values() if not parts],
        "total_offset_lag": sum(v["offset_lag"] for v in tables.values()),
        "tables": tables,
    }


def oldest_record_times(
    peek: Consumer, starts: Mapping[TopicPartitionKey, int], timeout: float
) -> dict[TopicPartitionKey, dt.datetime]:
    """The `source.ts_ms` (else the record timestamp) of the record at each start offset, read
    with `peek` (a consumer that never commits) within `timeout` seconds."""
    peek.assign([TopicPartition(t, p, o) for (t, p), o in starts.items()])
    out: dict[TopicPartitionKey, dt.datetime] = {}
    deadline = time.monotonic() + timeout
    try:
        while len(out) < len(starts) and time.monotonic() < deadline:
            for m in peek.consume(len(starts), timeout=0.2):
                tp = (m.topic(), m.partition())
                if m.error() is not None or tp in out:
                    continue
                out[tp] = _record_time(m)
    finally:
        peek.unassign()
    return out


def _record_time(m) -> dt.datetime:
    value = m.value()
    if value:
        try:
            obj = json.loads(value)
            if isinstance(obj, dict) and set(obj) == {"schema", "payload"}:
                obj = obj["payload"] or {}
            ts = (obj.get("source") or {}).get("ts_ms") or obj.get("ts_ms")
            if ts is not None:
                return dt.datetime.fromtimestamp(ts / 1000, dt.UTC)
        except (ValueError, AttributeError):
            pass
    _, ts = m.timestamp()
    return dt.datetime.fromtimestamp(ts / 1000, dt.UTC)


__all__ = ["group_status", "oldest_record_times", "table_lags"]
