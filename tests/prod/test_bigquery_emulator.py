"""The BigQuery warehouse adapter through the real `google-cloud-bigquery` client, over HTTP, against
the BigQuery API emulator (tests/prod/emulator.py), compared with `DuckDBWarehouse` on the same
batches (the STEPS of test_bigquery_warehouse.py).

What this adds to the sqlglot + DuckDB-backed fake checks: the client's real requests (load jobs
from the adapter's Parquet with the explicit schema, query jobs with typed named parameters, a
multi-statement transaction script, dataset and table calls), BigQuery column types as the API
reports them, and the emulator's own execution of MERGE and transactions. The emulator is DuckDB
underneath, so BigQuery-only behaviour (its MERGE cardinality error, quotas, concurrent-DML
rules) is still not verified; where its answers differ from real BigQuery the test says so.

Kept on the FAKE client (test_bigquery_warehouse.py), because the emulator cannot do it: a query
job that raises from the client before any statement runs (`fail_script`), and the record of the
exact calls and job configs the adapter makes.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from google.cloud import bigquery
from test_bigquery_warehouse import DEAD, STEPS, TZ, _Feed, _table, _with_dead_letters

from analytics_assets.lib import cdc
from analytics_assets.lib.warehouse.bigquery import BigQueryWarehouse
from analytics_assets.lib.warehouse.duckdb import DuckDBWarehouse


def run(client, sql: str) -> list:
    """The rows of one query job (test SQL: dataset names are the test's own)."""
    return list(client.query(sql).result())


def rows(client, dataset: str, name: str, order: str, exclude: str = "_loaded_at") -> list[dict]:
    sql = f"select * except ({exclude}) from `{dataset}`.`{name}` order by {order}"  # noqa: S608 - test names
    return [dict(r.items()) for r in client.query(sql).result()]


def duckdb_rows(con, name: str, order: str) -> list[dict]:
    """DuckDB's rows as the BigQuery API returns them: a NULL array is an empty array there
    (BigQuery has no NULL arrays: a NULL written to an ARRAY column reads back as [])."""
    out = _table(con, name, order)
    for row in out:
        if "_unchanged_cols" in row and row["_unchanged_cols"] is None:
            row["_unchanged_cols"] = []
    return out


@pytest.fixture
def both(tmp_path, bq_emulator):
    ddb = DuckDBWarehouse(tmp_path / "w.duckdb", timezone=TZ)
    client = bq_emulator.client()
    dataset = bq_emulator.dataset("raw")
    bqw = BigQueryWarehouse(client=client, dataset=dataset, timezone=TZ)
    yield ddb, bqw, client, dataset
    ddb.close()
    bqw.close()
    client.delete_dataset(dataset, delete_contents=True, not_found_ok=True)


def assert_same(ddb, bqw, client, dataset, what) -> None:
    for name, order in (("orders", "id"), ("orders_changes", "_lsn, _seq")):
        assert rows(client, dataset, name, order) == duckdb_rows(ddb.con, name, order), (
            what,
            name,
        )
    got_state = {t: (s.position, s.checkpoint) for t, s in bqw.state().items()}
    assert got_state == {t: (s.position, s.checkpoint) for t, s in ddb.state().items()}, what


def test_adapter_over_http_equals_duckdb_warehouse_with_bigquery_types(both):
    ddb, bqw, client, dataset = both
    for what, batch, commit in STEPS:
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
            assert_same(ddb, bqw, client, dataset, what)

    by_id = {r["id"]: r for r in rows(client, dataset, "orders", "id")}
    assert by_id[1]["note"] == "n1c" and by_id[1]["status"] == "done"  # TOAST carried in-batch
    assert by_id[4]["_is_deleted"] and by_id[4]["_op"] == "t"  # truncated
    assert by_id[5]["coupon"] == "X" and by_id[5]["amount"] == Decimal("5.00")
    assert by_id[5]["created_at"] == dt.datetime(2026, 3, 4, 3, 30, tzinfo=dt.UTC)
    # the staging tables were deleted through the API
    staging = ("_cdc_load_", "_cdc_stage_")
    assert [t.table_id for t in client.list_tables(dataset) if t.table_id.startswith(staging)] == []

    # BigQuery column types as the API reports them (the fake typed everything STRING)
    types = {f.name: (f.field_type, f.mode) for f in client.get_table(f"{dataset}.orders").schema}
    assert types["id"] == ("INTEGER", "NULLABLE")
    assert types["amount"] == ("NUMERIC", "NULLABLE")
    assert types["created_at"] == ("TIMESTAMP", "NULLABLE")
    assert types["_is_deleted"] == ("BOOLEAN", "REQUIRED")
    # The column the source added mid-stream (ALTER TABLE ADD COLUMN in a query job): the
    # emulator leaves it out of tables.get and INFORMATION_SCHEMA (its catalog is not updated by
    # ALTER TABLE, BigQuery's is), so its type is read from a query's result schema.
    assert "coupon" not in types
    added = client.query(f"select coupon from `{dataset}`.`orders`").result().schema  # noqa: S608
    assert [(f.name, f.field_type) for f in added] == [("coupon", "STRING")]
    changes = {
        f.name: (f.field_type, f.mode) for f in client.get_table(f"{dataset}.orders_changes").schema
    }
    assert changes["_lsn"] == ("INTEGER", "REQUIRED")
    assert changes["_commit_ts"] == ("TIMESTAMP", "NULLABLE")
    [row] = run(client, f"select amount, created_at from `{dataset}`.`orders` where id = 1")  # noqa: S608
    assert isinstance(row["amount"], Decimal) and isinstance(row["created_at"], dt.datetime)

    # With the stored positions gone, re-applying older batches changes nothing (the MERGE's
    # newer-(_lsn, _seq) condition and the change log's anti-join, as BigQuery runs them).
    before = rows(client, dataset, "orders", "id"), rows(client, dataset, "orders_changes", "_lsn")
    run(client, f"delete from `{dataset}`.`_cdc_state` where true")  # noqa: S608
    bqw._state = None
    for _, batch, _ in STEPS[2:4]:
        bqw.apply(batch)
    after = rows(client, dataset, "orders", "id"), rows(client, dataset, "orders_changes", "_lsn")
    assert after == before


def test_a_statement_failing_inside_the_script_rolls_everything_back(both):
    """The emulator runs the transaction script: the state MERGE, its last statement, fails on a
    state table whose checkpoint column became an INT64; the rows, the change log and the
    positions stay as they were, the feed is not acked, the staging table is gone."""
    _, bqw, client, dataset = both
    bqw.apply(STEPS[0][1], commit=False)
    bqw.apply(STEPS[1][1])
    orders_before = rows(client, dataset, "orders", "id")
    log_before = rows(client, dataset, "orders_changes", "_lsn, _seq")
    state = f"`{dataset}`.`_cdc_state`"
    state_before = run(client, f"select * from {state}")  # noqa: S608
    client.query(f"drop table {state}").result()
    client.query(
        f"create table {state} (table_name STRING, position_lsn INT64, position_seq INT64, "
        "checkpoint INT64, feed STRING, updated_at TIMESTAMP)"
    ).result()
    run(client, f"insert into {state} values ('orders', 99, 3, 0, 'slot', current_timestamp())")  # noqa: S608

    feed = _Feed(STEPS[2][1])
    with pytest.raises(Exception, match="(?i)checkpoint|convert|cast|type"):
        cdc.ingest(["orders"], feed=feed, warehouse=bqw, measure_lag=False, heartbeat=False)
    assert feed.acked == []
    assert rows(client, dataset, "orders", "id") == orders_before
    assert rows(client, dataset, "orders_changes", "_lsn, _seq") == log_before
    assert [r["checkpoint"] for r in run(client, f"select * from {state}")] == [0]  # noqa: S608
    assert state_before  # and the staging tables are gone
    assert [t.table_id for t in client.list_tables(dataset) if "_cdc_load" in t.table_id] == []


def test_dead_letters_over_http_equal_duckdb(both):
    ddb, bqw, client, dataset = both
    for warehouse in (ddb, bqw):
        warehouse.apply(STEPS[0][1], commit=False)
        warehouse.apply(STEPS[1][1])
        warehouse.apply(_with_dead_letters(2, DEAD[:2]))
        warehouse.apply(_with_dead_letters(2, DEAD[:2]))  # a replay adds none
        warehouse.apply(_with_dead_letters(3, DEAD[1:]))  # one new, one seen before
    order = "topic, kafka_partition, kafka_offset"
    got = rows(client, dataset, "_dead_letters", order, exclude="first_seen_at")
    expected = ddb.con.execute(
        f'select * exclude (first_seen_at) from "raw"."_dead_letters" order by {order}'  # noqa: S608
    )
    names = [d[0] for d in expected.description]
    assert got == [dict(zip(names, r, strict=True)) for r in expected.fetchall()]
    assert [(r["kafka_partition"], r["kafka_offset"]) for r in got] == [(0, 7), (0, 9), (1, 3)]
    types = {f.name: f.field_type for f in client.get_table(f"{dataset}._dead_letters").schema}
    assert types["record_value"] == "BYTES" and types["kafka_offset"] == "INTEGER"


def test_make_warehouse_in_prod_writes_through_the_resource_seam(emulated_bigquery, monkeypatch):
    """prod's `make_warehouse` gets its client from `bigquery_resource` (here the emulator's
    dagster-gcp resource: anonymous credentials, the emulator's endpoint)."""
    from analytics_assets.settings import get_settings

    dataset = emulated_bigquery.dataset("raw_cdc")
    monkeypatch.setenv("ANALYTICS_ENV", "prod")
    monkeypatch.setenv("GCP_PROJECT", "test-project")
    monkeypatch.setenv("RAW_SCHEMA", dataset)
    get_settings.cache_clear()
    try:
        w = cdc.make_warehouse(get_settings())
        assert isinstance(w, BigQueryWarehouse) and w.dataset == dataset
        w.apply(STEPS[0][1], commit=False)
        w.apply(STEPS[1][1])
        w.close()
    finally:
        get_settings.cache_clear()
    c = emulated_bigquery.client()
    assert [r["id"] for r in rows(c, dataset, "orders", "id")] == [1, 2, 3]
    assert isinstance(c.get_dataset(dataset), bigquery.Dataset)
    c.delete_dataset(dataset, delete_contents=True)
