"""The Debezium/Kafka feed against a real Kafka-protocol broker (tansu): raw tables equal the
source row for row, offsets are committed only after the warehouse commit, crashes at any stage
lose and duplicate nothing, lag is measured."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

import pyarrow as pa
import pytest
from cdc_helpers import Crash, crash_at
from confluent_kafka import Producer
from kafka_helpers import PRODUCER_QUIRK, create_topics

from analytics_assets.lib.errors import EnvelopeError, FeedError
from analytics_assets.lib.feeds.base import Feed
from analytics_assets.lib.feeds.kafka import KafkaFeed
from analytics_assets.lib.feeds.kafka_config import parse_checkpoint

BIG = "€" * 1200
T0 = dt.datetime(2026, 3, 1, 12, 30, 15, 123456, tzinfo=dt.UTC)


def mixed_workload(con, *, rounds: int = 3, start: int = 0) -> None:
    """Inserts, updates, primary-key updates, deletes, NULLs, unicode, numerics and a rolled-back
    transaction, in several transactions."""
    for r in range(start, start + rounds):
        for i in range(6):
            con.insert(
                "users",
                email=f"u{r}-{i}@ex.com ✓",
                full_name=BIG if i % 2 else None,
                country="DE" if i % 3 else None,
            )
            con.insert(
                "orders",
                user_id=i,
                total=Decimal("12345678.91") * (i - 2),
                status="new",
                created_at=T0 + dt.timedelta(days=r, hours=i),
            )
        con.commit()
        users, orders = con.ids("users"), con.ids("orders")
        con.update("users", users[0], email=f"changed-{r}@ex.com")
        con.update("users", users[1], country="FR")  # full_name unchanged (TOAST)
        con.update("orders", orders[-1], total=Decimal("-0.01"), status="paid ✓")
        con.update("users", users[2], id=10_000 + r)  # primary-key update
        con.delete("orders", orders[0])
        con.delete("users", users[3])
        con.commit()
        con.insert("users", email="never@ex.com")  # rolled back: never appears
        con.rollback()


def test_feed_implements_the_protocol(kenv):
    assert isinstance(kenv.feed(), Feed)
    assert kenv.feed().needs_snapshot(["users"], {}) == []
    assert list(kenv.feed().snapshot(["users"], 10)) == []


def test_tansu_quirk_one_record_per_batch(kafka_broker):
    """The tansu quirk worked around everywhere here: with the memory engine a producer that
    batches several records per request got a high watermark lower than the records delivered.
    With `batch.num.messages=1` (PRODUCER_QUIRK) the high watermark is exact."""
    from confluent_kafka import Consumer, TopicPartition

    topic = "quirk.public.t"
    create_topics(kafka_broker, {topic: 1})
    producer = Producer({"bootstrap.servers": kafka_broker, **PRODUCER_QUIRK})
    for i in range(50):
        producer.produce(topic, key=str(i), value=str(i))
    assert producer.flush(30) == 0
    c = Consumer({"bootstrap.servers": kafka_broker, "group.id": "quirk"})
    try:
        assert c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10) == (0, 50)
    finally:
        c.close()


@pytest.mark.parametrize(
    ("mode", "schemas", "partitions"),
    [
        ("precise", True, {"users": 3, "orders": 2}),
        ("string", False, {"users": 1, "orders": 1}),
    ],
)
def test_snapshot_and_stream_equal_the_source(kenv, mode, schemas, partitions):
    kenv.tables = ("users", "orders")
    if not schemas:  # a schemaless topic needs the decimal/timestamp types as hints
        kenv.column_types = {
            "users": {
                "created_at": pa.timestamp("us", tz="UTC"),
                "updated_at": pa.timestamp("us", tz="UTC"),
                "deleted_at": pa.timestamp("us", tz="UTC"),
            },
            "orders": {
                "total": pa.decimal128(12, 2),
                "created_at": pa.timestamp("us", tz="UTC"),
                "paid_at": pa.timestamp("us", tz="UTC"),
                "deleted_at": pa.timestamp("us", tz="UTC"),
                "updated_at": pa.timestamp("us", tz="UTC"),
            },
        }
    # rows that exist before the connector starts arrive as its snapshot (op 'r')
    kenv.execute("insert into users (email, full_name) values ('pre@ex.com', 'Zoë')")
    con = kenv.connector(mode=mode, schemas=schemas, partitions=partitions)
    try:
        con.snapshot()
        mixed_workload(con, rounds=2)
        result = kenv.ingest(batch_size=7, measure_lag=True)
        assert result.caught_up
        assert result.tables["users"].lag_before.pending_changes > 0
        assert result.tables["users"].lag_after.pending_changes == 0
        kenv.assert_raw_equals_source()
        kenv.assert_change_log_has_no_duplicates()
        # the group's committed offsets are the warehouse checkpoint = the end of every topic
        assert kenv.group_committed() == kenv.high_watermarks()
        # more changes later: the next ingest resumes exactly there
        mixed_workload(con, rounds=1, start=2)
        kenv.ingest(batch_size=5)
        kenv.assert_raw_equals_source()
        kenv.assert_change_log_has_no_duplicates()
        ops = dict(kenv.raw("select _op, count(*) from raw.users_changes group by 1"))
        assert ops["r"] == 1 and ops["c"] > 0 and ops["u"] > 0 and ops["d"] > 0
    finally:
        con.close()


@pytest.mark.parametrize("stage", ["decoded", "applied", "committed", "acked"])
def test_crash_at_any_stage_loses_and_duplicates_nothing(kenv, stage):
    kenv.tables = ("users", "orders")
    con = kenv.connector(partitions={"users": 2, "orders": 1})
    try:
        mixed_workload(con, rounds=2)
        before = kenv.group_committed()
        with pytest.raises(Crash):
            kenv.ingest(batch_size=6, fault=crash_at(stage, 2))
        after = kenv.group_committed()
        wh_state = kenv.raw("select table_name, checkpoint from raw._cdc_state")
        committed_by_wh = {t: parse_checkpoint(cp) for t, cp in wh_state}
        for t in kenv.tables:  # the group is never ahead of what the warehouse committed
            for p, off in after[t].items():
                assert off <= committed_by_wh.get(t, {}).get(p, 0)
        if stage == "committed":
            # the warehouse committed batch 2, the crash came before its ack: the group is still
            # at batch 1's checkpoint, behind the warehouse
            assert after != {t: committed_by_wh.get(t, {}) for t in kenv.tables}
        assert before == {t: {} for t in kenv.tables}
        kenv.ingest(batch_size=6)  # the restart
        kenv.assert_raw_equals_source()
        kenv.assert_change_log_has_no_duplicates()
        assert kenv.group_committed() == kenv.high_watermarks()
    finally:
        con.close()


def test_events_re_sent_after_a_connector_restart_are_applied_once(kenv):
    """Debezium re-sends the events after its last committed source offset when it restarts,
    at new Kafka offsets: updates, deletes, a primary-key update and a truncate come twice,
    some already applied, some in the same batch as their first copy. Raw equals the source
    and the change log holds each event once."""
    kenv.tables = ("users", "orders")
    con = kenv.connector(partitions={"users": 2, "orders": 1})
    try:
        mixed_workload(con, rounds=2)
        kenv.ingest(batch_size=6)
        logged = kenv.raw("select count(*) from raw.users_changes")[0][0]
        con.resend(len(con.sent) // 2)  # restart: the second half again (all applied already)
        result = kenv.ingest(batch_size=6)
        assert result.changes == 0 and result.tables["users"].skipped > 0
        assert kenv.raw("select count(*) from raw.users_changes")[0][0] == logged
        kenv.assert_raw_equals_source()
        # a truncate and later inserts, re-sent before the first copies were read
        con.truncate("orders")
        con.commit()
        con.insert("orders", user_id=1, total=Decimal("1.50"), status="new", created_at=T0)
        con.commit()
        mixed_workload(con, rounds=1, start=5)
        con.resend(12)
        kenv.ingest(batch_size=50)
        kenv.assert_raw_equals_source()
        kenv.assert_change_log_has_no_duplicates()
        assert kenv.raw("select count(*) from raw.orders_changes where _op = 't'") == [(1,)]
    finally:
        con.close()


def test_offsets_are_committed_only_after_the_warehouse_commit(kenv):
    kenv.tables = ("users",)
    con = kenv.connector(partitions={"users": 2})
    try:
        for i in range(20):
            con.insert("users", email=f"{i}@ex.com")
            con.commit()
        seen = []

        def fault(stage):
            committed = kenv.group_committed()["users"]
            stored = {t: parse_checkpoint(cp) for t, cp in kenv_state()}.get("users", {})
            seen.append((stage, committed, stored))

        def kenv_state():
            # read the committed warehouse state from a second connection-free snapshot: the
            # DuckDB file is locked by the ingest, so use the feed-visible checkpoint instead
            return [(t, s.checkpoint) for t, s in wh.state().items()]

        feed = kenv.feed()
        wh = kenv.warehouse()
        try:
            from analytics_assets.lib.cdc import ingest

            ingest(feed=feed, warehouse=wh, batch_size=4, measure_lag=False, fault=fault)
        finally:
            wh.close()
        last_acked: dict[int, int] = {}
        for stage, committed, stored in seen:
            if stage in ("decoded", "applied"):
                # before the warehouse commit: the group is where the previous ack left it
                assert committed == last_acked
            elif stage == "committed":
                assert committed == last_acked  # warehouse committed, not acked yet
                assert stored != last_acked
            elif stage == "acked":
                assert committed == stored
                last_acked = committed
        assert last_acked == kenv.high_watermarks()["users"]
        kenv.assert_raw_equals_source()
    finally:
        con.close()


def test_restart_seeks_to_the_warehouse_checkpoint_not_the_group_offset(kenv):
    """After a crash between warehouse commit and ack the group lags the warehouse; the
    warehouse's checkpoint wins on restart (nothing applied twice)."""
    kenv.tables = ("users",)
    con = kenv.connector(partitions={"users": 1})
    try:
        for i in range(10):
            con.insert("users", email=f"{i}@ex.com")
        con.commit()
        with pytest.raises(Crash):
            kenv.ingest(batch_size=100, fault=crash_at("committed"))
        assert kenv.group_committed()["users"] == {}  # never acked
        res = kenv.ingest(batch_size=100)
        assert res.changes == 0  # all of it was already in the warehouse
        assert kenv.group_committed()["users"] == {0: 10}  # open() acked the warehouse state
        assert kenv.raw("select count(*) from raw.users_changes") == [(10,)]
    finally:
        con.close()


