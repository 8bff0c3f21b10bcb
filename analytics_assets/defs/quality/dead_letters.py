"""Quarantined records: change events the feed could not decode (Kafka: not JSON, truncated,
unknown op, missing image, another table's record) sit in `raw._dead_letters` instead of
stopping the ingest. Each one is a change missing from `raw.<table>`, so the check WARNs while
any are there: the count, how many are new since the check last ran, the most common reasons
and where the newest one is (topic, partition, offset) to find it.

Clearing: once a record is dealt with (re-emitted fixed by the source, or accepted as lost),
delete its row from `raw._dead_letters`; the check passes again when none are left.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field

from analytics_assets.defs.quality.verdict import Verdict
from analytics_assets.defs.quality.warehouse import RAW_SCHEMA, relation_exists
from analytics_assets.lib.warehouse.names import DEAD_LETTERS, q

TOP_REASONS = 5


@dataclass
class Quarantine:
    """The dead letters of one table."""

    count: int = 0
    new: int = 0  # first seen after `since`
    newest_at: dt.datetime | None = None
    newest_at_position: str | None = None  # topic[partition]@offset of the newest
    reasons: list[tuple[str, int]] = field(default_factory=list)  # most common first


def last_seen(previous: Mapping[str, object] | None) -> dt.datetime | None:
    """The newest record the previous evaluation counted (its `newest_first_seen_at`): records
    first seen after it are new. Read from the evaluation itself rather than compared with when
    the check ran, so the two clocks (and the run's start-up time) never blur "new"."""
    value = (previous or {}).get("newest_first_seen_at")
    return dt.datetime.fromisoformat(value) if isinstance(value, str) else None


def read(con, since: Mapping[str, dt.datetime | None]) -> dict[str, Quarantine]:
    """Per table of `since` (zero when it has none): counts, the records first seen after its
    `since` time (all of them when None) and the top reasons."""
    tables = list(since)
    out = {t: Quarantine() for t in tables}
    if not relation_exists(con, RAW_SCHEMA, DEAD_LETTERS):
        return out
    ref = f"{q(RAW_SCHEMA)}.{q(DEAD_LETTERS)}"
    rows = con.execute(
        f"select table_name, count(*), max(first_seen_at), arg_max(topic || '[' || "  # noqa: S608 - quoted identifiers
        "kafka_partition || ']@' || kafka_offset, first_seen_at) "
        f"from {ref} where table_name in (select unnest(?)) group by 1",
        [tables],
    ).fetchall()
    for table, count, newest, where in rows:
        out[table] = Quarantine(count, count, newest, where)
        if since[table] is not None:
            out[table].new = con.execute(
                f"select count(*) from {ref} where table_name = ? and first_seen_at > ?",  # noqa: S608 - quoted identifiers
                [table, since[table]],
            ).fetchone()[0]
    reasons = con.execute(
        f"select table_name, reason, count(*) as n from {ref} "  # noqa: S608 - quoted identifiers
        "where table_name in (select unnest(?)) group by 1, 2 "
        "qualify row_number() over (partition by table_name order by n desc, reason) <= ? "
        "order by 1, 3 desc, 2",
        [list(tables), TOP_REASONS],
    ).fetchall()
    for table, reason, n in reasons:
        out[table].reasons.append((reason, n))
    return out


def verdict(table: str, found: Quarantine, *, first_check: bool) -> Verdict:
    v = Verdict(ok_message=f"no quarantined change records of {table}")
    if found.count:
        new = "" if first_check else f", {found.new} new since the last check"
        reasons = "; ".join(f"{n} x {r}" for r, n in found.reasons)
        v.warn(
            f"{found.count} change record(s) of {table} could not be decoded and are quarantined "
            f"in {RAW_SCHEMA}.{DEAD_LETTERS}{new} (newest at {found.newest_at_position}): "
            f"{reasons}. raw.{table} lacks these changes: fix them at the source, then delete "
            "their rows"
        )
    v.metadata = {
        "quarantined": found.count,
        "quarantined_new": found.new,
        "newest_first_seen_at": found.newest_at.isoformat() if found.newest_at else None,
        "newest_position": found.newest_at_position,
        "top_reasons": {r: n for r, n in found.reasons},
    }
    return v
