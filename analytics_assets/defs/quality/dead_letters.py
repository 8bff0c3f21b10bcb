"""Quarantined records: change events the feed could not take (Kafka: not JSON, truncated,
unknown op, missing image, another table's record; both feeds: a value the platform cannot hold,
such as text that is not UTF-8 from a SQL_ASCII database) sit in `raw._dead_letters` instead of
stopping the ingest. Each one is a change missing from `raw.<table>`, so the check is an ERROR
while any are there (not blocking: the rest of the table is right and downstream runs on): the count, how many are new since the check last ran, the most common reasons
and where the newest one is (topic, partition, offset) to find it.

Clearing: once a record is dealt with (re-emitted fixed by the source, or accepted as lost),
delete its row from `raw._dead_letters`; the check passes again when none are left.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field

from analytics_assets.defs.quality.verdict import Verdict
from analytics_assets.defs.quality.warehouse import RAW_SCHEMA, relation, relation_exists
from analytics_assets.lib.warehouse.names import DEAD_LETTERS

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
    `since` time (all of them when None) and the top reasons. One SQL text for DuckDB and
    BigQuery; the quarantine is small, so rows of other tables are dropped here, not in SQL."""
    out = {t: Quarantine() for t in since}
    if not relation_exists(con, RAW_SCHEMA, DEAD_LETTERS):
        return out
    ref = relation(con, RAW_SCHEMA, DEAD_LETTERS)
    where = (
        "concat(topic, '[', cast(kafka_partition as string), ']@', cast(kafka_offset as string))"
    )
    rows = con.execute(
        f"select table_name, count(*), max(first_seen_at), max_by({where}, first_seen_at) "  # noqa: S608 - quoted identifiers
        f"from {ref} group by table_name"
    ).fetchall()
    for table, count, newest, position in rows:
        if table not in out:
            continue
        out[table] = Quarantine(count, count, newest, position)
        if since[table] is not None:
            out[table].new = con.execute(
                f"select count(*) from {ref} where table_name = ? and first_seen_at > ?",  # noqa: S608 - quoted identifiers
                [table, since[table]],
            ).fetchone()[0]
    reasons = con.execute(
        f"select table_name, reason, count(*) as n from {ref} group by table_name, reason "  # noqa: S608 - quoted identifiers
        "qualify row_number() over (partition by table_name order by count(*) desc, reason) <= ? "
        "order by table_name, n desc, reason",
        [TOP_REASONS],
    ).fetchall()
    for table, reason, n in reasons:
        if table in out:
            out[table].reasons.append((reason, n))
    return out


def verdict(table: str, found: Quarantine, *, first_check: bool) -> Verdict:
    v = Verdict(ok_message=f"no quarantined change records of {table}")
    if found.count:
        new = "" if first_check else f", {found.new} new since the last check"
        reasons = "; ".join(f"{n} x {r}" for r, n in found.reasons)
        v.error(
            f"{found.count} change record(s) of {table} could not be applied and are quarantined "
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
