"""The BigQuery warehouse adapter, verified as far as this machine allows.

BigQuery cannot be reached from here, so nothing below talks to it. What is verified, and how:

1. Syntax: every statement and the transaction script the adapter generates for a representative
   run of batches (insert, update, primary-key update, delete, unchanged TOAST column, new
   column, truncate, replay) parses with sqlglot's `bigquery` dialect.
2. Semantics: `DuckDBBackedClient` (tests/prod/bigquery_fake.py) is a FAKE BigQuery client that
   runs the adapter's generated BigQuery SQL on DuckDB after transpiling it with sqlglot
   (bigquery -> duckdb), `@name` parameters bound as DuckDB `$name`, and load jobs reading the
   adapter's Parquet buffer. The
   same batches go through `DuckDBWarehouse.apply`; the raw tables, change logs, stored
   positions and per-table apply results must be equal. This checks the logic of the generated
   MERGE / INSERT / UPDATE (newer-(_lsn, _seq)-wins, deletes, TOAST carry, truncates, replay
   skip) as DuckDB executes it - not BigQuery's execution of it: BigQuery-only behaviour (its
   MERGE cardinality check, transaction/temp-table rules, Parquet list inference, the explicit
   load schema) stays unverified until it runs against a real project.
3. Client calls: `RecordingClient` is a FAKE client (the same DuckDB-backed fake, recording
   every call) because no real one can run here: it checks the order load -> one script, the job
   configs (Parquet, WRITE_TRUNCATE, query parameters), staging tables deleted afterwards, and
   that when the script's query job raises nothing is committed and the feed is not acked.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import duckdb
import pyarrow as pa
import pytest
import sqlglot
from bigquery_fake import DuckDBBackedClient
from google.cloud import bigquery

from analytics_assets.lib import cdc
from analytics_assets.lib.feeds.base import (
    DEAD_LETTER_VALUE_MAX,
    ChangeBatch,
    DeadLetter,
    Position,
    TableChanges,
    meta_schema_fields,
)
from analytics_assets.lib.warehouse.base import Warehouse
from analytics_assets.lib.warehouse.bigquery import BigQueryWarehouse
from analytics_assets.lib.warehouse.duckdb import DuckDBWarehouse

TZ = "America/New_York"
DATASET = "raw"

# -- batches -------------------------------------------------------------------------------------

TS = dt.datetime(2026, 3, 1, 3, 30, tzinfo=dt.UTC)  # 2026-02-28 in New York


def _schema(extra: bool) -> pa.Schema:
    fields = [
        pa.field("id", pa.int64()),
        pa.field("status", pa.string()),
        pa.field("note", pa.string()),  # a TOASTed column
        pa.field("amount", pa.decimal128(10, 2)),
        pa.field("created_at", pa.timestamp("us", tz="UTC")),
    ]
    if extra:
        fields.append(pa.field("coupon", pa.string()))  # a column the source added
    return pa.schema(fields + meta_schema_fields())


ALL = ("status", "note", "amount", "created_at")


def _row(
    id_, lsn, seq, op, status=None, note=None, amount=None, created=None, unchanged=None, **kw
):
    return {
        "id": id_,
        "status": status,
        "note": note,
        "amount": Decimal(amount) if amount is not None else None,
        "created_at": created,
        "_lsn": lsn,
        "_seq": seq,
        "_op": op,
        "_is_deleted": op == "d",
        "_commit_ts": TS + dt.timedelta(seconds=lsn),
        "_unchanged_cols": unchanged,
        **kw,
    }


def _batch(rows, end, truncates=(), extra=False) -> ChangeBatch:
    schema = _schema(extra)
    table = pa.Table.from_pylist(rows, schema=schema)
    tc = TableChanges("orders", table, ("id",), end, f"cp-{end.lsn}", list(truncates))
    return ChangeBatch({"orders": tc}, None, None, None, None)


DAY = dt.timedelta(days=1)
STEPS: list[tuple[str, ChangeBatch, bool]] = [
    # (what, batch, commit)
    (
        "snapshot part 1 (uncommitted)",
        _batch(
            [
                _row(1, 99, 1, "r", "new", "n1", "1.50", TS),
                _row(2, 99, 2, "r", "new", "n2", "2.00", TS),
            ],
            Position(99, 2),
        ),
        False,
    ),
    (
        "snapshot part 2",
        _batch([_row(3, 99, 3, "r", "new", "n3", "3.25", TS + DAY)], Position(99, 3)),
        True,
    ),
    (
        "insert, update, unchanged TOAST, delete",
        _batch(
            [
                _row(4, 100, 2, "c", "new", "n4", "4.00", TS + 2 * DAY),
                _row(1, 100, 4, "u", "paid", "n1b", "1.50", TS),
                _row(2, 100, 6, "u", "paid", None, "2.00", TS, unchanged=["note"]),
                _row(3, 100, 8, "d", None, None, None, None, unchanged=list(ALL)),
            ],
            Position(100, 8),
        ),
        True,
    ),
    (
        "primary-key update, TOAST carried inside the batch, newest per key wins",
        _batch(
            [
                _row(2, 200, 1, "d", None, None, None, None, unchanged=list(ALL)),
                _row(20, 200, 2, "c", "paid", "n20", "2.00", TS),
                _row(1, 200, 4, "u", "shipped", "n1c", "1.50", TS),
                _row(1, 201, 2, "u", "done", None, "1.75", TS, unchanged=["note"]),
                _row(20, 202, 2, "u", "done", None, "2.00", TS + DAY, unchanged=["note"]),
            ],
            Position(202, 2),
        ),
        True,
    ),
    (
        "new column",
        _batch(
            [_row(4, 300, 2, "u", "paid", "n4", "4.00", TS + 2 * DAY, coupon="SPRING")],
            Position(300, 2),
            extra=True,
        ),
        True,
    ),
    (
        "replay of an applied batch: nothing",
        _batch([_row(1, 201, 2, "u", "stale", "x", "9.99", TS)], Position(201, 2)),
        True,
    ),
    (
        "truncate, then an insert in the same transaction; one replayed row skipped",
        _batch(
            [
                _row(4, 300, 2, "u", "paid", "n4", "4.00", TS + 2 * DAY, coupon="SPRING"),
                _row(5, 400, 4, "c", "new", "n5", "5.00", TS + 3 * DAY, coupon=None),
            ],
            Position(400, 4),
            truncates=[Position(400, 1)],
            extra=True,
        ),
        True,
    ),
    (
        "an update after the truncate (the row stays deleted only if older)",
        _batch(
            [
                _row(
                    5,
                    500,
                    2,
                    "u",
                    "paid",
                    None,
                    "5.00",
                    TS + 3 * DAY,
                    unchanged=["note"],
                    coupon="X",
                )
            ],
            Position(500, 2),
            extra=True,
        ),
        True,
    ),
]


def _run_steps(warehouse: Warehouse) -> list:
    results = []
    for _, batch, commit in STEPS:
        results.append(warehouse.apply(batch, commit=commit))
    return results


def _table(con, name: str, order: str) -> list[dict]:
    cur = con.execute(f'select * exclude (_loaded_at) from "raw"."{name}" order by {order}')  # noqa: S608 - test fixture names
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]


def apply_to_both(both, batch: ChangeBatch, what: str, *, commit: bool = True):
    """Apply `batch` through both adapters of `both` and assert equal apply results and, once
    committed, equal raw table, change log and positions; returns the DuckDB adapter's result."""
    ddb, bqw, client = both
    expected = ddb.apply(batch, commit=commit)
    got = bqw.apply(batch, commit=commit)
    assert got.committed == expected.committed, what
    for t, exp in expected.tables.items():
        res = got.tables[t]
        assert (res.changes_by_op, res.skipped, res.first, res.last) == (
            exp.changes_by_op,
            exp.skipped,
            exp.first,
            exp.last,
        ), what
        assert res.business_dates == exp.business_dates, what
    if commit:
        for name, order in (("orders", "id"), ("orders_changes", "_lsn, _seq")):
            assert _table(client.con, name, order) == _table(ddb.con, name, order), (what, name)
        got_state = {t: (s.position, s.checkpoint) for t, s in bqw.state().items()}
        exp_state = {t: (s.position, s.checkpoint) for t, s in ddb.state().items()}
        assert got_state == exp_state, what
    return expected


