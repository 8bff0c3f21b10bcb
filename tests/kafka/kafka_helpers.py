"""Kafka test helpers: a stand-in for Debezium's Postgres connector and a CdcEnv that ingests
through the Kafka feed.

`Connector` runs real statements on the embedded source database and emits the change events
Debezium's Postgres connector (JSON converter) would emit for them, after the transaction
commits (rolled-back transactions emit nothing): `c` with the inserted row, `u` with the new
row, `d` with the old row + a tombstone, a primary-key update as delete(old key) + tombstone +
create(new key), `t` for a truncate, `r` for snapshot reads. Row images come from the source
(`returning *`), so the raw tables can be compared with the source row for row.

Producers use `batch.num.messages=1`: tansu's memory engine reported a high watermark lower
than the records delivered when a request carried several records (DESIGN.md); one record per
request is exact. test_kafka_feed.py::test_tansu_quirk_one_record_per_batch pins that.
"""

from __future__ import annotations

import base64
import json
import re
import sys
import time
import uuid
from decimal import Decimal
from pathlib import Path

import psycopg2
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "cdc"))

from cdc_helpers import CdcEnv  # noqa: E402

from analytics_assets.dev import broker as dev_broker  # noqa: E402
from analytics_assets.dev.broker import free_port  # noqa: E402, F401 - re-exported for the tests
from analytics_assets.lib.debezium import (  # noqa: E402
    PLACEHOLDER,
    SPECIAL_FLOATS,
    encode_decimal,
)
from analytics_assets.lib.feeds.kafka import KafkaFeed  # noqa: E402
from analytics_assets.lib.values import days_from_civil  # noqa: E402
from analytics_assets.lib.warehouse.duckdb import DuckDBWarehouse  # noqa: E402


def tansu_binary() -> Path:
    import pytest

    try:
        return dev_broker.tansu_binary()
    except FileNotFoundError as exc:
        pytest.fail(str(exc), pytrace=False)


PRODUCER_QUIRK = {"batch.num.messages": 1, "linger.ms": 0}  # tansu memory engine: see above


def create_topics(bootstrap: str, partitions: dict[str, int]) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for fut in admin.create_topics(
        [NewTopic(t, n, 1) for t, n in partitions.items()], operation_timeout=10
    ).values():
        fut.result()


def _field(name: str, pg_type: str, mode: str, optional: bool) -> dict:
    """The Kafka Connect schema field Debezium's Postgres connector writes for a column
    (decimal.handling.mode `mode`, time.precision.mode=adaptive_time_microseconds,
    binary.handling.mode=bytes, interval.handling.mode=string)."""
    f = {"field": name, "optional": optional}
    numeric = re.fullmatch(r"numeric(?:\((\d+),(-?\d+)\))?", pg_type.replace(" ", ""))
    if pg_type.endswith("[]"):
        f.update(type="array", items=_field("item", pg_type[:-2], mode, True))
    elif pg_type in ("bigint", "oid"):
        f["type"] = "int64"
    elif pg_type == "integer":
        f["type"] = "int32"
    elif pg_type == "smallint":
        f["type"] = "int16"
    elif pg_type == "boolean":
        f["type"] = "boolean"
    elif pg_type == "double precision":
        f["type"] = "double"
    elif pg_type == "real":
        f["type"] = "float"
    elif numeric and mode == "double":
        f["type"] = "double"
    elif numeric and numeric.group(1) is None:  # unconstrained: variable scale
        if mode == "precise":
            f.update(
                type="struct",
                name="io.debezium.data.VariableScaleDecimal",
                version=1,
                fields=[
                    {"type": "int32", "optional": False, "field": "scale"},
                    {"type": "bytes", "optional": False, "field": "value"},
                ],
            )
        else:
            f["type"] = "string"
    elif numeric and mode == "precise":
        precision, scale = numeric.groups()
        params = {"scale": scale, "connect.decimal.precision": precision}
        f.update(
            type="bytes", name="org.apache.kafka.connect.data.Decimal", version=1, parameters=params
        )
    elif numeric:
        f["type"] = "string"
    elif pg_type == "timestamp with time zone":
        f.update(type="string", name="io.debezium.time.ZonedTimestamp", version=1)
    elif pg_type.startswith("timestamp"):
        f.update(type="int64", name="io.debezium.time.MicroTimestamp", version=1)
    elif pg_type == "date":
        f.update(type="int32", name="io.debezium.time.Date", version=1)
    elif pg_type.startswith("time") and "with time zone" not in pg_type:
        f.update(type="int64", name="io.debezium.time.MicroTime", version=1)
    elif pg_type == "bytea":
        f["type"] = "bytes"
    elif pg_type in ("json", "jsonb"):
        f.update(type="string", name="io.debezium.data.Json", version=1)
    elif pg_type == "uuid":
        f.update(type="string", name="io.debezium.data.Uuid", version=1)
    elif pg_type == "interval":
        f.update(type="string", name="io.debezium.time.Interval", version=1)
    else:
        f["type"] = "string"
    return f


