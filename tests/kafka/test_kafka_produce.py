"""Produce requests as Kafka Connect's producers send them: compressed, and batched.

Compression: every codec librdkafka offers (gzip, snappy, lz4, zstd) is accepted by the broker
(tansu) and the feed reads the compressed records exactly. Batching: tansu's memory engine keeps
and serves every record of a multi-record batch at the right offset, but reports a high
watermark below them (the quirk of DESIGN.md; its postgres engine, which might not have it, is
not built into the wheel: "FeatureNotEnabled"). The feed reads a partition up to its high
watermark, so ingests through tansu produce one record per request; the batched case is pinned
here at the broker, where the difference is.
"""

from __future__ import annotations

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from kafka_helpers import PRODUCER_QUIRK, create_topics


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_compressed_records_are_ingested_exactly(kenv, codec):
    kenv.tables = ("users",)
    con = kenv.connector(producer={**PRODUCER_QUIRK, "compression.type": codec})
    try:
        for i in range(5):
            con.insert("users", email=f"u{i}@ex.com", full_name="x" * 300)
        con.commit()
        first, *_ = con.ids("users")
        con.update("users", first, full_name="y")
        con.delete("users", first + 1)
        con.commit()
        assert kenv.ingest(batch_size=3).caught_up
    finally:
        con.close()
    kenv.assert_raw_equals_source()
    kenv.assert_change_log_has_no_duplicates()
    assert kenv.group_committed() == kenv.high_watermarks() == {"users": {0: 8}}


def test_batched_compressed_records_keep_their_offsets_but_not_the_high_watermark(kafka_broker):
    topic = "batched.public.t"
    create_topics(kafka_broker, {topic: 1})
    producer = Producer(
        {
            "bootstrap.servers": kafka_broker,
            "compression.type": "zstd",
            "linger.ms": 1000,  # all 50 in one request, as a Kafka Connect producer batches
            "batch.num.messages": 1000,
        }
    )
    offsets: list[int] = []
    for i in range(50):
        producer.produce(
            topic, key=str(i), value=str(i), on_delivery=lambda e, m: offsets.append(m.offset())
        )
    assert producer.flush(30) == 0
    assert sorted(offsets) == list(range(50))
    c = Consumer({"bootstrap.servers": kafka_broker, "group.id": "batched"})
    try:
        c.assign([TopicPartition(topic, 0, 0)])
        read = []
        while len(read) < 50:
            m = c.poll(10)
            assert m is not None and m.error() is None
            read.append((m.offset(), m.value()))
        assert read == [(i, str(i).encode()) for i in range(50)]
        low, high = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    finally:
        c.close()
    assert low == 0 and high < 50  # the quirk: a real broker says 50