@pytest.fixture
def both(tmp_path):
    ddb = DuckDBWarehouse(tmp_path / "w.duckdb", timezone=TZ)
    client = DuckDBBackedClient()
    bqw = BigQueryWarehouse(client=client, dataset=DATASET, timezone=TZ)
    yield ddb, bqw, client
    ddb.close()
    bqw.close()


# -- 2. semantics --------------------------------------------------------------------------------


def test_generated_bigquery_sql_run_on_duckdb_equals_duckdb_warehouse(both):
    """Same batches through both adapters (the BigQuery one on the DuckDB-backed FAKE client):
    equal raw table, change log, positions and apply results, step by step."""
    _, _, client = both
    for what, batch, commit in STEPS:
        apply_to_both(both, batch, what, commit=commit)

    # the outcome is the intended one, not merely equal
    rows = {r["id"]: r for r in _table(client.con, "orders", "id")}
    assert set(rows) == {1, 2, 3, 4, 5, 20}
    assert rows[2]["_is_deleted"] and rows[3]["_is_deleted"]  # PK update + delete
    assert rows[1]["note"] == "n1c" and rows[1]["status"] == "done"  # TOAST carried in-batch
    assert rows[20]["note"] == "n20"  # TOAST carried in-batch after the PK update
    assert rows[4]["_is_deleted"] and rows[4]["_op"] == "t"  # truncated
    assert rows[5]["note"] == "n5" and not rows[5]["_is_deleted"]  # TOAST from the warehouse row
    assert rows[5]["coupon"] == "X"
    log = _table(client.con, "orders_changes", "_lsn, _seq")
    assert len(log) == len({(r["_lsn"], r["_seq"]) for r in log})  # nothing twice
    # staging tables are gone
    left = client.con.execute(
        "select table_name from information_schema.tables where table_name like '_cdc_load_%'"
    ).fetchall()
    assert left == []


