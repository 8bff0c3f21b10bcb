"""What a real Debezium deployment puts on Kafka besides the table topics, and a schema change in
the middle of a stream, through the Kafka feed and the real broker: heartbeat records
(`__debezium-heartbeat.<prefix>`), transaction metadata (`<prefix>.transaction` BEGIN/END records
and a `transaction` block in every change event), and a column the source adds between two
events of one batch."""

from __future__ import annotations

from confluent_kafka import Consumer, TopicPartition


def test_heartbeat_and_transaction_topics_leave_the_feed_untouched(kenv):
    kenv.tables = ("users",)
    con = kenv.connector(transaction_metadata=True)
    try:
        con.heartbeat()
        con.insert("users", email="a@ex.com", full_name="A")
        con.insert("users", email="b@ex.com", full_name="B")
        con.commit()
        con.heartbeat()
        (first,) = con.ids("users")[:1]
        con.update("users", first, full_name="A2")
        con.commit()
        result = kenv.ingest()
    finally:
        con.close()
    assert result.caught_up
    kenv.assert_raw_equals_source()
    kenv.assert_change_log_has_no_duplicates()
    # every change event carried its transaction block, and none was quarantined
    assert kenv.raw(
        "select count(*) from information_schema.tables where table_name = '_dead_letters'"
    ) == [(0,)]
    assert kenv.group_committed() == kenv.high_watermarks()
    others = [f"__debezium-heartbeat.{kenv.prefix}", f"{kenv.prefix}.transaction"]
    c = Consumer({"bootstrap.servers": kenv.bootstrap, "group.id": kenv.group})
    try:
        ends = [c.get_watermark_offsets(TopicPartition(t, 0), timeout=10)[1] for t in others]
        committed = c.committed([TopicPartition(t, 0) for t in others], timeout=10)
    finally:
        c.close()
    assert ends == [2, 4]  # two heartbeats; BEGIN + END of two transactions
    assert [tp.offset for tp in committed] == [-1001, -1001]  # the feed never read them


def test_a_column_added_between_two_events_of_one_batch_arrives(kenv):
    kenv.tables = ("users",)
    con = kenv.connector()
    try:
        con.insert("users", email="old@ex.com", full_name="Old")
        con.commit()
        con.alter("users", "add column nickname text")
        con.insert("users", email="new@ex.com", full_name="New", nickname="newbie")
        (old_id,) = con.ids("users")[:1]
        con.update("users", old_id, nickname="oldie")
        con.commit()
        result = kenv.ingest()  # one batch: events with and without the column
    finally:
        con.close()
    assert result.caught_up
    kenv.assert_raw_equals_source()
    assert kenv.raw("select email, nickname from raw.users order by id") == [
        ("old@ex.com", "oldie"),
        ("new@ex.com", "newbie"),
    ]
    assert kenv.raw("select _op, nickname from raw.users_changes order by _lsn, _seq") == [
        ("c", None),
        ("c", "newbie"),
        ("u", "oldie"),
    ]
