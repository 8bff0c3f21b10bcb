"""Both warehouses run the same statements (lib/warehouse/statements.py: DuckDB SQL, transpiled
for BigQuery). The BigQuery adapter runs on the DuckDB-backed FAKE client of
test_bigquery_warehouse (BigQuery cannot run here; see that module's docstring for what this
does and does not verify). Here: tables and types the `orders` steps there do not reach (a
composite key, a DATE and a naive TIMESTAMP business-date column, lists, bytes, floats, two
tables in one transaction), and that the parity runs use every statement there is."""

from __future__ import annotations

import datetime as dt
import inspect

import pyarrow as pa
import pytest
from bigquery_fake import DuckDBBackedClient
from test_bigquery_resent_events import STEPS as RESENT_STEPS
from test_bigquery_warehouse import DEAD, STEPS, _table, _with_dead_letters

from analytics_assets.lib.feeds.base import ChangeBatch, Position, TableChanges, meta_schema_fields
from analytics_assets.lib.warehouse import statements
from analytics_assets.lib.warehouse.bigquery import BigQueryWarehouse
from analytics_assets.lib.warehouse.duckdb import DuckDBWarehouse

TZ = "America/New_York"
DATES = {"orders": "created_at", "shipments": "shipped_on", "parcels": "packed_at"}
T0 = dt.datetime(2026, 3, 1, 3, 30)  # naive: read as UTC, 2026-02-28 in New York

SHIPMENTS = pa.schema(
    [
        pa.field("order_id", pa.int64()),
        pa.field("line", pa.int32()),
        pa.field("shipped_on", pa.date32()),
        pa.field("tags", pa.list_(pa.string())),
        pa.field("label", pa.binary()),
    ]
    + meta_schema_fields()
)
PARCELS = pa.schema(
    [
        pa.field("id", pa.int64()),
        pa.field("packed_at", pa.timestamp("us")),
        pa.field("weight", pa.float64()),
    ]
    + meta_schema_fields()
)


def _meta(lsn: int, seq: int, op: str) -> dict:
    return {
        "_lsn": lsn,
        "_seq": seq,
        "_op": op,
        "_is_deleted": op == "d",
        "_commit_ts": dt.datetime(2026, 3, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=lsn),
        "_unchanged_cols": None,
    }


def _shipment(order_id, line, lsn, seq, op, day=None, tags=None, label=None) -> dict:
    return {
        "order_id": order_id,
        "line": line,
        "shipped_on": day,
        "tags": tags,
        "label": label,
        **_meta(lsn, seq, op),
    }


def _parcel(id_, lsn, seq, op, packed=None, weight=None) -> dict:
    return {"id": id_, "packed_at": packed, "weight": weight, **_meta(lsn, seq, op)}


def _two_tables(shipments: list[dict], parcels: list[dict], end: int) -> ChangeBatch:
    pos = Position(end, 99)
    return ChangeBatch(
        {
            "shipments": TableChanges(
                "shipments",
                pa.Table.from_pylist(shipments, schema=SHIPMENTS),
                ("order_id", "line"),
                pos,
                f"cp-{end}",
            ),
            "parcels": TableChanges(
                "parcels", pa.Table.from_pylist(parcels, schema=PARCELS), ("id",), pos, f"cp-{end}"
            ),
        },
        None,
        None,
        None,
        None,
    )


D1, D2 = dt.date(2026, 2, 27), dt.date(2026, 3, 2)
TWO_TABLES = [
    _two_tables(
        [
            _shipment(1, 1, 10, 1, "c", D1, ["fragile"], b"\x00\x01"),
            _shipment(1, 2, 10, 2, "c", D1, [], None),
        ],
        [_parcel(7, 10, 3, "c", T0, 1.25), _parcel(8, 10, 4, "c", T0, 2.5)],
        10,
    ),
    _two_tables(
        [
            _shipment(1, 1, 20, 1, "u", D2, ["fragile", "late"], b"\x02"),
            _shipment(1, 2, 20, 2, "d"),
        ],
        [_parcel(7, 20, 3, "u", T0 + dt.timedelta(days=3), 1.5), _parcel(8, 20, 4, "d")],
        20,
    ),
]


@pytest.fixture
def both(tmp_path):
    ddb = DuckDBWarehouse(tmp_path / "w.duckdb", timezone=TZ, business_date_columns=DATES)
    client = DuckDBBackedClient()
    bqw = BigQueryWarehouse(client=client, timezone=TZ, business_date_columns=DATES)
    yield ddb, bqw, client
    ddb.close()
    bqw.close()


