"""Debezium events re-sent by a restarted connector (Kafka feed), through both warehouse
adapters: the BigQuery one on the DuckDB-backed FAKE client of test_bigquery_warehouse (BigQuery
cannot run here; see that module's docstring for what this does and does not verify) and the
DuckDB one. A re-sent event repeats its key, `source.lsn` and op at a new (offset-derived)
position: neither raw nor the change log may see it twice, in the same batch or a later one,
and a re-sent truncate must not delete rows that came after the first one."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import sqlglot
from test_bigquery_warehouse import _table, apply_to_both, both  # noqa: F401 - `both` is the fixture

from analytics_assets.lib.feeds.base import (
    SOURCE_LSN,
    ChangeBatch,
    Position,
    TableChanges,
    meta_schema_fields,
)

TS = dt.datetime(2026, 3, 1, 3, 30, tzinfo=dt.UTC)
SCHEMA = pa.schema(
    [pa.field("id", pa.int64()), pa.field("status", pa.string())]
    + meta_schema_fields()
    + [pa.field(SOURCE_LSN, pa.int64())]
)


def _event(id_: int, offset: int, op: str, status: str | None, source_lsn: int) -> dict:
    return {
        "id": id_,
        "status": status,
        "_lsn": offset,  # the Kafka feed's position: derived from the offset
        "_seq": 0,
        "_op": op,
        "_is_deleted": op == "d",
        "_commit_ts": TS + dt.timedelta(seconds=source_lsn),  # repeated when re-sent
        "_unchanged_cols": None,
        SOURCE_LSN: source_lsn,
    }


def _batch(events: list[dict], end: int, truncates: dict[int, int] | None = None) -> ChangeBatch:
    """`truncates`: offset -> source lsn."""
    positions = {Position(o, 0): src for o, src in (truncates or {}).items()}
    tc = TableChanges(
        "orders",
        pa.Table.from_pylist(events, schema=SCHEMA),
        ("id",),
        Position(end, 0),
        f"cp-{end}",
        list(positions),
        positions,
    )
    return ChangeBatch({"orders": tc}, None, None, None, None)


STEPS = [
    ("first copies", _batch([_event(1, 1, "c", "new", 10), _event(2, 2, "c", "new", 11)], 2)),
    ("an update", _batch([_event(1, 3, "u", "paid", 12)], 3)),
    (
        "restart: the last two events again, a new delete and its in-batch duplicate",
        _batch(
            [
                _event(2, 4, "c", "new", 11),
                _event(1, 5, "u", "paid", 12),
                _event(2, 6, "d", None, 13),
                _event(2, 7, "d", None, 13),
            ],
            7,
        ),
    ),
    ("a truncate, then a new row", _batch([_event(3, 9, "c", "new", 21)], 9, {8: 20})),
    (
        "restart: the truncate and the row again, then a new row",
        _batch([_event(3, 11, "c", "new", 21), _event(4, 12, "c", "new", 22)], 12, {10: 20}),
    ),
]


def test_re_sent_events_are_applied_once_by_both_adapters(both):  # noqa: F811 - the fixture
    ddb, _, client = both
    results = [apply_to_both(both, batch, what).tables["orders"] for what, batch in STEPS]

    # the BigQuery SQL of it parses as BigQuery (the fake ran its DuckDB transpilation)
    queries = [c[1] for c in client.calls if c[0] == "query"]
    assert any("_source_lsn" in sql and "nth > 1" in sql for sql in queries)
    for sql in queries:
        sqlglot.parse(sql, read="bigquery")

    # the intended outcome, not merely the same one
    assert results[2].changes_by_op == {"d": 1} and results[2].skipped == 3
    assert results[4].changes_by_op == {"c": 1} and results[4].skipped == 2
    rows = {r["id"]: r for r in _table(ddb.con, "orders", "id")}
    assert rows[1]["_is_deleted"] and rows[1]["_op"] == "t"  # truncated once
    assert rows[2]["_is_deleted"]
    assert not rows[3]["_is_deleted"] and not rows[4]["_is_deleted"]  # the re-sent truncate
    log = _table(ddb.con, "orders_changes", "_lsn, _seq")
    events = [(r["id"], r[SOURCE_LSN], r["_op"]) for r in log]
    assert sorted(events, key=str) == sorted(
        [(1, 10, "c"), (2, 11, "c"), (1, 12, "u"), (2, 13, "d"), (None, 20, "t"), (3, 21, "c")]
        + [(4, 22, "c")],
        key=str,
    )
