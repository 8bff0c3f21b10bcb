"""Debezium Postgres connector change events (JSON converter) -> Arrow columns.

One `TableDecoder` per captured table turns a batch of Kafka record values into one Arrow table
of row images + the feed's META_COLUMNS, column by column (JSON parsing is per record; every
type conversion is one Arrow call per column, except `precise` decimals, see below).

Accepted input
--------------
- The envelope with the `schema`/`payload` wrapper (`value.converter.schemas.enable=true`) and
  without it (`false`). Column types come from the wrapper's schema when present; a
  `column_types` hint (column -> Arrow type) overrides them and is how schemaless topics get
  decimal and timestamp columns; with neither, types are inferred from the JSON values.
- Ops `c` (insert), `u` (update), `d` (delete: the `before` image, flagged deleted), `r`
  (snapshot read), `t` (truncate, needs the connector's `skipped.operations` without `t`).
  Tombstones (null value after a delete) are skipped. A primary-key update arrives as Debezium
  emits it: a delete of the old key (+ tombstone) and a create of the new key.
- `decimal.handling.mode`: `precise` (base64 big-endian two's-complement unscaled bytes; scale
  from the schema's `parameters.scale`, so it needs the schema wrapper;
  `io.debezium.data.VariableScaleDecimal` structs become their exact text),
  `string` (exact; decimal columns with a hint or the `connect.decimal.precision` parameter,
  otherwise text) and `double` (a DOUBLE column: lossy by Debezium's choice).
- Time: `io.debezium.time.ZonedTimestamp` (ISO-8601 string -> timestamp UTC),
  `MicroTimestamp` / `Timestamp` / `NanoTimestamp` (epoch micros / millis / nanos -> timestamp
  without zone), `Date` (epoch days -> date).
- Unchanged TOAST values (Debezium's `__debezium_unavailable_value` placeholder) and delete
  images that carry only the key (REPLICA IDENTITY DEFAULT) are listed in `_unchanged_cols`, so
  the warehouse keeps the previous values.

Bad records: a record that is not JSON, is truncated, has an unknown op, lacks the image its op
needs, belongs to another table (`source.table`) or holds a value its column cannot take raises
`EnvelopeError` naming topic, partition and offset, or with `decode(..., quarantine=True)` (what
the Kafka feed uses) is left out and listed in `DecodedTable.rejected` with the reason; the feed
turns those into dead letters (`raw._dead_letters`, written in the batch's transaction) and
moves past them.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import numpy as np
import pyarrow as pa

from analytics_assets.lib.feeds.base import SOURCE_LSN, Position, meta_schema_fields

PLACEHOLDER = "__debezium_unavailable_value"
PLACEHOLDER_B64 = base64.b64encode(PLACEHOLDER.encode()).decode()
DECIMAL = "org.apache.kafka.connect.data.Decimal"
VARIABLE_DECIMAL = "io.debezium.data.VariableScaleDecimal"
ZONED_TIMESTAMP = "io.debezium.time.ZonedTimestamp"
MICRO_TIMESTAMP = "io.debezium.time.MicroTimestamp"
TIMESTAMP = "io.debezium.time.Timestamp"
NANO_TIMESTAMP = "io.debezium.time.NanoTimestamp"
DATE = "io.debezium.time.Date"
CONNECT_TIMESTAMP = "org.apache.kafka.connect.data.Timestamp"
CONNECT_DATE = "org.apache.kafka.connect.data.Date"
OPS = frozenset("cudrt")

_CONNECT_TYPES = {
    "int8": pa.int16(),
    "int16": pa.int16(),
    "int32": pa.int32(),
    "int64": pa.int64(),
    "float32": pa.float64(),
    "float64": pa.float64(),
    "double": pa.float64(),
    "float": pa.float64(),
    "boolean": pa.bool_(),
    "string": pa.string(),
    "bytes": pa.binary(),
}


class EnvelopeError(ValueError):
    """A record the decoder cannot read; the message names topic, partition and offset."""


@dataclass(frozen=True)
class Column:
    """One field of a Debezium row schema."""

    name: str
    type: str  # Kafka Connect type: int16, int64, string, bytes, struct, ...
    semantic: str | None = None  # the schema `name`, e.g. io.debezium.time.ZonedTimestamp
    parameters: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_schema(cls, f: Mapping[str, Any]) -> Column:
        params = f.get("parameters") or {}
        return cls(
            f["field"], f.get("type", "string"), f.get("name"), tuple(sorted(params.items()))
        )

    def param(self, name: str) -> str | None:
        return dict(self.parameters).get(name)

    def arrow_type(self) -> pa.DataType:
        s = self.semantic
        if s == DECIMAL:
            scale = int(self.param("scale") or 0)
            precision = int(self.param("connect.decimal.precision") or 38)
            return pa.decimal128(max(precision, scale, 1), scale)
        if s == ZONED_TIMESTAMP:
            return pa.timestamp("us", tz="UTC")
        if s in (MICRO_TIMESTAMP, TIMESTAMP, NANO_TIMESTAMP, CONNECT_TIMESTAMP):
            return pa.timestamp("us")
        if s in (DATE, CONNECT_DATE):
            return pa.date32()
        if s == VARIABLE_DECIMAL or self.type in ("struct", "array", "map"):
            return pa.string()
        if self.type == "string" and self.param("connect.decimal.precision"):
            # decimal.handling.mode=string keeps the column's precision/scale as parameters
            # (when the connector propagates them): exact decimals
            scale = int(self.param("connect.decimal.scale") or self.param("scale") or 0)
            return pa.decimal128(int(self.param("connect.decimal.precision")), scale)
        return _CONNECT_TYPES.get(self.type, pa.string())


def row_columns(schema: Mapping[str, Any]) -> list[Column]:
    """The row columns from an envelope schema (the `after`, else `before`, struct)."""
    fields = {f.get("field"): f for f in schema.get("fields", [])}
    for image in ("after", "before"):
        f = fields.get(image)
        if f and f.get("fields"):
            return [Column.from_schema(c) for c in f["fields"]]
    return []


@dataclass
class DecodedTable:
    rows: pa.Table
    truncates: list[Position] = field(default_factory=list)
    truncate_source_lsns: dict[Position, int] = field(default_factory=dict)
    tombstones: int = 0
    min_commit_ts: dt.datetime | None = None
    max_commit_ts: dt.datetime | None = None
    rejected: list[tuple[int, str]] = field(default_factory=list)  # (record index, reason)


def _ts_from_ms(ms: int | None) -> dt.datetime | None:
    if ms is None:
        return None
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC)


class TableDecoder:
    """Decodes the Debezium records of one table. Remembers the columns and types it has seen
    so later batches (or schemaless records) keep them."""

    def __init__(
        self,
        table: str,
        *,
        key: Sequence[str] = (),
        column_types: Mapping[str, pa.DataType] | None = None,
        topic: str | None = None,
    ):
        self.table = table
        self.topic = topic or table
        self.key: tuple[str, ...] = tuple(key)
        self.hints = dict(column_types or {})
        self.columns: dict[str, Column] = {}
        self.types: dict[str, pa.DataType] = {}
        self._last_schema: Mapping[str, Any] | None = None
        self._prefix: bytes | None = None

    # -- per record -------------------------------------------------------------------------

    def _learn_schema(self, schema: Mapping[str, Any]) -> None:
        if schema == self._last_schema:  # every record repeats it: compare (C speed), not parse
            return
        self._last_schema = schema
        for col in row_columns(schema):
            if self.columns.get(col.name) != col:
                self.columns[col.name] = col
                self.types.pop(col.name, None)

    def _remember_prefix(self, value: bytes, schema: Any) -> None:
        """The bytes up to the payload of a record written as {"schema":...,"payload":...}
        (Kafka Connect's JsonConverter), kept only if they parse back to exactly `schema`."""
        self._prefix = None
        head, sep = b'{"schema":', b',"payload":'
        if not isinstance(value, bytes) or not value.startswith(head):
            return
        at = value.find(sep)
        while at != -1:
            try:
                if json.loads(value[len(head) : at]) == schema:
                    self._prefix = value[: at + len(sep)]
                    return
            except ValueError:
                pass
            at = value.find(sep, at + 1)

    def _learn_key(self, key: bytes | None) -> None:
        if self.key or not key:
            return
        try:
            obj = json.loads(key)
        except ValueError:
            return
        if isinstance(obj, dict) and set(obj) == {"schema", "payload"}:
            obj = obj["payload"]
        if isinstance(obj, dict) and obj:
            self.key = tuple(obj)

    def decode(
        self,
        values: Sequence[bytes | None],
        lsn: Sequence[int],
        seq: Sequence[int],
        *,
        keys: Sequence[bytes | None] | None = None,
        where: Sequence[tuple[int, int]] | None = None,
        quarantine: bool = False,
    ) -> DecodedTable:
        """`values[i]` at position (lsn[i], seq[i]); `where[i]` = (partition, offset) for errors.

        A record that cannot be read raises `EnvelopeError`, or with `quarantine` is left out
        and listed in `DecodedTable.rejected` as (i, reason)."""
        images: list[dict] = []
        index: list[int] = []  # record of each image
        ops: list[str] = []
        lsns: list[int] = []
        seqs: list[int] = []
        ts_ms: list[int | None] = []  # per row
        all_ts: list[int] = []  # rows and truncates
        deletes: list[bool] = []
        src_lsns: list[int | None] = []  # source.lsn: identifies a re-sent event
        out = DecodedTable(pa.table({}))

        def reject(i: int, why: str) -> None:
            if quarantine:
                out.rejected.append((i, why))
                return
            p, o = where[i] if where is not None else (None, i)
            raise EnvelopeError(
                f"Debezium record {self.topic} partition {p} offset {o}: {why} "
                "(the batch was not applied; fix or skip the record, then re-run)"
            )

        for i, value in enumerate(values):
            if value is None or len(value) == 0:
                out.tombstones += 1
                continue
            prefix = self._prefix
            try:
                if prefix is not None and value.startswith(prefix) and value.endswith(b"}"):
                    # the same schema text as the previous record: parse only the payload
                    obj = {"payload": json.loads(value[len(prefix) : -1])}
                else:
                    obj = json.loads(value)
                    if isinstance(obj, dict) and set(obj) == {"schema", "payload"}:
                        self._remember_prefix(value, obj["schema"])
            except ValueError as exc:
                reject(i, f"not JSON ({exc})")
                continue
            if not isinstance(obj, dict):
                reject(i, "not a JSON object")
                continue
            if "payload" in obj and set(obj) <= {"schema", "payload"}:
                if isinstance(obj.get("schema"), dict):
                    self._learn_schema(obj["schema"])
                obj = obj["payload"]
                if obj is None:
                    out.tombstones += 1
                    continue
                if not isinstance(obj, dict):
                    reject(i, "payload is not an object")
                    continue
            op = obj.get("op")
            if op not in OPS:
                reject(i, f"unknown or missing op {str(op)[:40]!r}")
                continue
            source = obj.get("source") or {}
            if not isinstance(source, dict):
                reject(i, "source is not an object")
                continue
            if source.get("table") not in (None, self.table):
                other = str(source.get("table"))[:80]
                reject(i, f"record of table {other!r}, expected {self.table!r}")
                continue
            image = None
            if op != "t":
                image = obj.get("before" if op == "d" else "after")
                if not isinstance(image, dict):
                    reject(i, f"op {op!r} without its {'before' if op == 'd' else 'after'} image")
                    continue
            if keys is not None:
                self._learn_key(keys[i])
            src_lsn = source.get("lsn")
            if src_lsn is not None and not isinstance(src_lsn, int):
                reject(i, f"source.lsn {str(src_lsn)[:40]!r} is not an integer")
                continue
            ts = source.get("ts_ms", obj.get("ts_ms"))
            if ts is not None:
                all_ts.append(ts)
            if op == "t":
                out.truncates.append(Position(int(lsn[i]), int(seq[i])))
                if src_lsn is not None:
                    out.truncate_source_lsns[out.truncates[-1]] = src_lsn
                continue
            images.append(image)
            index.append(i)
            ops.append(op)
            lsns.append(int(lsn[i]))
            seqs.append(int(seq[i]))
            ts_ms.append(ts)
            deletes.append(op == "d")
            src_lsns.append(src_lsn)

        out.min_commit_ts = _ts_from_ms(min(all_ts)) if all_ts else None
        out.max_commit_ts = _ts_from_ms(max(all_ts)) if all_ts else None
        parts = [images, ops, lsns, seqs, ts_ms, deletes, src_lsns]
        if quarantine:
            try:
                out.rows = self._to_arrow(*parts)
                return out
            except EnvelopeError:
                # a value that does not fit its column: find the records that hold one
                keep = self._readable(parts, index, out.rejected)
                parts = [[col[j] for j in keep] for col in parts]
        out.rows = self._to_arrow(*parts)
        return out

    def _readable(self, parts: list[list], index: list[int], rejected: list) -> list[int]:
        """Rows whose values convert on their own; the others go to `rejected`."""
        learned = dict(self.types)
        keep = []
        for j, i in enumerate(index):
            try:
                self._to_arrow(*([col[j]] for col in parts))
                keep.append(j)
            except EnvelopeError as exc:
                rejected.append((i, str(exc).split(": ", 1)[-1]))
            finally:
                self.types = dict(learned)  # one record must not decide a column's type
        rejected.sort()
        return keep

    # -- columns ----------------------------------------------------------------------------

    def _column_names(self, images: list[dict]) -> list[str]:
        names = list(self.columns)
        seen = set(names)
        for name in self.hints:
            if name not in seen:
                names.append(name)
                seen.add(name)
        for image in images:
            for name in image:
                if name not in seen:
                    names.append(name)
                    seen.add(name)
        return names

    def _to_arrow(self, images, ops, lsns, seqs, ts_ms, deletes, src_lsns) -> pa.Table:
        n = len(images)
        names = self._column_names(images)
        unchanged: list[list[str] | None] = [None] * n
        # delete images with only the key (REPLICA IDENTITY DEFAULT): keep the previous values
        nonkey = [c for c in names if c not in self.key]
        for i in range(n):
            if deletes[i] and nonkey and all(images[i].get(c) is None for c in nonkey):
                unchanged[i] = list(nonkey)
        arrays, fields = [], []
        for name in names:
            raw = [img.get(name) for img in images]
            for i, v in enumerate(raw):
                if v == PLACEHOLDER or v == PLACEHOLDER_B64:
                    raw[i] = None
                    if unchanged[i] is None:
                        unchanged[i] = []
                    if name not in unchanged[i]:
                        unchanged[i].append(name)
            arr = self._convert(name, raw)
            arrays.append(arr)
            fields.append(pa.field(name, arr.type))
        ts = pa.array([t * 1000 if t is not None else None for t in ts_ms], pa.int64())
        meta = [
            pa.array(np.asarray(lsns, np.int64)),
            pa.array(np.asarray(seqs, np.int64)),
            pa.array(ops, pa.string()),
            pa.array(np.asarray(deletes, bool)),
            ts.cast(pa.timestamp("us", tz="UTC")),
            pa.array(unchanged, pa.list_(pa.string())),
            pa.array(src_lsns, pa.int64()),
        ]
        schema = pa.schema(fields + meta_schema_fields() + [pa.field(SOURCE_LSN, pa.int64())])
        return pa.Table.from_arrays(arrays + meta, schema=schema)

    def _convert(self, name: str, values: list) -> pa.Array:
        col = self.columns.get(name)
        hint = self.hints.get(name)
        target = hint or self.types.get(name) or (col.arrow_type() if col else None)
        try:
            arr = _natural(values, col, target)
            if target is not None and arr.type != target:
                arr = _cast(arr, target, col)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError, TypeError) as exc:
            raise EnvelopeError(
                f"Debezium records of {self.topic}: column {name!r} cannot be read as "
                f"{target or 'its JSON type'}: {exc}"
            ) from None
        if arr.null_count < len(arr) or target is not None:
            self.types.setdefault(name, arr.type)
        return arr