def test_a_resent_batch_changes_nothing_in_either_warehouse(both):
    """With the stored positions gone (nothing filters the resent batches before the SQL),
    re-applying older batches must change neither the raw table (the MERGE's newer-(_lsn, _seq)
    condition) nor the change log (its inserts anti-join on (_lsn, _seq)), in both warehouses:
    the change log holds each change once. (Until issue 21 only BigQuery's inserts anti-joined;
    DuckDB's appended the resent rows a second time.)"""
    ddb, bqw, client = both
    for warehouse in (ddb, bqw):
        _run_steps(warehouse)
    raw_before = _table(client.con, "orders", "id")
    log_before = _table(client.con, "orders_changes", "_lsn, _seq")
    assert raw_before == _table(ddb.con, "orders", "id")
    assert log_before == _table(ddb.con, "orders_changes", "_lsn, _seq")
    for con in (client.con, ddb.con):
        con.execute('delete from "raw"."_cdc_state"')
    bqw._state = ddb._state = None
    # insert/update/delete, PK update, and the truncate with its insert: all older than the rows
    for _, batch, _ in [*STEPS[2:4], STEPS[6]]:
        ddb.apply(batch)
        bqw.apply(batch)
    for con in (client.con, ddb.con):
        assert _table(con, "orders", "id") == raw_before
        assert _table(con, "orders_changes", "_lsn, _seq") == log_before


# -- 1. syntax -----------------------------------------------------------------------------------


def test_every_generated_statement_parses_as_bigquery(both):
    _, bqw, client = both
    _run_steps(bqw)
    sqls = [c[1] for c in client.calls if c[0] == "query"]
    scripts = [s for s in sqls if s.startswith("BEGIN TRANSACTION")]
    assert len(scripts) == len(STEPS) - 2  # one per commit; the replay plans nothing but state
    kinds = set()
    for sql in sqls:
        parsed = sqlglot.parse(sql, read="bigquery", error_level=sqlglot.ErrorLevel.RAISE)
        assert parsed and all(e is not None for e in parsed), sql
        for e in parsed:
            kinds.add(type(e).__name__)
            # round trip: what sqlglot understood is what was written (no silent dropping)
            assert sqlglot.parse_one(e.sql("bigquery"), read="bigquery") == e
    assert {
        "Merge",
        "Insert",
        "Update",
        "Create",
        "Alter",
        "Select",
        "Transaction",
        "Commit",
    } <= kinds


# -- 3. client calls -----------------------------------------------------------------------------