def test_lag_and_status(kenv):
    kenv.tables = ("users", "orders")
    con = kenv.connector(partitions={"users": 2, "orders": 1})
    try:
        for i in range(5):
            con.insert("users", email=f"{i}@ex.com")
        con.commit()
        con.delete("users", con.ids("users")[0])  # a delete + its tombstone
        con.commit()
        feed = kenv.feed()
        lag = feed.lag({})
        assert lag["users"].pending_changes == 7
        assert lag["users"].position_lag_bytes == 7
        assert lag["users"].oldest_commit_ts is not None
        assert 0 <= lag["users"].seconds_behind < 120
        assert lag["orders"].pending_changes == 0 and lag["orders"].seconds_behind == 0
        status = feed.slot_status()
        assert status["kind"] == "kafka" and status["reachable"]
        assert status["tables"]["users"]["offset_lag"] == 7
        assert status["missing_topics"] == []
        feed.close()
        kenv.ingest()
        feed = kenv.feed()
        assert feed.lag()["users"].pending_changes == 0  # from the group's committed offsets
        assert feed.slot_status()["total_offset_lag"] == 0
        feed.close()
    finally:
        con.close()


def test_strict_feed_raises_a_clear_error_on_a_malformed_record_and_applies_nothing(kenv):
    """With `dead_letters=False` a bad record stops the batch (test_dead_letters.py: default)."""
    kenv.tables = ("users",)
    con = kenv.connector(partitions={"users": 1})
    try:
        con.insert("users", email="ok@ex.com")
        con.commit()
        con.producer.produce(con.topic("users"), key=b'{"id": 99}', value=b'{"payload": {"op": "c"')
        con.producer.flush(10)
        with pytest.raises(EnvelopeError, match=r"partition 0 offset 1: not JSON"):
            kenv.ingest(feed=kenv.feed(dead_letters=False))
        assert kenv.group_committed()["users"] == {}
    finally:
        con.close()