def _natural(values: list, col: Column | None, target: pa.DataType | None) -> pa.Array:
    """Values as Debezium encodes them -> an Arrow array of the column's type."""
    s = col.semantic if col else None
    if s == DECIMAL:
        scale = int(col.param("scale") or 0)
        return pa.array([_unscaled(v, scale) for v in values], col.arrow_type())
    if s == VARIABLE_DECIMAL:
        return pa.array([_variable_decimal(v) for v in values], pa.string())
    if s in (MICRO_TIMESTAMP, CONNECT_TIMESTAMP, TIMESTAMP, NANO_TIMESTAMP):
        ints = pa.array(values, pa.int64())
        if s == NANO_TIMESTAMP:
            return pa.array([None if v is None else v // 1000 for v in values], pa.int64()).cast(
                pa.timestamp("us")
            )
        unit = "us" if s == MICRO_TIMESTAMP else "ms"
        return ints.cast(pa.timestamp(unit)).cast(pa.timestamp("us"))
    if s in (DATE, CONNECT_DATE):
        return pa.array(values, pa.int32()).cast(pa.date32())
    if s == ZONED_TIMESTAMP:
        return pa.array(values, pa.string()).cast(pa.timestamp("us", tz="UTC"))
    if col is not None and col.type == "bytes":
        return pa.array([None if v is None else base64.b64decode(v) for v in values], pa.binary())
    if col is not None and col.type in ("struct", "array", "map"):
        return pa.array(
            [None if v is None else json.dumps(v, separators=(",", ":")) for v in values],
            pa.string(),
        )
    if col is not None:
        return pa.array(values, _CONNECT_TYPES.get(col.type, pa.string()))
    return _infer(values)


def _infer(values: list) -> pa.Array:
    kinds = {type(v) for v in values if v is not None}
    if not kinds:
        return pa.nulls(len(values), pa.string())
    if kinds <= {bool}:
        return pa.array(values, pa.bool_())
    if kinds <= {int}:
        return pa.array(values, pa.int64())
    if kinds <= {int, float}:
        return pa.array(values, pa.float64())
    if kinds <= {str}:
        return pa.array(values, pa.string())
    return pa.array(
        [
            None if v is None else v if isinstance(v, str) else json.dumps(v, separators=(",", ":"))
            for v in values
        ],
        pa.string(),
    )


def _cast(arr: pa.Array, target: pa.DataType, col: Column | None) -> pa.Array:
    if pa.types.is_timestamp(target) and pa.types.is_integer(arr.type):
        # a schemaless epoch number: in the unit the hint names
        return arr.cast(pa.int64()).cast(pa.timestamp(target.unit, tz=target.tz))
    if pa.types.is_date(target) and pa.types.is_integer(arr.type):
        return arr.cast(pa.int32()).cast(pa.date32())
    if pa.types.is_timestamp(target) and pa.types.is_timestamp(arr.type):
        if target.tz is not None and arr.type.tz is None:
            return arr.cast(pa.timestamp(arr.type.unit)).cast(
                pa.timestamp(target.unit, tz=target.tz)
            )
    if pa.types.is_null(arr.type) or arr.null_count == len(arr):
        return pa.nulls(len(arr), target)
    return arr.cast(target)


def _unscaled(v: str | None, scale: int) -> Decimal | None:
    if v is None:
        return None
    unscaled = int.from_bytes(base64.b64decode(v), "big", signed=True)
    return Decimal(unscaled).scaleb(-scale)


def _variable_decimal(v: Mapping[str, Any] | None) -> str | None:
    if v is None:
        return None
    d = _unscaled(v["value"], int(v["scale"]))
    return format(d, "f")


# -- encoding (what a Debezium connector emits): used by tests and the bench ------------------


def encode_decimal(d: Decimal, scale: int) -> str:
    """`decimal.handling.mode=precise`: base64 of the big-endian two's-complement unscaled value."""
    unscaled = int(d.scaleb(scale).to_integral_value())
    n = max(1, (unscaled.bit_length() + 8) // 8)
    return base64.b64encode(unscaled.to_bytes(n, "big", signed=True)).decode()


__all__ = [
    "Column",
    "DecodedTable",
    "EnvelopeError",
    "TableDecoder",
    "encode_decimal",
    "row_columns",
]
