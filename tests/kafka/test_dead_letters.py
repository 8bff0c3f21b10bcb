"""Bad Debezium records on a real Kafka-protocol broker (tansu): not JSON, truncated, unknown op,
another table's record, a missing image, a value its column cannot take. Each is quarantined in
`raw._dead_letters` (topic, partition, offset, reason, the bytes) in the transaction of its
batch, the good records around it are applied, the offsets move past it, a re-run or a crash
and restart adds nothing, and the `dead_letters` check reports the count."""

from __future__ import annotations

import json

import dagster as dg
import pytest
from cdc_helpers import Crash, crash_at
from graph_runs import run_graph

from analytics_assets import settings
from analytics_assets.defs.cdc.assets import raw_key
from analytics_assets.defs.quality.checks import DEAD_LETTERS, build_quality_checks

BAD_ID = 9_999_001  # the id every bad record carries: it must never reach raw


def _good_changes(con, start: int, n: int) -> None:
    """Inserts, an update, a delete, in a few transactions (both tables)."""
    for i in range(start, start + n):
        con.insert("users", email=f"dl{i}@ex.com", country="DE")
        con.insert("orders", user_id=i, total="12.50", status="new")
        con.commit()
    users, orders = con.ids("users"), con.ids("orders")
    con.update("users", users[-1], country="FR")
    con.update("orders", orders[0], status="paid")
    con.delete("users", users[0])
    con.commit()