def _apply_alike(both, batch: ChangeBatch, commit: bool = True) -> dict:
    """Apply through both; equal results and, once committed, equal tables and positions."""
    ddb, bqw, client = both
    expected, got = ddb.apply(batch, commit=commit), bqw.apply(batch, commit=commit)
    for t, exp in expected.tables.items():
        res = got.tables[t]
        assert (res.changes_by_op, res.skipped, res.first, res.last, res.business_dates) == (
            exp.changes_by_op,
            exp.skipped,
            exp.first,
            exp.last,
            exp.business_dates,
        ), t
    if commit:
        for t, tc in batch.tables.items():
            order = ", ".join(tc.key)
            for name in (t, f"{t}_changes"):
                by = order if name == t else "_lsn, _seq"
                assert _table(client.con, name, by) == _table(ddb.con, name, by), name
        assert {t: s.position for t, s in bqw.state().items()} == {
            t: s.position for t, s in ddb.state().items()
        }
    return expected.tables


def test_two_tables_of_other_types_apply_alike_with_their_business_dates(both):
    ddb, _, _ = both
    _apply_alike(both, TWO_TABLES[0])
    second = _apply_alike(both, TWO_TABLES[1])
    # the intended dates, not merely equal ones: after images and the rows they replace
    assert second["shipments"].business_dates == {D1, D2}
    assert second["parcels"].business_dates == {dt.date(2026, 2, 28), dt.date(2026, 3, 3)}
    rows = _table(ddb.con, "shipments", "order_id, line")
    assert rows[0]["tags"] == ["fragile", "late"] and rows[0]["label"] == b"\x02"
    assert rows[1]["_is_deleted"]


def test_the_parity_runs_use_every_statement(tmp_path, monkeypatch):
    """Every statement of statements.py is built while the same batches go through both
    adapters (here and in test_bigquery_warehouse / test_bigquery_resent_events), so the
    parity checks above cover every statement kind, in both dialects."""
    used: set[str] = set()
    builders = {
        name: fn
        for name, fn in inspect.getmembers(statements, inspect.isfunction)
        if name.endswith("_sql") and fn.__module__ == statements.__name__
    }
    for name, fn in builders.items():

        def spy(*args, _name=name, _fn=fn, **kwargs):
            used.add(_name)
            return _fn(*args, **kwargs)

        monkeypatch.setattr(statements, name, spy)
    for i, runs in enumerate(
        [
            [(b, c) for _, b, c in STEPS],
            [(b, True) for _, b in RESENT_STEPS],
            [(_with_dead_letters(2, DEAD), True)],
            [(b, True) for b in TWO_TABLES],
        ]
    ):
        ddb = DuckDBWarehouse(tmp_path / f"w{i}.duckdb", timezone=TZ, business_date_columns=DATES)
        bqw = BigQueryWarehouse(
            client=DuckDBBackedClient(), timezone=TZ, business_date_columns=DATES
        )
        pair = (ddb, bqw, bqw.client)
        try:
            if i == 2:  # dead letters need their table's first batches
                for batch, commit in [(STEPS[0][1], False), (STEPS[1][1], True)]:
                    _apply_alike(pair, batch, commit)
            for batch, commit in runs:
                _apply_alike(pair, batch, commit)
        finally:
            ddb.close()
            bqw.close()
    assert used == set(builders), sorted(set(builders) - used)


SPANS = pa.schema(
    [pa.field("id", pa.int64()), pa.field("until", pa.timestamp("us", tz="UTC"))]
    + [pa.field("until__raw", pa.string())]
    + meta_schema_fields()
)


def _spans(rows: list[tuple], end: int) -> ChangeBatch:
    table = pa.Table.from_pylist(
        [
            {"id": i, "until": u, "until__raw": r, **_meta(end, n, op)}
            for n, (i, op, u, r) in enumerate(rows)
        ],
        schema=SPANS,
    )
    tc = TableChanges("spans", table, ("id",), Position(end, 99), f"cp-{end}")
    return ChangeBatch({"spans": tc}, None, None, None, None)


def test_both_add_a_companion_column_with_the_first_value_that_needs_it(both):
    ddb, _, client = both
    until = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    _apply_alike(both, _spans([(1, "c", until, None)], 10))
    for con in (ddb.con, client.con):
        assert set(_table(con, "spans", "id")[0]) == {"id", "until"} | {
            "_lsn",
            "_seq",
            "_op",
            "_is_deleted",
            "_commit_ts",
            "_source_lsn",
        }
    _apply_alike(both, _spans([(2, "c", None, "infinity")], 20))
    _apply_alike(both, _spans([(2, "u", until, None)], 30))  # an update clears it
    rows = _table(ddb.con, "spans", "id")
    assert [(r["id"], r["until__raw"]) for r in rows] == [(1, None), (2, None)]
    log = _table(client.con, "spans_changes", "_lsn, _seq")
    assert [r["until__raw"] for r in log] == [None, "infinity", None]