SPECIAL_NUMERIC = {"NaN": "NAN", "Infinity": "POSITIVE_INFINITY", "-Infinity": "NEGATIVE_INFINITY"}
_PG_TS = re.compile(r"(\d{4,})-(\d\d)-(\d\d)(?: (\d\d):(\d\d):(\d\d)(\.\d+)?)?(\+00)?( BC)?")


def _pg_instant(text: str) -> tuple[int, int, int, int, int]:
    """PostgreSQL's text of a date/timestamp (DateStyle ISO, UTC) -> (astronomical year, month,
    day, epoch days, microseconds into the day)."""
    m = _PG_TS.fullmatch(text)
    year, month, day, hh, mi, ss, frac, _, bc = m.groups()
    y = 1 - int(year) if bc else int(year)
    tod = (int(hh or 0) * 3600 + int(mi or 0) * 60 + int(ss or 0)) * 10**6
    tod += int((frac or ".0")[1:].ljust(6, "0"))
    return y, int(month), int(day), days_from_civil(y, int(month), int(day)), tod


def _java_iso(text: str) -> str:
    """ZonedTimestamp: the instant as Java's ISO_OFFSET_DATE_TIME writes it in UTC
    (`-0043-03-15T12:00:00.25Z`, `+10000-01-01T00:00:00Z`), or infinity / -infinity."""
    if text in ("infinity", "-infinity"):
        return text
    y, month, day, _, tod = _pg_instant(text)
    year = f"{y:04d}" if 0 <= y <= 9999 else (f"+{y}" if y > 0 else f"-{-y:04d}")
    secs, micro = divmod(tod, 10**6)
    frac = f".{micro:06d}".rstrip("0") if micro else ""
    clock = f"{secs // 3600:02d}:{secs // 60 % 60:02d}:{secs % 60:02d}{frac}"
    return f"{year}-{month:02d}-{day:02d}T{clock}Z"


def _encode(text, field: dict, pg_type: str = ""):
    """A column value, given as PostgreSQL's text (arrays: as JSON), as Debezium encodes it."""
    if text is None:
        return None
    name, type_ = field.get("name"), field["type"]
    if type_ == "array":
        item = pg_type[:-2]
        return [_encode(_element_text(v), field["items"], item) for v in json.loads(text)]
    if type_ in ("int16", "int32", "int64"):
        if name == "io.debezium.time.MicroTimestamp":
            if text in ("infinity", "-infinity"):
                return 2**63 - 1 if text == "infinity" else -(2**63)
            _, _, _, days, tod = _pg_instant(text)
            return days * 86_400_000_000 + tod
        if name == "io.debezium.time.Date":
            if text in ("infinity", "-infinity"):
                return 2**31 - 1 if text == "infinity" else -(2**31)
            return _pg_instant(text)[3]
        if name == "io.debezium.time.MicroTime":
            hh, mi, ss = text.split(":")
            return (int(hh) * 3600 + int(mi) * 60) * 10**6 + int(Decimal(ss) * 10**6)
        return int(text)
    if type_ == "boolean":
        return text == "t"
    if type_ in ("double", "float"):
        return text if text in SPECIAL_FLOATS else float(text)  # Jackson quotes NaN/Infinity
    if name == "org.apache.kafka.connect.data.Decimal":
        if text in SPECIAL_NUMERIC:
            return None  # precise mode cannot encode NaN/Infinity: Debezium sends null
        return encode_decimal(Decimal(text), int(field["parameters"]["scale"]))
    if name == "io.debezium.data.VariableScaleDecimal":
        if text in SPECIAL_NUMERIC:
            return None
        scale = max(0, -Decimal(text).as_tuple().exponent)
        return {"scale": scale, "value": encode_decimal(Decimal(text), scale)}
    if name == "io.debezium.time.ZonedTimestamp":
        return _java_iso(text)
    if type_ == "bytes":
        return base64.b64encode(bytes.fromhex(text[2:])).decode()
    if pg_type.startswith("numeric"):  # decimal.handling.mode=string
        return SPECIAL_NUMERIC.get(text, text)
    return text


