"""The test connector's records (kafka_helpers.Connector) against Debezium's documentation:
the JSON examples of the PostgreSQL connector page (debezium_doc_examples.json, copied with
their source) field by field, and the documented type mappings per decimal.handling.mode and
time.precision.mode, each mode's events then ingested through the Kafka feed exactly.

Where the page and Debezium's code disagree the code wins, and the test says so: `snapshot` is
a string enum (the page's example shows a boolean, from before 1.x), an update under REPLICA
IDENTITY DEFAULT has `before: null` (PostgresChangeRecordEmitter: pgoutput sends no old tuple;
the page's example shows the key), the page's update/delete/truncate `source` blocks leave out
`sequence` that its create example and the code have, and `source.ts_us`/`ts_ns` are optional in
the code's schema, required in the page's.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from decimal import Decimal
from pathlib import Path

import psycopg2
import pytest

DOC = json.loads((Path(__file__).parent / "debezium_doc_examples.json").read_text())
DOC_SOURCE = DOC["create"]["payload"]["source"]
CUSTOMERS = (
    "create table customers (id serial primary key, first_name varchar(255) not null, "
    "last_name varchar(255) not null, email varchar(255) not null)"
)


def kind(value) -> str:
    return type(value).__name__


def events(con, topic: str) -> list[tuple[dict | None, dict | None]]:
    """(key, value) of every record the connector produced to `topic` (tombstones: value None)."""
    return [
        (json.loads(k) if k else None, json.loads(v) if v else None)
        for t, k, v in con.sent
        if t == topic
    ]


def clock(url: str) -> int:
    """The source server's clock, epoch microseconds (to bracket commit times causally)."""
    with psycopg2.connect(url) as c, c.cursor() as cur:
        cur.execute("select (extract(epoch from clock_timestamp()) * 1000000)::bigint")
        return cur.fetchone()[0]


