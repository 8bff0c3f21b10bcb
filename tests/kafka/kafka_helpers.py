"""Kafka test helpers: a stand-in for Debezium's Postgres connector and a CdcEnv that ingests
through the Kafka feed.

`Connector` runs real statements on the embedded source database and emits, after the
transaction commits (rolled-back transactions emit nothing), the change events Debezium's
Postgres connector (JSON converter) would emit for them, in the documented format
(debezium_format.py, checked against the documentation's examples in test_debezium_format.py):
`c` with the inserted row, `u` with the new row, `d` with the old row + a tombstone, a
primary-key update as delete(old key) + tombstone + create(new key), `t` for a truncate, `r` for
snapshot reads. Row images come from the source (`returning *`), positions, transaction ids and
commit times from the source's WAL, so the raw tables can be compared with the source row for
row.

Producers use `batch.num.messages=1` unless a test passes its own settings: tansu's memory
engine reported a high watermark lower than the records delivered when a request carried
several records (DESIGN.md); one record per request is exact.
test_kafka_feed.py::test_tansu_quirk_one_record_per_batch pins that.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import sys
import time
import uuid
from pathlib import Path

import debezium_format as dbz
import psycopg2
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "cdc"))

from cdc_helpers import CdcEnv  # noqa: E402

from analytics_assets.dev import broker as dev_broker  # noqa: E402
from analytics_assets.dev.broker import free_port  # noqa: E402, F401 - re-exported for the tests
from analytics_assets.lib.debezium import PLACEHOLDER  # noqa: E402
from analytics_assets.lib.feeds.kafka import KafkaFeed  # noqa: E402
from analytics_assets.lib.warehouse.duckdb import DuckDBWarehouse  # noqa: E402


def tansu_binary() -> Path:
    import pytest

    try:
        return dev_broker.tansu_binary()
    except FileNotFoundError as exc:
        pytest.fail(str(exc), pytrace=False)


PRODUCER_QUIRK = {"batch.num.messages": 1, "linger.ms": 0}  # tansu memory engine: see above


def create_topics(bootstrap: str, partitions: dict[str, int], exist_ok: bool = False) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for fut in admin.create_topics(
        [NewTopic(t, n, 1) for t, n in partitions.items()], operation_timeout=10
    ).values():
        try:
            fut.result()
        except KafkaException as exc:
            if not (exist_ok and exc.args[0].name() == "TOPIC_ALREADY_EXISTS"):
                raise


class Connector:
    """Debezium's Postgres connector, emulated for `tables` of the source at `url`.

    Each event's position and time come from the source's own WAL, decoded by a logical
    replication slot (test_decoding) of the connector's: `source.lsn` is the WAL record
    of the change, `txId` its transaction, `ts_ms`/`ts_us`/`ts_ns` its commit time, `sequence`
    `[previous commit LSN, lsn]`, and an unchanged TOAST value is the placeholder when the WAL
    lacks it. `before` follows the table's REPLICA IDENTITY: FULL has the old row; DEFAULT has
    no update image and a delete image of the key with Debezium's defaults for the other
    columns. `mode` is decimal.handling.mode, `time_mode` time.precision.mode,
    `transaction_metadata` provide.transaction.metadata (BEGIN/END records on
    `<prefix>.transaction`, a `transaction` block in each event), `producer` extra producer
    settings (batching, compression).
    """

    def __init__(
        self,
        url: str,
        bootstrap: str,
        prefix: str,
        tables,
        *,
        mode: str = "precise",
        time_mode: str = "adaptive_time_microseconds",
        schemas: bool = True,
        partitions: dict[str, int] | None = None,
        transaction_metadata: bool = False,
        producer: dict | None = None,
    ):
        self.url = url
        self.bootstrap = bootstrap
        self.prefix = prefix
        self.tables = tuple(tables)
        self.mode = mode
        self.time_mode = time_mode
        self.schemas = schemas
        self.transaction_metadata = transaction_metadata
        self.db = url.rsplit("/", 1)[1].split("?")[0]
        self.conn = psycopg2.connect(url)
        with self.conn.cursor() as cur:  # row images as text, in the form Debezium reads them
            cur.execute("set timezone = 'UTC'; set datestyle = 'ISO, YMD'")
            cur.execute("set extra_float_digits = 3; set bytea_output = 'hex'")
        self.conn.commit()
        # A slot of its own, active only while a call reads it, so that dropping the test
        # database (which drops inactive slots) also cleans up after a connector never closed.
        self.wal = psycopg2.connect(url)
        self.wal.autocommit = True
        self.slot = f"dbz_{uuid.uuid4().hex[:12]}"
        with self.wal.cursor() as cur:
            cur.execute(
                "select pg_create_logical_replication_slot(%s, 'test_decoding')", (self.slot,)
            )
        self.last_commit_lsn: int | None = None
        self.pg_types: dict[str, list[str]] = {}
        self.identity: dict[str, str] = {}
        self.fields = {t: self._fields(t) for t in self.tables}
        topics = {self.topic(t): (partitions or {}).get(t, 1) for t in self.tables}
        if transaction_metadata:
            topics[f"{prefix}.transaction"] = 1
        create_topics(bootstrap, topics)
        self.producer = Producer(
            {"bootstrap.servers": bootstrap, **(PRODUCER_QUIRK if producer is None else producer)}
        )
        self.pending: list[tuple[str, str, dict | None, dict | None]] = []  # one per statement
        self.sent: list[tuple[str, bytes | None, bytes | None]] = []  # what resend() repeats
        self.produced = 0

    def topic(self, table: str) -> str:
        return f"{self.prefix}.public.{table}"

    def _fields(self, table: str) -> list[dict]:
        with self.conn.cursor() as cur:
            cur.execute(
                "select attname, format_type(atttypid, atttypmod), not attnotnull "
                "from pg_attribute where attrelid = %s::regclass and attnum > 0 "
                "and not attisdropped order by attnum",
                (table,),
            )
            rows = cur.fetchall()
            cur.execute("select relreplident from pg_class where oid = %s::regclass", (table,))
            self.identity[table] = cur.fetchone()[0]
        self.conn.rollback()
        self.pg_types[table] = [t for _, t, _ in rows]
        return [dbz.field(n, t, self.mode, opt, self.time_mode) for n, t, opt in rows]

    def alter(self, table: str, ddl: str) -> None:
        """A schema change on the source (`alter table <table> <ddl>`), committed; the events
        after it carry the new schema, as Debezium's do after the next Relation message."""
        with self.conn.cursor() as cur:
            cur.execute(f"alter table {table} {ddl}")
        self.conn.commit()
        self.fields[table] = self._fields(table)

    def _as_text(self, table: str) -> str:
        """The select list of a row image as text (arrays as JSON, to rebuild their elements)."""
        cols = []
        for f, pg_type in zip(self.fields[table], self.pg_types[table], strict=True):
            ident = '"' + f["field"].replace('"', '""') + '"'
            cols.append(f"to_json({ident})::text" if pg_type.endswith("[]") else f"{ident}::text")
        return ", ".join(cols)

    # -- source statements (in the connector's open transaction) -----------------------------

    def _row(self, cur, table: str) -> dict | None:
        row = cur.fetchone()
        if row is None:
            return None
        names = [f["field"] for f in self.fields[table]]
        return dict(zip(names, row, strict=True))

    def insert(self, table: str, **values) -> dict | None:
        cols = list(values)
        with self.conn.cursor() as cur:
            cur.execute(
                f"insert into {table} ({', '.join(cols)}) values ({', '.join(['%s'] * len(cols))}) "  # noqa: S608
                f"returning {self._as_text(table)}",
                list(values.values()),
            )
            after = self._row(cur, table)
        self.pending.append((table, "c", None, after))
        return after

    def update(self, table: str, row_id: int, **values) -> None:
        with self.conn.cursor() as cur:
            cur.execute(
                f"select {self._as_text(table)} from {table} where id = %s for update",  # noqa: S608
                (row_id,),
            )
            before = self._row(cur, table)
            if before is None:
                return
            sets = ", ".join(f"{c} = %s" for c in values)
            cur.execute(
                f"update {table} set {sets} where id = %s returning {self._as_text(table)}",  # noqa: S608
                [*values.values(), row_id],
            )
            after = self._row(cur, table)
        self.pending.append((table, "u", before, after))

    def delete(self, table: str, row_id: int) -> None:
        with self.conn.cursor() as cur:
            cur.execute(
                f"delete from {table} where id = %s returning {self._as_text(table)}",  # noqa: S608
                (row_id,),
            )
            before = self._row(cur, table)
        if before is not None:
            self.pending.append((table, "d", before, None))

    def truncate(self, table: str) -> None:
        with self.conn.cursor() as cur:
            cur.execute(f"truncate {table}")
        self.pending.append((table, "t", None, None))

    def resend(self, count: int) -> None:
        """A connector restart: Debezium re-emits the events after its last committed source
        offset, byte for byte, at new Kafka offsets. Here: the last `count` records sent."""
        for topic, key, value in self.sent[len(self.sent) - count :]:
            self.producer.produce(topic, key=key, value=value)
            self.produced += 1
        self.producer.flush(30)

    def ids(self, table: str) -> list[int]:
        with self.conn.cursor() as cur:
            cur.execute(f"select id from {table} order by id")  # noqa: S608
            return [r[0] for r in cur.fetchall()]

    def _decoded(self) -> list[tuple[int, int, str]]:
        """(lsn, xid, text) of every change the slot decoded since the last call."""
        with self.wal.cursor() as cur:
            cur.execute(
                "select lsn - '0/0'::pg_lsn, xid::text::bigint, data "
                "from pg_logical_slot_get_changes(%s, null, null, 'include-xids', '1', "
                "'include-timestamp', '1', 'skip-empty-xacts', '1')",
                (self.slot,),
            )
            return [(int(lsn), xid, data) for lsn, xid, data in cur.fetchall()]

    def commit(self) -> None:
        with self.conn.cursor() as cur:
            cur.execute("select pg_current_xact_id_if_assigned()::text::bigint")
            xid = cur.fetchone()[0]
        self.conn.commit()
        statements, self.pending = self.pending, []
        if xid is None:  # nothing written
            return
        mine = [r for r in self._decoded() if r[1] == xid]
        changes = [r for r in mine if r[2].startswith("table ")]
        [(commit_lsn, _, commit_text)] = [r for r in mine if r[2].startswith("COMMIT")]
        assert len(changes) == len(statements), (changes, statements)
        commit_us = _commit_micros(commit_text)
        events = []
        for (table, op, before, after), (lsn, _, text) in zip(statements, changes, strict=True):
            after = self._toast_placeholders(table, before, after, text) if op == "u" else after
            if op == "u" and after["id"] != before["id"]:  # a primary-key update: delete+create
                events += [(table, "d", before, None, lsn), (table, "c", None, after, lsn)]
            else:
                events.append((table, op, before, after, lsn))
        self._emit_transaction(events, xid, commit_us, "false")
        self.last_commit_lsn = commit_lsn
        self.producer.flush(30)

    def rollback(self) -> None:
        self.conn.rollback()
        self.pending.clear()

    def snapshot(self) -> None:
        """Debezium's initial snapshot: an `r` event per current row, all at the snapshot's WAL
        position and transaction, `snapshot` marking the first, per-table and last records."""
        with self.conn.cursor() as cur:
            cur.execute("select pg_current_wal_lsn() - '0/0'::pg_lsn, txid_current()")
            lsn, xid = (int(v) for v in cur.fetchone())
        read = []
        for table in self.tables:
            with self.conn.cursor() as cur:
                cur.execute(f"select {self._as_text(table)} from {table} order by id")  # noqa: S608
                rows = cur.fetchall()
            names = [f["field"] for f in self.fields[table]]
            read.append((table, [dict(zip(names, r, strict=True)) for r in rows]))
        self.conn.rollback()
        marks = dbz.snapshot_markers([len(rows) for _, rows in read])
        now_us = time.time_ns() // 1000  # a snapshot record's time is when it was read
        for (table, rows), table_marks in zip(read, marks, strict=True):
            for row, mark in zip(rows, table_marks, strict=True):
                source = self._source(table, now_us, mark, None, lsn, xid)
                self._send_event(table, "r", None, row, source, None)
        self.producer.flush(30)

    def heartbeat(self) -> None:
        """A record on `__debezium-heartbeat.<prefix>` (heartbeat.interval.ms)."""
        topic = f"__debezium-heartbeat.{self.prefix}"
        create_topics(self.bootstrap, {topic: 1}, exist_ok=True)
        key, value = dbz.heartbeat_record(self.prefix, time.time_ns() // 10**6, self.schemas)
        self._send(topic, _json(key), _json(value))
        self.producer.flush(30)

    # -- events -------------------------------------------------------------------------------

    def _toast_placeholders(self, table, before, after, wal_text) -> dict:
        """An unchanged TOAST value is not in the WAL's new tuple; Debezium writes its
        placeholder unless REPLICA IDENTITY FULL gave it the old value."""
        if self.identity[table] == "f":
            return after
        unchanged = set(
            re.findall(r'(?:^|\s)"?([^\s"\[]+)"?\[[^\]]*\]:unchanged-toast-datum', wal_text)
        )
        return {k: (PLACEHOLDER if k in unchanged else v) for k, v in after.items()}

    def _source(self, table, ts_us, snapshot, last_commit, lsn, xid) -> dict:
        return dbz.source_block(
            server=self.prefix,
            db=self.db,
            table=table,
            commit_us=ts_us,
            snapshot=snapshot,
            last_commit_lsn=last_commit,
            lsn=lsn,
            tx_id=xid,
        )

    def _emit_transaction(self, events, xid: int, commit_us: int, snapshot: str) -> None:
        tx_id = f"{xid}:{events[0][4]}" if events else str(xid)
        per_table: dict[str, int] = {}
        if self.transaction_metadata:
            for table, *_ in events:
                per_table[table] = per_table.get(table, 0) + 1
            begin, end = dbz.transaction_records(
                self.prefix, tx_id, commit_us, commit_us, per_table, self.schemas
            )
            self._send(f"{self.prefix}.transaction", _json(begin[0]), _json(begin[1]))
        order: dict[str, int] = {}
        for total, (table, op, before, after, lsn) in enumerate(events, 1):
            source = self._source(table, commit_us, snapshot, self.last_commit_lsn, lsn, xid)
            block = None
            if self.transaction_metadata:
                order[table] = order.get(table, 0) + 1
                block = {"id": tx_id, "total_order": total, "data_collection_order": order[table]}
            self._send_event(table, op, before, after, source, block)
        if self.transaction_metadata:
            self._send(f"{self.prefix}.transaction", _json(end[0]), _json(end[1]))

    def _image(self, table: str, row: dict | None) -> dict | None:
        if row is None:
            return None
        return {
            f["field"]: v if (v := row[f["field"]]) == PLACEHOLDER else dbz.encode(v, f, pg_type)
            for f, pg_type in zip(self.fields[table], self.pg_types[table], strict=True)
        }

    def _before(self, table: str, op: str, row: dict | None) -> dict | None:
        """The old image REPLICA IDENTITY gives: FULL the row; DEFAULT none for an update and
        the key with Debezium's defaults for a delete."""
        if op not in ("u", "d") or row is None:
            return None
        image = self._image(table, row)
        if self.identity[table] == "f":
            return image
        if op == "u":
            return None
        return {
            f["field"]: image[f["field"]] if f["field"] == "id" else dbz.placeholder(f)
            for f in self.fields[table]
        }

    def value_schema(self, table: str, transaction: bool = False) -> dict:
        return dbz.value_schema(self.topic(table), self.fields[table], transaction)

    def _send_event(self, table, op, before, after, source, transaction) -> None:
        b = self._before(table, op, before)
        a = self._image(table, after)
        payload = dbz.envelope(b, a, source, op, time.time_ns() // 1000, transaction)
        topic = self.topic(table)
        value = (
            {
                "schema": self.value_schema(table, transaction is not None),
                "payload": payload,
            }
            if self.schemas
            else payload
        )
        row = after if op in ("c", "u", "r") else before
        key = None if op == "t" else self._key(table, row["id"])
        self._send(topic, key, _json(value))
        if op == "d":  # the tombstone that lets compaction drop the key
            self._send(topic, key, None)

    def _send(self, topic: str, key: bytes | None, value: bytes | None) -> None:
        self.producer.produce(topic, key=key, value=value)
        self.sent.append((topic, key, value))
        self.produced += 1

    def _key(self, table: str, row_id: str) -> bytes:
        [id_field] = [f for f in self.fields[table] if f["field"] == "id"]
        key_field = {**id_field, "optional": False}
        value = {"id": dbz.encode(row_id, id_field)}
        return _json(dbz.key_record(self.topic(table), [key_field], value, self.schemas))

    def close(self) -> None:
        self.producer.flush(30)
        self.conn.close()
        with self.wal.cursor() as cur:
            cur.execute("select pg_drop_replication_slot(%s)", (self.slot,))
        self.wal.close()


def _json(value) -> bytes:
    """Compact, like Kafka Connect's JsonConverter."""
    return json.dumps(value, separators=(",", ":")).encode()


def _commit_micros(commit_text: str) -> int:
    """test_decoding's `COMMIT <xid> (at 2026-03-01 12:00:00.123456+00)` -> epoch microseconds."""
    at = re.search(r"\(at (.+)\)", commit_text).group(1)
    when = dt.datetime.fromisoformat(at)
    return (when - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(microseconds=1)


class KafkaEnv(CdcEnv):
    """A CdcEnv whose feed is the Kafka feed on `bootstrap`, topics `<prefix>.public.<table>`."""

    bootstrap: str = ""
    prefix: str = ""
    group: str = ""
    column_types: dict | None = None

    def configure(self, bootstrap: str, column_types=None) -> KafkaEnv:
        self.bootstrap = bootstrap
        self.prefix = f"p{uuid.uuid4().hex[:8]}"
        self.group = f"g-{self.prefix}"
        self.column_types = column_types
        return self

    def feed(self, tables=None, **kw) -> KafkaFeed:
        return KafkaFeed(
            {"bootstrap.servers": self.bootstrap, "group.id": self.group},
            topic_prefix=self.prefix,
            tables=tables or self.tables,
            column_types=self.column_types,
            **{"idle_timeout": 3.0, **kw},
        )

    def warehouse(self) -> DuckDBWarehouse:
        return DuckDBWarehouse(self.tmp / f"{self.db}.duckdb", feed_kind="kafka")

    def connector(self, **kw) -> Connector:
        return Connector(self.url, self.bootstrap, self.prefix, self.tables, **kw)

    def assert_change_log_has_no_duplicates(self, tables=None) -> None:
        """No position twice, and no Debezium event twice: an event is its key, `source.lsn`
        and op (a re-sent event comes back at a new offset, so a new position)."""
        super().assert_change_log_has_no_duplicates(tables)
        for table in tables or self.tables:
            dups = self.raw(
                f"select id, _source_lsn, _op, count(*) from raw.{table}_changes "  # noqa: S608
                "where _op <> 't' group by 1, 2, 3 having count(*) > 1"
            ) + self.raw(
                f"select _source_lsn, count(*) from raw.{table}_changes "  # noqa: S608
                "where _op = 't' group by 1 having count(*) > 1"
            )
            assert dups == [], f"raw.{table}_changes logged an event twice: {dups[:5]}"
            unidentified = self.raw(
                f"select count(*) from raw.{table}_changes where _source_lsn is null"  # noqa: S608
            )
            assert unidentified == [(0,)], f"raw.{table}_changes has events without source.lsn"

    def group_committed(self) -> dict[str, dict[int, int]]:
        c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": self.group})
        try:
            md = c.list_topics(timeout=10)
            tps = []
            for t in self.tables:
                topic = f"{self.prefix}.public.{t}"
                if topic in md.topics:
                    tps += [TopicPartition(topic, p) for p in md.topics[topic].partitions]
            out: dict[str, dict[int, int]] = {t: {} for t in self.tables}
            for tp in c.committed(tps, timeout=10):
                if tp.offset >= 0:
                    out[tp.topic.rsplit(".", 1)[1]][tp.partition] = tp.offset
            return out
        finally:
            c.close()

    def high_watermarks(self) -> dict[str, dict[int, int]]:
        c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": self.group})
        try:
            md = c.list_topics(timeout=10)
            out: dict[str, dict[int, int]] = {}
            for t in self.tables:
                topic = f"{self.prefix}.public.{t}"
                out[t] = {
                    p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                    for p in (md.topics[topic].partitions if topic in md.topics else {})
                }
            return out
        finally:
            c.close()