def test_strict_feed_refuses_a_record_of_another_table(kenv):
    kenv.tables = ("users",)
    create_topics(kenv.bootstrap, {f"{kenv.prefix}.public.users": 1})
    p = Producer({"bootstrap.servers": kenv.bootstrap, **PRODUCER_QUIRK})
    value = {"op": "c", "after": {"id": 1}, "source": {"table": "orders", "ts_ms": 1}}
    p.produce(f"{kenv.prefix}.public.users", key=b'{"id": 1}', value=json.dumps(value))
    p.flush(10)
    with pytest.raises(EnvelopeError, match="table 'orders', expected 'users'"):
        kenv.ingest(feed=kenv.feed(dead_letters=False))


def test_exactly_once_settings_are_enforced():
    base = {"bootstrap.servers": "x:9092", "group.id": "g"}
    feed = KafkaFeed(base, topic_prefix="app", tables=["users"])
    assert feed.config["enable.auto.commit"] == "false"
    assert feed.config["isolation.level"] == "read_committed"
    with pytest.raises(FeedError, match="enable.auto.commit"):
        KafkaFeed({**base, "enable.auto.commit": "true"}, topic_prefix="app", tables=["users"])
    with pytest.raises(FeedError, match="group.id"):
        KafkaFeed({"bootstrap.servers": "x:9092"}, topic_prefix="app", tables=["users"])


def test_make_feed_reads_cdc_feed_and_kafka_variables(monkeypatch):
    from analytics_assets import settings
    from analytics_assets.lib import cdc

    monkeypatch.setenv("CDC_FEED", "kafka")
    monkeypatch.setenv("CDC_TOPIC_PREFIX", "shop")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "b1:9092")
    monkeypatch.setenv("KAFKA_GROUP_ID", "analytics-cdc")
    monkeypatch.setenv("KAFKA_MAX_POLL_INTERVAL_MS", "900000")
    settings.get_settings.cache_clear()
    try:
        feed = cdc.make_feed()
        assert isinstance(feed, KafkaFeed)
        assert feed.topic("orders") == "shop.public.orders"
        assert feed.config["group.id"] == "analytics-cdc"
        assert feed.config["max.poll.interval.ms"] == "900000"
        monkeypatch.setenv("CDC_FEED", "debezium")
        settings.get_settings.cache_clear()
        with pytest.raises(settings.ConfigError, match="CDC_FEED"):
            settings.get_settings()
    finally:
        settings.get_settings.cache_clear()