def _placeholder(field: dict):
    """What Debezium puts for a column a key-only delete image lacks: null when the column is
    optional, else its type's default (0, "", false, epoch 0, a zero decimal)."""
    if field.get("optional", True):
        return None
    name, type_ = field.get("name"), field["type"]
    if name == "org.apache.kafka.connect.data.Decimal":
        return "AA=="
    if name == "io.debezium.time.ZonedTimestamp":
        return "1970-01-01T00:00:00Z"
    if type_ in ("int16", "int32", "int64", "double", "float"):
        return 0
    return False if type_ == "boolean" else ""


def _element_text(v):
    """An array element from to_json, as PostgreSQL's text of that element."""
    if v is None or isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "t" if v else "f"
    return json.dumps(v)


class Connector:
    """Debezium's Postgres connector, emulated for `tables` of the source at `url`."""

    def __init__(
        self,
        url: str,
        bootstrap: str,
        prefix: str,
        tables,
        *,
        mode: str = "precise",
        schemas: bool = True,
        partitions: dict[str, int] | None = None,
        toast_placeholder: bool = False,
        key_only_deletes: bool = False,
        placeholder_deletes: bool = False,
    ):
        self.url = url
        self.prefix = prefix
        self.tables = tuple(tables)
        self.mode = mode
        self.schemas = schemas
        self.toast_placeholder = toast_placeholder
        self.key_only_deletes = key_only_deletes
        self.placeholder_deletes = placeholder_deletes
        self.conn = psycopg2.connect(url)
        with self.conn.cursor() as cur:  # row images as text, in the form Debezium reads them
            cur.execute("set timezone = 'UTC'; set datestyle = 'ISO, YMD'")
            cur.execute("set extra_float_digits = 3; set bytea_output = 'hex'")
        self.conn.commit()
        self.pg_types: dict[str, list[str]] = {}
        self.fields = {t: self._fields(t) for t in self.tables}
        create_topics(bootstrap, {self.topic(t): (partitions or {}).get(t, 1) for t in self.tables})
        self.producer = Producer({"bootstrap.servers": bootstrap, **PRODUCER_QUIRK})
        self.pending: list[tuple] = []
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
        self.conn.rollback()
        self.pg_types[table] = [t for _, t, _ in rows]
        return [_field(n, t, self.mode, opt) for n, t, opt in rows]

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
            lsn = self._lsn(cur)
        self.pending.append((table, "c", None, after, lsn))
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
            lsn = self._lsn(cur)
        if after["id"] != before["id"]:  # a primary-key update: two events of one WAL record
            self.pending.append((table, "d", before, None, lsn))
            self.pending.append((table, "c", None, after, lsn))
        else:
            self.pending.append((table, "u", before, after, lsn))

    def delete(self, table: str, row_id: int) -> None:
        with self.conn.cursor() as cur:
            cur.execute(
                f"delete from {table} where id = %s returning {self._as_text(table)}",  # noqa: S608
                (row_id,),
            )
            before = self._row(cur, table)
            lsn = self._lsn(cur)
        if before is not None:
            self.pending.append((table, "d", before, None, lsn))

    def truncate(self, table: str) -> None:
        with self.conn.cursor() as cur:
            cur.execute(f"truncate {table}")
            lsn = self._lsn(cur)
        self.pending.append((table, "t", None, None, lsn))

    @staticmethod
    def _lsn(cur) -> int:
        """The WAL position right after the statement: Debezium's `source.lsn` of its change
        (distinct per change, increasing with the changes of a row)."""
        cur.execute("select pg_current_wal_insert_lsn() - '0/0'::pg_lsn")
        return int(cur.fetchone()[0])

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

    def commit(self) -> None:
        self.conn.commit()
        ts = int(time.time() * 1000)
        txid = uuid.uuid4().int % 10**9
        for table, op, before, after, lsn in self.pending:
            self._emit(table, op, before, after, ts, txid, lsn)
        self.pending.clear()
        self.producer.flush(30)

    def rollback(self) -> None:
        self.conn.rollback()
        self.pending.clear()

    def snapshot(self) -> None:
        """Debezium's initial snapshot: an `r` event per current row."""
        ts = int(time.time() * 1000)
        with self.conn.cursor() as cur:
            lsn = self._lsn(cur)  # every snapshot event carries the snapshot's position
        for table in self.tables:
            with self.conn.cursor() as cur:
                cur.execute(f"select {self._as_text(table)} from {table} order by id")  # noqa: S608
                rows = cur.fetchall()
            names = [f["field"] for f in self.fields[table]]
            for row in rows:
                self._emit(table, "r", None, dict(zip(names, row, strict=True)), ts, 0, lsn)
        self.conn.rollback()
        self.producer.flush(30)

    # -- events -------------------------------------------------------------------------------

    def _image(self, table: str, row: dict | None, *, before: bool = False) -> dict | None:
        if row is None:
            return None
        image = {}
        for f, pg_type in zip(self.fields[table], self.pg_types[table], strict=True):
            image[f["field"]] = _encode(row[f["field"]], f, pg_type)
        if before and self.key_only_deletes:
            image = {k: (v if k == "id" else None) for k, v in image.items()}
        if before and self.placeholder_deletes:  # REPLICA IDENTITY DEFAULT, as Debezium fills it
            image = {
                f["field"]: image[f["field"]] if f["field"] == "id" else _placeholder(f)
                for f in self.fields[table]
            }
        return image

    def _emit(self, table, op, before, after, ts, txid, lsn) -> None:
        b = self._image(table, before, before=op == "d")
        a = self._image(table, after)
        if op == "u" and self.toast_placeholder and before is not None:
            for f in self.fields[table]:
                v = after[f["field"]]
                if isinstance(v, str) and len(v) > 1000 and v == before[f["field"]]:
                    a[f["field"]] = PLACEHOLDER  # unchanged TOAST value
        source = {
            "version": "2.7.3.Final",
            "connector": "postgresql",
            "name": self.prefix,
            "ts_ms": ts,
            "snapshot": "true" if op == "r" else "false",
            "db": "app",
            "schema": "public",
            "table": table,
            "txId": txid,
            "lsn": lsn,
        }
        payload = {
            "before": b,
            "after": a,
            "source": source,
            "op": op,
            "ts_ms": int(time.time() * 1000),
            "transaction": None,
        }
        value = {"schema": self._schema(table), "payload": payload} if self.schemas else payload
        row = after if op in ("c", "u", "r") else before
        key = None if op == "t" else self._key(table, int(row["id"]))
        # compact, like Kafka Connect's JsonConverter
        self._send(self.topic(table), key, json.dumps(value, separators=(",", ":")).encode())
        if op == "d":  # the tombstone that lets compaction drop the key
            self._send(self.topic(table), key, None)

    def _send(self, topic: str, key: bytes | None, value: bytes | None) -> None:
        self.producer.produce(topic, key=key, value=value)
        self.sent.append((topic, key, value))
        self.produced += 1

    def _key(self, table: str, row_id: int) -> bytes:
        if self.schemas:
            key = {
                "schema": {
                    "type": "struct",
                    "fields": [{"type": "int64", "optional": False, "field": "id"}],
                    "optional": False,
                    "name": f"{self.topic(table)}.Key",
                },
                "payload": {"id": row_id},
            }
        else:
            key = {"id": row_id}
        return json.dumps(key).encode()

    def _schema(self, table: str) -> dict:
        row = {
            "type": "struct",
            "fields": self.fields[table],
            "optional": True,
            "name": f"{self.topic(table)}.Value",
        }
        return {
            "type": "struct",
            "fields": [
                {**row, "field": "before"},
                {**row, "field": "after"},
                {
                    "type": "struct",
                    "fields": [
                        {"type": "int64", "optional": False, "field": "ts_ms"},
                        {"type": "string", "optional": False, "field": "table"},
                    ],
                    "optional": False,
                    "name": "io.debezium.connector.postgresql.Source",
                    "field": "source",
                },
                {"type": "string", "optional": False, "field": "op"},
                {"type": "int64", "optional": True, "field": "ts_ms"},
            ],
            "optional": False,
            "name": f"{self.topic(table)}.Envelope",
            "version": 2,
        }

    def close(self) -> None:
        self.producer.flush(30)
        self.conn.close()


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