class Bad:
    """Produces bad records next to the connector's good ones and remembers where they went."""

    def __init__(self, con):
        self.con = con
        self.sent: list[dict] = []

    def produce(self, table: str, value: bytes, reason: str, *, partition: int = 0) -> None:
        where: dict = {}

        def delivered(err, msg):
            assert err is None, err
            where.update(partition=msg.partition(), offset=msg.offset())

        self.con.producer.produce(
            self.con.topic(table),
            key=json.dumps({"id": BAD_ID}).encode(),
            value=value,
            partition=partition,
            on_delivery=delivered,
        )
        assert self.con.producer.flush(30) == 0
        self.sent.append(
            {"table": table, "topic": self.con.topic(table), "reason": reason, "value": value}
            | where
        )

    def envelope(self, table: str, *, op="c", after=..., source_table=None, **image) -> bytes:
        row = {f["field"]: None for f in self.con.fields[table]} | {"id": BAD_ID} | image
        payload = {
            "before": None,
            "after": row if after is ... else after,
            "source": {"ts_ms": 1_772_000_000_000, "table": source_table or table},
            "op": op,
            "ts_ms": 1_772_000_000_000,
        }
        value = {"schema": self.con.value_schema(table), "payload": payload}
        return json.dumps(value, separators=(",", ":")).encode()

    def all_kinds(self) -> None:
        good = self.envelope("users", email="x@ex.com")
        self.produce("users", b"this is not json \x00\xff", "not JSON", partition=0)
        self.produce("users", good[: len(good) // 2], "not JSON", partition=1)  # truncated
        self.produce(
            "users",
            self.envelope("users", source_table="payments", email="y@ex.com"),
            "record of table 'payments', expected 'users'",
            partition=1,
        )
        self.produce("orders", self.envelope("orders", op="x"), "unknown or missing op 'x'")
        self.produce("orders", self.envelope("orders", after=None), "op 'c' without its after")
        self.produce(
            "orders",
            self.envelope("orders", created_at="the day after tomorrow"),
            "column 'created_at' cannot be read",
        )
        self.produce("orders", b"[1, 2, 3]", "not a JSON object")


def _dead_letters(kenv) -> list[tuple]:
    return kenv.raw(
        "select table_name, topic, kafka_partition, kafka_offset, reason, record_value, "
        "value_bytes, first_seen_at from raw._dead_letters "
        "order by topic, kafka_partition, kafka_offset"
    )


def _assert_quarantined_exactly(kenv, bad: Bad) -> list[tuple]:
    stored = _dead_letters(kenv)
    expected = sorted(bad.sent, key=lambda b: (b["topic"], b["partition"], b["offset"]))
    assert [r[:4] for r in stored] == [
        (b["table"], b["topic"], b["partition"], b["offset"]) for b in expected
    ]
    for row, b in zip(stored, expected, strict=True):
        assert b["reason"] in row[4], (row[4], b["reason"])
        assert len(row[4]) <= 300
        assert row[5] == b["value"] and row[6] == len(b["value"])
        assert row[7] is not None
    return stored


@pytest.fixture
def env(kenv):
    kenv.tables = ("users", "orders")
    con = kenv.connector(partitions={"users": 2, "orders": 1})
    yield kenv, con, Bad(con)
    con.close()


def test_bad_records_are_quarantined_and_the_good_ones_applied(env):
    kenv, con, bad = env
    _good_changes(con, 0, 4)
    bad.all_kinds()
    _good_changes(con, 4, 4)  # good records after the bad ones, in the same topics

    result = kenv.ingest(batch_size=5)

    assert result.caught_up
    kenv.assert_raw_equals_source()
    kenv.assert_change_log_has_no_duplicates()
    for table in kenv.tables:
        assert kenv.raw(f"select count(*) from raw.{table} where id = {BAD_ID}") == [(0,)]  # noqa: S608
    stored = _assert_quarantined_exactly(kenv, bad)
    assert len(stored) == 7
    # the group's offsets moved past every bad record: to the end of each topic
    assert kenv.group_committed() == kenv.high_watermarks()

    again = kenv.ingest(batch_size=5)  # nothing new: nothing applied, no dead letter twice
    assert again.changes == 0
    assert _dead_letters(kenv) == stored

    # a bad record arriving later lands in a later batch, once
    bad.produce("users", b"{", "not JSON", partition=0)
    _good_changes(con, 8, 1)
    kenv.ingest(batch_size=5)
    kenv.assert_raw_equals_source()
    assert len(_assert_quarantined_exactly(kenv, bad)) == 8
    assert kenv.group_committed() == kenv.high_watermarks()


@pytest.mark.parametrize("stage", ["decoded", "applied", "committed", "acked"])
def test_a_crash_around_a_batch_with_dead_letters_loses_and_doubles_nothing(env, stage):
    kenv, con, bad = env
    _good_changes(con, 0, 2)
    bad.all_kinds()
    _good_changes(con, 2, 2)
    with pytest.raises(Crash):
        kenv.ingest(batch_size=4, fault=crash_at(stage, 2))
    kenv.ingest(batch_size=4)  # the restart
    kenv.assert_raw_equals_source()
    kenv.assert_change_log_has_no_duplicates()
    _assert_quarantined_exactly(kenv, bad)
    assert kenv.group_committed() == kenv.high_watermarks()


def test_the_dead_letters_check_reports_the_count(env, monkeypatch):
    kenv, con, bad = env
    _good_changes(con, 0, 2)
    bad.all_kinds()
    kenv.ingest(batch_size=50)

    monkeypatch.setenv("WAREHOUSE_PATH", str(kenv.tmp / f"{kenv.db}.duckdb"))
    monkeypatch.setenv("CAPTURED_TABLES", "users,orders,products")
    settings.get_settings.cache_clear()
    try:
        checks = [
            c for c in build_quality_checks() if {k.name for k in c.check_keys} == {DEAD_LETTERS}
        ]
        tables = ("users", "orders", "products")
        defs = dg.Definitions(
            assets=[dg.AssetSpec(raw_key(t)) for t in tables], asset_checks=checks
        )
        instance = dg.DagsterInstance.ephemeral()
        selection = ",".join(f"raw/{t}:{DEAD_LETTERS}" for t in tables)

        first = run_graph(defs, instance, "", checks_only=selection)
        assert first.success
        users, orders = (first.evaluation(DEAD_LETTERS, f"raw/{t}") for t in ("users", "orders"))
        for evaluation, n in ((users, 3), (orders, 4)):
            assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR
            assert evaluation.metadata["quarantined"].value == n
            assert evaluation.metadata["quarantined_new"].value == n
            assert f"{n} change record(s)" in evaluation.description
        assert "not JSON" in users.description and "unknown or missing op" in orders.description
        products = first.evaluation(DEAD_LETTERS, "raw/products")
        assert products.passed and products.metadata["quarantined"].value == 0

        # one more bad record: the next check counts it as the only new one
        bad.produce("users", b"not json either", "not JSON", partition=1)
        kenv.ingest(batch_size=50)
        second = run_graph(defs, instance, "", checks_only=selection)
        users = second.evaluation(DEAD_LETTERS, "raw/users")
        assert users.metadata["quarantined"].value == 4
        assert users.metadata["quarantined_new"].value == 1
        assert "1 new since the last check" in users.description
        assert second.evaluation(DEAD_LETTERS, "raw/orders").metadata["quarantined_new"].value == 0
    finally:
        settings.get_settings.cache_clear()