def test_change_events_have_the_documented_envelope_source_and_values(kenv):
    kenv.execute(
        CUSTOMERS,
        "insert into customers (first_name, last_name, email) values "
        "('Anne', 'Kretchmar', 'annek@noanswer.org'), ('Sally', 'Thomas', 'sally@ex.com')",
        "create table notes (id serial primary key, body text)",
        "insert into notes (body) values ('n')",
    )
    kenv.tables = ("customers", "notes")
    con = kenv.connector()
    try:
        con.snapshot()
        before = clock(kenv.url)
        con.insert("customers", first_name="Ed", last_name="Walker", email="ed@walker.com")
        con.commit()
        after_first = clock(kenv.url)
        con.update("customers", 1, first_name="Anne Marie")
        con.delete("customers", 2)
        con.commit()
        con.truncate("customers")
        con.commit()
    finally:
        con.close()
    records = events(con, con.topic("customers"))
    values = [v for _, v in records if v is not None]
    ops = [v["payload"]["op"] for v in values]
    assert ops == ["r", "r", "c", "u", "d", "t"]

    # the value schema: the documentation's, for the same table
    doc_schema, schema = DOC["create"]["schema"], values[2]["schema"]
    assert [f["field"] for f in schema["fields"]] == [f["field"] for f in doc_schema["fields"]]
    assert schema["fields"][1]["fields"] == doc_schema["fields"][1]["fields"]  # the row struct
    assert schema["fields"][1]["name"].endswith(".customers.Value")
    doc_src = {f["field"]: f for f in doc_schema["fields"][2]["fields"]}
    src = {f["field"]: f for f in schema["fields"][2]["fields"]}
    assert set(src) == set(doc_src) | {"sequence"}  # the page's schema leaves sequence out
    for name, f in doc_src.items():
        # snapshot: a string enum in the code, a boolean on the page; ts_us / ts_ns: optional
        # in the code (SchemaFactory.sourceInfoSchemaBuilder), required on the page
        if name not in ("snapshot", "ts_us", "ts_ns"):
            assert (f["type"], f["optional"]) == (src[name]["type"], src[name]["optional"]), name
    assert src["snapshot"]["name"] == "io.debezium.data.Enum"

    # the payload: the documentation's keys per op, its source block, its value types
    for value, doc in zip(values[2:], ("create", "update", "delete", "truncate"), strict=True):
        payload, doc_payload = value["payload"], DOC[doc]["payload"]
        assert set(payload) == set(doc_payload), doc
        assert set(payload["source"]) == set(DOC_SOURCE), doc
        for name, doc_value in DOC_SOURCE.items():
            if name != "snapshot":
                assert kind(payload["source"][name]) == kind(doc_value), (doc, name)
        for name in ("ts_ms", "ts_us", "ts_ns"):
            assert kind(payload[name]) == kind(doc_payload[name])
    create, update, delete, truncate = (v["payload"] for v in values[2:])
    assert create["after"] == {
        "id": 3,
        "first_name": "Ed",
        "last_name": "Walker",
        "email": "ed@walker.com",
    }
    assert update["before"] is None  # REPLICA IDENTITY DEFAULT: no old tuple for an update
    assert update["after"]["first_name"] == "Anne Marie"
    # a delete's old tuple is the key; Debezium fills the NOT NULL columns with their default
    assert delete["before"] == {"id": 2, "first_name": "", "last_name": "", "email": ""}
    assert delete["after"] is None
    # the tombstone right after the delete, with its key
    delete_at = [i for i, (_, v) in enumerate(records) if v and v["payload"]["op"] == "d"][0]
    assert records[delete_at + 1] == (records[delete_at][0], None)
    assert records[delete_at][0]["payload"] == {"id": 2}
    assert records[-1][0] is None  # a truncate has no key

    # source values: commit time in three units, the record's LSN, the transaction
    for p in (create, update, delete, truncate):
        s = p["source"]
        assert (s["ts_ms"], s["ts_ns"]) == (s["ts_us"] // 1000, s["ts_us"] * 1000)
        assert (p["ts_ms"], p["ts_ns"] // 1000) == (p["ts_us"] // 1000, p["ts_us"])
        assert s["snapshot"] == "false" and s["xmin"] is None
        assert json.loads(s["sequence"])[1] == str(s["lsn"])
        assert (s["connector"], s["db"], s["schema"], s["table"]) == (
            "postgresql",
            kenv.db,
            "public",
            "customers",
        )
    assert before <= create["source"]["ts_us"] <= after_first  # the commit happened in between
    assert update["source"]["txId"] == delete["source"]["txId"] != create["source"]["txId"]
    assert create["source"]["lsn"] < update["source"]["lsn"] < delete["source"]["lsn"]
    assert json.loads(create["source"]["sequence"])[0] is None  # no commit seen before
    # later transactions name the previous commit, which precedes their records
    previous_commit = int(json.loads(update["source"]["sequence"])[0])
    assert create["source"]["lsn"] < previous_commit < update["source"]["lsn"]

    # the snapshot: one position and transaction, first / per table / last marks
    notes = [v["payload"] for _, v in events(con, con.topic("notes")) if v]
    snap = [v["payload"] for v in values[:2]] + notes[:1]
    assert [p["source"]["snapshot"] for p in snap] == ["first", "last_in_data_collection", "last"]
    assert len({(p["source"]["lsn"], p["source"]["txId"]) for p in snap}) == 1
    assert snap[0]["source"]["lsn"] < create["source"]["lsn"]


def test_replica_identity_full_gives_old_images_and_keeps_toast_values(kenv):
    kenv.execute(CUSTOMERS, "alter table customers add column bio text")
    kenv.tables = ("customers",)
    # incompressible enough to be stored out of line (TOAST)
    big = "".join(hashlib.sha256(str(i).encode()).hexdigest() for i in range(300))
    con = kenv.connector()
    try:
        con.insert("customers", first_name="A", last_name="B", email="a@b", bio=big)
        con.commit()
        con.update("customers", 1, first_name="C")  # bio unchanged: not in the WAL
        con.commit()
        con.alter("customers", "replica identity full")
        con.update("customers", 1, first_name="D")
        con.delete("customers", 1)
        con.commit()
    finally:
        con.close()
    _, default_u, full_u, full_d = (
        v["payload"] for _, v in events(con, con.topic("customers")) if v
    )
    assert default_u["before"] is None
    assert default_u["after"]["bio"] == "__debezium_unavailable_value"
    assert full_u["before"]["first_name"] == "C" and full_u["after"]["bio"] == big
    assert full_d["before"] == {
        "id": 1,
        "first_name": "D",
        "last_name": "B",
        "email": "a@b",
        "bio": big,
    }


def test_transaction_metadata_has_the_documented_records_and_event_block(kenv):
    kenv.execute(CUSTOMERS, "create table notes (id serial primary key, body text)")
    kenv.tables = ("customers", "notes")
    con = kenv.connector(transaction_metadata=True)
    try:
        con.insert("customers", first_name="A", last_name="B", email="a@b")
        con.insert("notes", body="x")
        con.insert("customers", first_name="C", last_name="D", email="c@d")
        con.commit()
    finally:
        con.close()
    (bk, begin), (ek, end) = (
        (k["payload"], v["payload"]) for k, v in events(con, f"{kenv.prefix}.transaction")
    )
    assert set(begin) == set(DOC["transaction_begin"])
    assert set(end) == set(DOC["transaction_end"])
    assert (begin["status"], end["status"]) == ("BEGIN", "END")
    assert begin["id"] == end["id"] == bk["id"] == ek["id"]
    assert end["event_count"] == 3 and begin["event_count"] is None
    assert end["data_collections"] == [
        {"data_collection": "public.customers", "event_count": 2},
        {"data_collection": "public.notes", "event_count": 1},
    ]
    xid, lsn = begin["id"].split(":")  # txID:LSN, as documented
    blocks = [
        v["payload"]["transaction"]
        for t in ("customers", "notes")
        for _, v in events(con, con.topic(t))
    ]
    doc_block = DOC["transaction_enriched_event"]["transaction"]
    assert all(set(b) == set(doc_block) for b in blocks)
    assert sorted((b["total_order"], b["data_collection_order"]) for b in blocks) == [
        (1, 1),
        (2, 1),
        (3, 2),
    ]
    first = events(con, con.topic("customers"))[0][1]["payload"]["source"]
    assert (int(xid), int(lsn)) == (first["txId"], first["lsn"])


# -- decimal.handling.mode x time.precision.mode -------------------------------------------------

TYPES = (
    "create table typed (id bigint primary key, amount numeric(10, 2), free numeric, "
    "ts3 timestamp(3), ts timestamp, t3 time(3), t time, d date)"
)
ROW = {
    "amount": "12.50",
    "free": "3.14159",
    "ts3": "2026-03-01 12:00:00.123",
    "ts": "2026-03-01 12:00:00.123456",
    "t3": "12:00:00.5",
    "t": "12:00:00.123456",
    "d": "2026-03-01",
}
MS = 1_772_366_400_123  # 2026-03-01 12:00:00.123 UTC in epoch milliseconds
DAYS = 20_513  # 2026-03-01 in days since the epoch
# (decimal mode, time mode) -> column -> (schema type, semantic name, encoded value)
EXPECTED_AMOUNT = {
    "precise": ("bytes", "org.apache.kafka.connect.data.Decimal", "BOI="),  # 1250, scale 2
    "string": ("string", None, "12.50"),
    "double": ("double", None, 12.5),
}
EXPECTED_TIME = {
    "adaptive_time_microseconds": {
        "ts3": ("int64", "io.debezium.time.Timestamp", MS),
        "ts": ("int64", "io.debezium.time.MicroTimestamp", MS * 1000 + 456),
        "t3": ("int64", "io.debezium.time.MicroTime", 43_200_500_000),
        "t": ("int64", "io.debezium.time.MicroTime", 43_200_123_456),
        "d": ("int32", "io.debezium.time.Date", DAYS),
    },
    "adaptive": {
        "ts3": ("int64", "io.debezium.time.Timestamp", MS),
        "ts": ("int64", "io.debezium.time.MicroTimestamp", MS * 1000 + 456),
        "t3": ("int32", "io.debezium.time.Time", 43_200_500),
        "t": ("int64", "io.debezium.time.MicroTime", 43_200_123_456),
        "d": ("int32", "io.debezium.time.Date", DAYS),
    },
    "connect": {  # milliseconds: loses the microseconds, as documented
        "ts3": ("int64", "org.apache.kafka.connect.data.Timestamp", MS),
        "ts": ("int64", "org.apache.kafka.connect.data.Timestamp", MS),
        "t3": ("int32", "org.apache.kafka.connect.data.Time", 43_200_500),
        "t": ("int32", "org.apache.kafka.connect.data.Time", 43_200_123),
        "d": ("int32", "org.apache.kafka.connect.data.Date", DAYS),
    },
    "microseconds": {
        "ts3": ("int64", "io.debezium.time.MicroTimestamp", MS * 1000),
        "ts": ("int64", "io.debezium.time.MicroTimestamp", MS * 1000 + 456),
        "t3": ("int64", "io.debezium.time.MicroTime", 43_200_500_000),
        "t": ("int64", "io.debezium.time.MicroTime", 43_200_123_456),
        "d": ("int32", "io.debezium.time.Date", DAYS),
    },
    "nanoseconds": {
        "ts3": ("int64", "io.debezium.time.NanoTimestamp", MS * 10**6),
        "ts": ("int64", "io.debezium.time.NanoTimestamp", (MS * 1000 + 456) * 1000),
        "t3": ("int64", "io.debezium.time.NanoTime", 43_200_500_000_000),
        "t": ("int64", "io.debezium.time.NanoTime", 43_200_123_456_000),
        "d": ("int32", "io.debezium.time.Date", DAYS),
    },
}
MODES = [
    ("precise", "adaptive_time_microseconds"),
    ("string", "adaptive"),
    ("double", "connect"),
    ("precise", "microseconds"),
    ("string", "nanoseconds"),
]


@pytest.mark.parametrize(("decimal_mode", "time_mode"), MODES)
def test_each_mode_encodes_as_documented_and_arrives_exactly(kenv, decimal_mode, time_mode):
    kenv.execute(TYPES)
    kenv.tables = ("typed",)
    con = kenv.connector(mode=decimal_mode, time_mode=time_mode)
    try:
        con.insert("typed", id=1, **ROW)
        con.commit()
        assert kenv.ingest().caught_up
    finally:
        con.close()
    [(_, value)] = events(con, con.topic("typed"))
    fields = {f["field"]: f for f in value["schema"]["fields"][1]["fields"]}
    after = value["payload"]["after"]
    expected = {"amount": EXPECTED_AMOUNT[decimal_mode], **EXPECTED_TIME[time_mode]}
    for column, (type_, name, encoded) in expected.items():
        f = fields[column]
        assert (f["type"], f.get("name"), after[column]) == (type_, name, encoded), column
    if decimal_mode == "precise":
        assert fields["amount"]["parameters"] == {"scale": "2", "connect.decimal.precision": "10"}
        assert fields["free"]["name"] == "io.debezium.data.VariableScaleDecimal"

    [row] = kenv.raw("select amount, ts3, ts, t3, t, d from raw.typed")
    amount, ts3, ts, t3, t, d = row
    assert Decimal(str(amount)) == Decimal("12.50")
    lossy = time_mode == "connect"
    assert ts3 == dt.datetime(2026, 3, 1, 12, 0, 0, 123000)
    assert ts == dt.datetime(2026, 3, 1, 12, 0, 0, 123000 if lossy else 123456)
    assert d == dt.date(2026, 3, 1)
    assert str(t3).startswith("12:00:00.5")
    assert str(t).startswith("12:00:00.123" if lossy else "12:00:00.123456")
