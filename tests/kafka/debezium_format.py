"""Debezium's PostgreSQL connector record format (JsonConverter), as its documentation and its
source define it, for the test connector in kafka_helpers.py.

Sources: debezium/debezium `documentation/modules/ROOT/pages/connectors/postgresql.adoc`
(sections "Transaction metadata", "Data change events", "Data type mappings"; the examples are
copied in debezium_doc_examples.json) and, where the page is silent or out of date, the code:
`SchemaFactory.sourceInfoSchemaBuilder` + `PostgresSourceInfoStructMaker` (the `source` block's
fields and their order), `SnapshotRecord` (`snapshot` is a string enum `true`/`first`/
`first_in_data_collection`/`last_in_data_collection`/`last`/`false`/`incremental`, default
`false`; the doc example's boolean is from before 1.x), `PostgresChangeRecordEmitter` (an update
under REPLICA IDENTITY DEFAULT has `before: null`: pgoutput sends no old tuple), `SourceInfo`
(`sequence` = JSON array of strings `[last commit LSN, this record's LSN]`), `HeartbeatImpl` and
the transaction struct maker.

Column values: `field()` is the Kafka Connect schema of a column, `encode()` its value from
PostgreSQL's text, for `decimal.handling.mode` precise/string/double and `time.precision.mode`
adaptive_time_microseconds (the default here)/adaptive/connect/microseconds/nanoseconds.
"""

from __future__ import annotations

import base64
import json
import re
from decimal import Decimal

from analytics_assets.lib.debezium import SPECIAL_FLOATS, encode_decimal
from analytics_assets.lib.values import days_from_civil

VERSION = "2.7.3.Final"
DECIMAL_MODES = ("precise", "string", "double")
TIME_MODES = ("adaptive_time_microseconds", "adaptive", "connect", "microseconds", "nanoseconds")
SPECIAL_NUMERIC = {"NaN": "NAN", "Infinity": "POSITIVE_INFINITY", "-Infinity": "NEGATIVE_INFINITY"}
_PG_TS = re.compile(r"(\d{4,})-(\d\d)-(\d\d)(?: (\d\d):(\d\d):(\d\d)(\.\d+)?)?(\+00)?( BC)?")
_PRECISION = re.compile(r"\((\d)\)")


# -- the envelope --------------------------------------------------------------------------------