def test_client_calls_load_then_one_script_with_parameters(both):
    """FAKE client (BigQuery cannot run here): the calls and their job configs."""
    _, bqw, client = both
    bqw.apply(STEPS[0][1], commit=False)
    bqw.apply(STEPS[1][1])
    client.calls.clear()
    bqw.apply(STEPS[2][1])
    kinds = [c[0] for c in client.calls]
    script_at = next(
        i for i, c in enumerate(client.calls) if c[0] == "query" and c[1].startswith("BEGIN")
    )
    load_at = kinds.index("load")
    assert load_at < script_at
    assert kinds.count("load") == 1 and kinds[script_at:] == ["query", "delete_table"]
    _, dest, config = client.calls[load_at]
    assert dest.startswith("test-project.raw._cdc_load_orders_")
    assert config.source_format == bigquery.SourceFormat.PARQUET
    assert config.write_disposition == bigquery.WriteDisposition.WRITE_TRUNCATE
    assert config.parquet_options.enable_list_inference
    modes = {f.name: (f.field_type, f.mode) for f in config.schema}
    assert modes["_unchanged_cols"] == ("STRING", "REPEATED")
    assert modes["created_at"] == ("TIMESTAMP", "NULLABLE")
    assert client.calls[script_at + 1] == ("delete_table", dest)
    _, script, params = client.calls[script_at]
    assert script.rstrip().endswith("COMMIT TRANSACTION;")
    assert script.count("MERGE INTO `raw`.`orders` ") == 1
    assert "MERGE INTO `raw`.`_cdc_state`" in script
    assert params["checkpoint_0"] == "cp-100" and params["position_lsn_0"] == 100
    assert isinstance(params["loaded_at"], dt.datetime)
    assert "cp-100" not in script  # values are parameters, not SQL text


class _Feed:
    """A minimal feed (fake) that hands out one batch and records acks."""

    kind = "slot"
    captured_tables = ("orders",)

    def __init__(self, batch):
        self.batches = [batch]
        self.acked: list[dict] = []

    def needs_snapshot(self, tables, state):
        return []

    def snapshot(self, tables, max_rows, resync=()):
        return iter(())

    def open(self, tables, state):
        pass

    def read_batch(self, max_changes):
        return self.batches.pop(0) if self.batches else None

    def ack(self, state):
        self.acked.append(dict(state))

    def lag(self, state=None):
        return {}

    def heartbeat(self):
        pass

    def close(self):
        pass


def test_failed_script_commits_nothing_and_acks_nothing(both):
    """FAKE client: the script's query job raises (as BigQuery does when a statement fails and
    the transaction rolls back). No state advances, the feed is not acked, staging is dropped."""
    _, bqw, client = both
    bqw.apply(STEPS[0][1], commit=False)
    bqw.apply(STEPS[1][1])
    state_before = bqw.state()
    rows_before = _table(client.con, "orders", "id")
    client.fail_script = RuntimeError("Query error: UPDATE/MERGE must match at most one source row")
    feed = _Feed(STEPS[2][1])
    with pytest.raises(RuntimeError, match="at most one source row"):
        cdc.ingest(["orders"], feed=feed, warehouse=bqw, measure_lag=False, heartbeat=False)
    assert feed.acked == []
    assert bqw.state() == state_before
    assert _table(client.con, "orders", "id") == rows_before
    assert ("delete_table",) == tuple(c[0] for c in client.calls[-1:])
    client.fail_script = None
    bqw._state = None  # a restart reads the stored truth
    assert bqw.state() == state_before


def test_a_statement_failing_inside_the_script_rolls_everything_back(both):
    """DuckDB-backed FAKE: a real failure in the middle of the transaction script leaves rows,
    change log and positions as they were."""
    _, bqw, client = both
    bqw.apply(STEPS[0][1], commit=False)
    bqw.apply(STEPS[1][1])
    rows_before = _table(client.con, "orders", "id")
    log_before = _table(client.con, "orders_changes", "_lsn, _seq")
    state_before = bqw.state()
    client.con.execute('drop table "raw"."_cdc_state"')  # the last statement of the script fails
    client.con.execute(
        'create table "raw"."_cdc_state" (table_name VARCHAR, position_lsn BIGINT CHECK '
        "(position_lsn < 0), position_seq BIGINT, checkpoint VARCHAR, feed VARCHAR, "
        "updated_at TIMESTAMPTZ)"
    )
    client.con.execute(
        "insert into raw._cdc_state values (?, ?, ?, ?, 'slot', now())",
        ["orders", -1, 0, "cp"],
    )
    with pytest.raises(duckdb.Error):
        bqw.apply(STEPS[2][1])
    assert _table(client.con, "orders", "id") == rows_before
    assert _table(client.con, "orders_changes", "_lsn, _seq") == log_before
    assert state_before  # unchanged in memory too
    assert bqw._state == state_before


