"""The Kafka feed's client configuration (what exactly-once ingest requires of the consumer) and
its per-table checkpoint format (the next offset of each partition, as JSON)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from confluent_kafka import KafkaError

from analytics_assets.lib.errors import FeedError

REQUIRED = {
    "enable.auto.commit": "false",
    "enable.auto.offset.store": "false",
    "isolation.level": "read_committed",
    "auto.offset.reset": "earliest",
}
# Properties only the consumer understands (the admin client rejects them).
CONSUMER_ONLY = {
    "group.id",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "isolation.level",
    "auto.offset.reset",
    "max.poll.interval.ms",
    "session.timeout.ms",
    "enable.partition.eof",
    "fetch.wait.max.ms",
    "fetch.min.bytes",
    "fetch.max.bytes",
    "max.partition.fetch.bytes",
    "queued.max.messages.kbytes",
    "queued.min.messages",
    "heartbeat.interval.ms",
    "group.instance.id",
    "partition.assignment.strategy",
    "auto.commit.interval.ms",
    "check.crcs",
}


# Errors librdkafka reports while it cannot reach the broker (it keeps reconnecting).
BROKER_DOWN = frozenset(
    {KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN, KafkaError._TIMED_OUT}
)


def consumer_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The consumer configuration: `config` + the settings exactly-once depends on."""
    out = {k: v for k, v in config.items()}
    for name in ("bootstrap.servers", "group.id"):
        if not out.get(name):
            raise FeedError(
                f"the Kafka feed needs {name!r} (KAFKA_{name.upper().replace('.', '_')})"
            )
    for name, value in REQUIRED.items():
        given = out.get(name)
        if given is not None and str(given).lower() != value:
            raise FeedError(
                f"Kafka property {name}={given!r} breaks exactly-once ingest: it must be {value} "
                f"(KAFKA_{name.upper().replace('.', '_')})"
            )
        out[name] = value
    out["enable.partition.eof"] = True
    return out


def parse_checkpoint(text: str | None) -> dict[int, int]:
    if not text:
        return {}
    try:
        data = json.loads(text)
    except ValueError:
        raise FeedError(
            f"stored checkpoint {text!r} is not a Kafka checkpoint (was the warehouse filled by "
            "the slot feed? switching feeds needs a fresh warehouse or a re-snapshot)"
        ) from None
    if not isinstance(data, dict):
        raise FeedError(f"stored checkpoint {text!r} is not a Kafka checkpoint")
    return {int(p): int(o) for p, o in data.items()}


def format_checkpoint(offsets: Mapping[int, int]) -> str:
    return json.dumps({str(p): int(offsets[p]) for p in sorted(offsets)}, separators=(",", ":"))


def admin_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The admin client's configuration: the consumer's without the consumer-only properties."""
    return {k: v for k, v in config.items() if k not in CONSUMER_ONLY}


__all__ = [
    "BROKER_DOWN",
    "REQUIRED",
    "admin_config",
    "consumer_config",
    "format_checkpoint",
    "parse_checkpoint",
]