def micros_fields(prefix_ms: str, micros: int) -> dict[str, int]:
    """ts_ms / ts_us / ts_ns of an instant with microsecond precision (PostgreSQL's)."""
    return {prefix_ms: micros // 1000, "ts_us": micros, "ts_ns": micros * 1000}


def source_block(
    *,
    server: str,
    db: str,
    table: str,
    commit_us: int,
    snapshot: str,
    last_commit_lsn: int | None,
    lsn: int,
    tx_id: int,
) -> dict:
    """The `source` struct, its fields in the connector's order: ts_* are the commit time (the
    snapshot's read time for op r), `lsn` the record's WAL position."""
    return {
        "version": VERSION,
        "connector": "postgresql",
        "name": server,
        "ts_ms": commit_us // 1000,
        "snapshot": snapshot,
        "db": db,
        "sequence": json.dumps(
            [None if last_commit_lsn is None else str(last_commit_lsn), str(lsn)],
            separators=(",", ":"),
        ),
        "ts_us": commit_us,
        "ts_ns": commit_us * 1000,
        "schema": "public",
        "table": table,
        "txId": tx_id,
        "lsn": lsn,
        "xmin": None,  # only with xmin.fetch.interval.ms set
    }


def snapshot_markers(counts: list[int]) -> list[list[str]]:
    """`source.snapshot` of each snapshot record, per table in snapshot order (SnapshotRecord):
    the very first `first`, the very last `last`, a table's first/last
    `first_in_data_collection`/`last_in_data_collection`, the others `true`."""
    out = []
    non_empty = [i for i, n in enumerate(counts) if n]
    for i, n in enumerate(counts):
        marks = ["true"] * n
        if n:
            marks[0] = "first_in_data_collection"
            marks[-1] = "last_in_data_collection"
            if i == non_empty[0]:
                marks[0] = "first"
            if i == non_empty[-1]:
                marks[-1] = "last"
        out.append(marks)
    return out


def envelope(
    before, after, source: dict, op: str, processed_us: int, transaction: dict | None
) -> dict:
    """The payload; `transaction` only with provide.transaction.metadata (the block is absent
    from the envelope otherwise, as in the documentation's examples)."""
    payload = {"before": before, "after": after, "source": source, "op": op}
    if op == "t":  # the documented truncate payload has no before/after
        payload = {"source": source, "op": op}
    payload.update(micros_fields("ts_ms", processed_us))
    if transaction is not None:
        payload["transaction"] = transaction
    return payload


def _struct(name: str | None, fields: list[dict], optional: bool = False, **extra) -> dict:
    out = {"type": "struct", "fields": fields, "optional": optional}
    if name:
        out["name"] = name
    out.update(extra)
    return out


def _f(type_: str, field: str, optional: bool, **extra) -> dict:
    return {"type": type_, "optional": optional, **extra, "field": field}


SOURCE_SCHEMA = _struct(
    "io.debezium.connector.postgresql.Source",
    [
        _f("string", "version", False),
        _f("string", "connector", False),
        _f("string", "name", False),
        _f("int64", "ts_ms", False),
        _f(
            "string",
            "snapshot",
            True,
            name="io.debezium.data.Enum",
            version=1,
            parameters={
                "allowed": "true,first,first_in_data_collection,last_in_data_collection,"
                "last,false,incremental"
            },
            default="false",
        ),
        _f("string", "db", False),
        _f("string", "sequence", True),
        _f("int64", "ts_us", True),
        _f("int64", "ts_ns", True),
        _f("string", "schema", False),
        _f("string", "table", False),
        _f("int64", "txId", True),
        _f("int64", "lsn", True),
        _f("int64", "xmin", True),
    ],
    field="source",
)

TRANSACTION_BLOCK_SCHEMA = _struct(
    "event.block",
    [
        _f("string", "id", False),
        _f("int64", "total_order", False),
        _f("int64", "data_collection_order", False),
    ],
    optional=True,
    version=1,
    field="transaction",
)


def value_schema(topic: str, columns: list[dict], transaction: bool) -> dict:
    row = _struct(f"{topic}.Value", columns, optional=True)
    fields = [
        {**row, "field": "before"},
        {**row, "field": "after"},
        SOURCE_SCHEMA,
        _f("string", "op", False),
        _f("int64", "ts_ms", True),
        _f("int64", "ts_us", True),
        _f("int64", "ts_ns", True),
    ]
    if transaction:
        fields.append(TRANSACTION_BLOCK_SCHEMA)
    return _struct(f"{topic}.Envelope", fields, version=2)


def key_record(topic: str, key_fields: list[dict], values: dict, schemas: bool) -> dict:
    if not schemas:
        return values
    return {"schema": _struct(f"{topic}.Key", key_fields), "payload": values}


def transaction_records(
    server: str, tx_id: str, begin_us: int, end_us: int, per_table: dict[str, int], schemas: bool
) -> tuple[tuple[dict, dict], tuple[dict, dict]]:
    """(key, value) of the BEGIN and END records on `<topic.prefix>.transaction`."""
    key_schema = _struct(
        "io.debezium.connector.common.TransactionMetadataKey",
        [_f("string", "id", False)],
        version=1,
    )
    collections = [
        {"data_collection": f"public.{t}", "event_count": n} for t, n in per_table.items()
    ]
    value_schema_ = _struct(
        "io.debezium.connector.common.TransactionMetadataValue",
        [
            _f("string", "status", False),
            _f("string", "id", False),
            _f("int64", "event_count", True),
            {
                "type": "array",
                "items": _struct(
                    "event.collection",
                    [_f("string", "data_collection", False), _f("int64", "event_count", False)],
                    optional=True,
                    version=1,
                ),
                "optional": True,
                "field": "data_collections",
            },
            _f("int64", "ts_ms", False),
        ],
        version=1,
    )
    begin = {
        "status": "BEGIN",
        "id": tx_id,
        "event_count": None,
        "data_collections": None,
        "ts_ms": begin_us // 1000,
    }
    end = {
        "status": "END",
        "id": tx_id,
        "event_count": sum(per_table.values()),
        "data_collections": collections,
        "ts_ms": end_us // 1000,
    }
    key = {"id": tx_id}

    def wrap(schema, payload):
        return {"schema": schema, "payload": payload} if schemas else payload

    return (
        (wrap(key_schema, key), wrap(value_schema_, begin)),
        (wrap(key_schema, key), wrap(value_schema_, end)),
    )


def heartbeat_record(server: str, now_ms: int, schemas: bool) -> tuple[dict, dict]:
    """(key, value) on `__debezium-heartbeat.<topic.prefix>`."""
    key = {"serverName": server}
    value = {"ts_ms": now_ms}
    if not schemas:
        return key, value
    return (
        {
            "schema": _struct(
                "io.debezium.connector.common.ServerNameKey",
                [_f("string", "serverName", False)],
                version=1,
            ),
            "payload": key,
        },
        {
            "schema": _struct(
                "io.debezium.connector.common.Heartbeat", [_f("int64", "ts_ms", False)], version=1
            ),
            "payload": value,
        },
    )


# -- column values -------------------------------------------------------------------------------


def _temporal(pg_type: str, time_mode: str) -> tuple[str, str] | None:
    """(literal type, semantic name) of a date/time/timestamp column without zone."""
    m = _PRECISION.search(pg_type)
    p = int(m.group(1)) if m else 6
    if pg_type == "date":
        if time_mode == "connect":
            return "int32", "org.apache.kafka.connect.data.Date"
        return "int32", "io.debezium.time.Date"
    is_ts = pg_type.startswith("timestamp")
    if not is_ts and not pg_type.startswith("time"):
        return None
    if time_mode == "connect":
        if is_ts:
            return "int64", "org.apache.kafka.connect.data.Timestamp"
        return "int32", "org.apache.kafka.connect.data.Time"
    if time_mode == "nanoseconds":
        return "int64", "io.debezium.time.Nano" + ("Timestamp" if is_ts else "Time")
    if time_mode == "microseconds" or p > 3:
        return "int64", "io.debezium.time.Micro" + ("Timestamp" if is_ts else "Time")
    if is_ts:
        return "int64", "io.debezium.time.Timestamp"
    if time_mode == "adaptive":
        return "int32", "io.debezium.time.Time"
    return "int64", "io.debezium.time.MicroTime"  # adaptive_time_microseconds


def field(name: str, pg_type: str, mode: str, optional: bool, time_mode: str) -> dict:
    """The Kafka Connect schema field Debezium's Postgres connector writes for a column
    (binary.handling.mode=bytes, interval.handling.mode=string)."""
    f = {"field": name, "optional": optional}
    numeric = re.fullmatch(r"numeric(?:\((\d+),(-?\d+)\))?", pg_type.replace(" ", ""))
    temporal = None if "with time zone" in pg_type else _temporal(pg_type, time_mode)
    if pg_type.endswith("[]"):
        f.update(type="array", items=field("item", pg_type[:-2], mode, True, time_mode))
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
    elif temporal:
        f.update(type=temporal[0], name=temporal[1], version=1)
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


def pg_instant(text: str) -> tuple[int, int, int, int, int]:
    """PostgreSQL's text of a date/timestamp (DateStyle ISO, UTC) -> (astronomical year, month,
    day, epoch days, microseconds into the day)."""
    m = _PG_TS.fullmatch(text)
    year, month, day, hh, mi, ss, frac, _, bc = m.groups()
    y = 1 - int(year) if bc else int(year)
    tod = (int(hh or 0) * 3600 + int(mi or 0) * 60 + int(ss or 0)) * 10**6
    tod += int((frac or ".0")[1:].ljust(6, "0"))
    return y, int(month), int(day), days_from_civil(y, int(month), int(day)), tod


def java_iso(text: str) -> str:
    """ZonedTimestamp: the instant as Java's ISO_OFFSET_DATE_TIME writes it in UTC
    (`-0043-03-15T12:00:00.25Z`, `+10000-01-01T00:00:00Z`), or infinity / -infinity."""
    if text in ("infinity", "-infinity"):
        return text
    y, month, day, _, tod = pg_instant(text)
    year = f"{y:04d}" if 0 <= y <= 9999 else (f"+{y}" if y > 0 else f"-{-y:04d}")
    secs, micro = divmod(tod, 10**6)
    frac = f".{micro:06d}".rstrip("0") if micro else ""
    clock = f"{secs // 3600:02d}:{secs // 60 % 60:02d}:{secs % 60:02d}{frac}"
    return f"{year}-{month:02d}-{day:02d}T{clock}Z"


_UNIT = {  # semantic type -> units per microsecond (as a divisor or multiplier)
    "io.debezium.time.Timestamp": ("ms", 1000),
    "org.apache.kafka.connect.data.Timestamp": ("ms", 1000),
    "io.debezium.time.MicroTimestamp": ("us", 1),
    "io.debezium.time.NanoTimestamp": ("ns", 1000),
    "io.debezium.time.Time": ("ms", 1000),
    "org.apache.kafka.connect.data.Time": ("ms", 1000),
    "io.debezium.time.MicroTime": ("us", 1),
    "io.debezium.time.NanoTime": ("ns", 1000),
}


def _scaled(micros: int, name: str) -> int:
    unit, n = _UNIT[name]
    return micros * n if unit == "ns" else micros // n


def encode(text, f: dict, pg_type: str = ""):
    """A column value, given as PostgreSQL's text (arrays: as JSON), as Debezium encodes it."""
    if text is None:
        return None
    name, type_ = f.get("name"), f["type"]
    if type_ == "array":
        item = pg_type[:-2]
        return [encode(element_text(v), f["items"], item) for v in json.loads(text)]
    if type_ in ("int16", "int32", "int64"):
        if name in ("io.debezium.time.Date", "org.apache.kafka.connect.data.Date"):
            if text in ("infinity", "-infinity"):
                return 2**31 - 1 if text == "infinity" else -(2**31)
            return pg_instant(text)[3]
        if name in _UNIT and name.endswith("Timestamp"):
            if text in ("infinity", "-infinity"):
                return 2**63 - 1 if text == "infinity" else -(2**63)
            _, _, _, days, tod = pg_instant(text)
            return _scaled(days * 86_400_000_000 + tod, name)
        if name in _UNIT:  # a time of day
            hh, mi, ss = text.split(":")
            return _scaled((int(hh) * 3600 + int(mi) * 60) * 10**6 + int(Decimal(ss) * 10**6), name)
        return int(text)
    if type_ == "boolean":
        return text == "t"
    if type_ in ("double", "float"):
        return text if text in SPECIAL_FLOATS else float(text)  # Jackson quotes NaN/Infinity
    if name == "org.apache.kafka.connect.data.Decimal":
        if text in SPECIAL_NUMERIC:
            return None  # precise mode cannot encode NaN/Infinity: Debezium sends null
        return encode_decimal(Decimal(text), int(f["parameters"]["scale"]))
    if name == "io.debezium.data.VariableScaleDecimal":
        if text in SPECIAL_NUMERIC:
            return None
        scale = max(0, -Decimal(text).as_tuple().exponent)
        return {"scale": scale, "value": encode_decimal(Decimal(text), scale)}
    if name == "io.debezium.time.ZonedTimestamp":
        return java_iso(text)
    if type_ == "bytes":
        return base64.b64encode(bytes.fromhex(text[2:])).decode()
    if pg_type.startswith("numeric"):  # decimal.handling.mode=string
        return SPECIAL_NUMERIC.get(text, text)
    return text


def placeholder(f: dict):
    """What Debezium puts for a column a key-only delete image lacks: null when the column is
    optional, else its type's default (0, "", false, epoch 0, a zero decimal)."""
    if f.get("optional", True):
        return None
    name, type_ = f.get("name"), f["type"]
    if name == "org.apache.kafka.connect.data.Decimal":
        return "AA=="
    if name == "io.debezium.time.ZonedTimestamp":
        return "1970-01-01T00:00:00Z"
    if type_ in ("int16", "int32", "int64", "double", "float"):
        return 0
    return False if type_ == "boolean" else ""


def element_text(v):
    """An array element from to_json, as PostgreSQL's text of that element."""
    if v is None or isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "t" if v else "f"
    return json.dumps(v)