def test_make_warehouse_is_bigquery_in_prod(monkeypatch):
    """prod builds the BigQuery adapter through dagster-gcp's BigQueryResource (its client is
    replaced by the FAKE one: no credentials or network here)."""
    from contextlib import contextmanager

    from dagster_gcp import BigQueryResource

    from analytics_assets.settings import Settings, get_settings

    seen: dict[str, Any] = {}

    @contextmanager
    def fake_get_client(self):
        seen["project"], seen["location"] = self.project, self.location
        yield DuckDBBackedClient()

    monkeypatch.setattr(BigQueryResource, "get_client", fake_get_client)
    monkeypatch.setenv("ANALYTICS_ENV", "prod")
    monkeypatch.setenv("GCP_PROJECT", "acme-analytics-prod")
    monkeypatch.setenv("RAW_SCHEMA", "raw_cdc")
    get_settings.cache_clear()
    try:
        settings: Settings = get_settings()
        w = cdc.make_warehouse(settings)
        assert isinstance(w, BigQueryWarehouse) and isinstance(w, Warehouse)
        assert w.dataset == "raw_cdc"
        assert seen == {"project": "acme-analytics-prod", "location": "US"}
        w.close()
    finally:
        get_settings.cache_clear()


# -- dead letters --------------------------------------------------------------------------------


def _with_dead_letters(step: int, dead) -> ChangeBatch:
    batch = STEPS[step][1]
    return ChangeBatch(batch.tables, batch.first, batch.last, None, None, dead_letters=list(dead))


DEAD = [
    DeadLetter.of("app.public.orders", 0, 7, "orders", "not JSON (Expecting ',')", b'{"op": "c"'),
    DeadLetter.of(
        "app.public.orders", 1, 3, "orders", "unknown or missing op 'x'", b"\x00" * 20_000
    ),
    DeadLetter.of(
        "app.public.orders", 0, 9, "orders", "op 'c' without its after image", None, b"k"
    ),
]


def _dead_letters(con) -> list[dict]:
    cur = con.execute(
        'select * exclude (first_seen_at) from "raw"."_dead_letters" '
        "order by topic, kafka_partition, kafka_offset"
    )
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]


def test_dead_letters_are_written_once_in_the_batch_transaction(both):
    """Same dead letters through both adapters (BigQuery SQL on the DuckDB-backed FAKE client):
    equal `_dead_letters` rows, inserted by the transaction script; a replay and a repeat in a
    later batch add none; a failing script stores none."""
    ddb, bqw, client = both
    for warehouse in (ddb, bqw):
        warehouse.apply(STEPS[0][1], commit=False)
        warehouse.apply(STEPS[1][1])
    client.calls.clear()
    client.fail_script = RuntimeError("Query error")
    with pytest.raises(RuntimeError):
        bqw.apply(_with_dead_letters(2, DEAD[:2]))
    client.fail_script = None
    assert client.con.execute(
        "select count(*) from information_schema.tables where table_name = '_dead_letters'"
    ).fetchall() == [(1,)]  # created outside the script (DDL), empty
    assert client.con.execute('select count(*) from "raw"."_dead_letters"').fetchall() == [(0,)]
    for warehouse in (ddb, bqw):
        warehouse.apply(_with_dead_letters(2, DEAD[:2]))
        warehouse.apply(_with_dead_letters(2, DEAD[:2]))  # a replay: positions skip, ids dedupe
        warehouse.apply(_with_dead_letters(3, DEAD[1:]))  # one new, one seen before
    got, expected = (_dead_letters(con) for con in (client.con, ddb.con))
    assert got == expected
    assert [(r["kafka_partition"], r["kafka_offset"]) for r in got] == [(0, 7), (0, 9), (1, 3)]
    big = next(r for r in got if r["kafka_offset"] == 3)
    assert big["value_bytes"] == 20_000 and len(big["record_value"]) == DEAD_LETTER_VALUE_MAX
    assert next(r for r in got if r["kafka_offset"] == 9)["record_value"] is None
    scripts = [c for c in client.calls if c[0] == "query" and c[1].startswith("BEGIN")]
    dead_scripts = [s for s in scripts if "INSERT INTO `raw`.`_dead_letters`" in s[1]]
    assert len(dead_scripts) == 4  # the failed one and three more, each inside its transaction
    for _, sql, _ in dead_scripts:
        assert sqlglot.parse(sql, read="bigquery", error_level=sqlglot.ErrorLevel.RAISE)
    left = client.con.execute(
        "select table_name from information_schema.tables where table_name like '_cdc_load_%'"
    ).fetchall()
    assert left == []
