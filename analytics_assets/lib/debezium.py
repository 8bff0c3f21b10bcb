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
- Values a typed column cannot hold (±infinity, BC, years past 9999, numeric NaN/±Infinity in
  `string` mode) follow `analytics_assets.lib.values`: typed NULL + PostgreSQL's text in
  `<column>__raw`; decimals wider than 38 digits are their exact text; `MicroTime`/`Time`/
  `NanoTime` become PostgreSQL's time text; `float32` keeps its float4 value.
- Unchanged TOAST values (Debezium's `__debezium_unavailable_value` placeholder) and delete
  images that carry only the key (REPLICA IDENTITY DEFAULT) are listed in `_unchanged_cols`, so
  the warehouse keeps the previous values.

Each value's decoding (semantic types, the `__raw` rule, declared types) is
`analytics_assets.lib.debezium_types`.

Bad records: a record that is not JSON, is truncated, has an unknown op, lacks the image its op
needs, belongs to another table (`source.table`) or holds a value its column cannot take raises
`EnvelopeError` naming topic, partition and offset, or with `decode(..., quarantine=True)` (what
the Kafka feed uses) is left out and listed in `DecodedRecords.rejected` with the reason; the feed
turns those into dead letters (`raw._dead_letters`, written in the batch's transaction) and
moves past them.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from analytics_assets.lib.debezium_types import (
    SPECIAL_FLOATS,
    ConnectField,
    cast_values,
    column_types_from_settings,
    decode_values,
    encode_decimal,
    row_columns,
)
from analytics_assets.lib.errors import EnvelopeError
from analytics_assets.lib.feeds.base import LSN, SEQ, SOURCE_LSN, Position, meta_schema_fields
from analytics_assets.lib.values import INT64_MAX, has_raw, raw_column

PLACEHOLDER = "__debezium_unavailable_value"
PLACEHOLDER_B64 = base64.b64encode(PLACEHOLDER.encode()).decode()
# What Debezium puts in a key-only delete image for NOT NULL columns (their types' defaults):
# "", 0, 0.0, epoch 0 in any unit, 1970-01-01T00:00:00Z, a zero `precise` decimal ("AA==")
PLACEHOLDER_DEFAULTS = frozenset({"", 0, "AA==", "1970-01-01T00:00:00Z"})
OPS = frozenset("cudrt")


@dataclass
class DecodedRecords:
    """One batch of a table's Debezium records, decoded: row images with the metadata columns,
    truncates, and the records left out by quarantine (`rejected`)."""

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
        self.columns: dict[str, ConnectField] = {}
        self.types: dict[str, pa.DataType] = {}
        self._last_schema: Mapping[str, Any] | None = None
        self._last_columns: dict[str, ConnectField] = {}
        self._schemas: list[tuple[Mapping[str, Any], dict[str, ConnectField]]] = []
        self._prefix: bytes | None = None

    # -- per record -------------------------------------------------------------------------

    def _schema_columns(self, schema: Mapping[str, Any]) -> dict[str, ConnectField]:
        """The row columns a record's schema describes (raises on a malformed schema). Records
        with the same schema share one dict: a batch is converted per schema."""
        if schema == self._last_schema:  # every record repeats it: compare (C speed), not parse
            return self._last_columns
        cols = next((c for seen, c in self._schemas if seen == schema), None)
        if cols is None:
            cols = {**self.columns, **{c.name: c for c in row_columns(schema)}}
            self._schemas = [*self._schemas[-7:], (schema, cols)]
        self._last_schema, self._last_columns = schema, cols
        return cols

    def _adopt(self, columns: dict[str, ConnectField]) -> None:
        """The batch's main schema becomes the decoder's: a column whose definition changed
        forgets the type learned for it."""
        for name, col in columns.items():
            if self.columns.get(name) != col:
                self.types.pop(name, None)
        self.columns = dict(columns)

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
    ) -> DecodedRecords:
        """`values[i]` at position (lsn[i], seq[i]); `where[i]` = (partition, offset) for errors.

        A record that cannot be read raises `EnvelopeError`, or with `quarantine` is left out
        and listed in `DecodedRecords.rejected` as (i, reason)."""
        images: list[dict] = []
        index: list[int] = []  # record of each image
        ops: list[str] = []
        lsns: list[int] = []
        seqs: list[int] = []
        ts_ms: list[int | None] = []  # per row
        all_ts: list[int] = []  # rows and truncates
        deletes: list[bool] = []
        src_lsns: list[int | None] = []  # source.lsn: identifies a re-sent event
        schemas: list[dict[str, ConnectField]] = []  # the columns each image's record describes
        current = self.columns  # for records without the schema wrapper
        out = DecodedRecords(pa.table({}))

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
                    try:
                        current = self._schema_columns(obj["schema"])
                    except (KeyError, TypeError, AttributeError, ValueError) as exc:
                        self._prefix = None  # its text must not stand for a schema
                        reject(i, f"schema is not a Debezium row schema ({str(exc)[:80]})")
                        continue
                elif prefix is not None and "schema" not in obj:
                    current = self._last_columns  # the schema text of the previous record
                obj = obj["payload"]
                if obj is None:
                    out.tombstones += 1
                    continue
                if not isinstance(obj, dict):
                    reject(i, "payload is not an object")
                    continue
            op = obj.get("op")
            if not isinstance(op, str) or op not in OPS:
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
            if src_lsn is not None and not _int_in(src_lsn, 0, INT64_MAX):
                reject(i, f"source.lsn {str(src_lsn)[:40]!r} is not an LSN")
                continue
            ts = source.get("ts_ms", obj.get("ts_ms"))
            if ts is not None and not _int_in(ts, 0, MAX_TS_MS):
                reject(i, f"ts_ms {str(ts)[:40]!r} is not a time in epoch milliseconds")
                continue
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
            schemas.append(current)

        out.min_commit_ts = _ts_from_ms(min(all_ts)) if all_ts else None
        out.max_commit_ts = _ts_from_ms(max(all_ts)) if all_ts else None
        parts = [images, ops, lsns, seqs, ts_ms, deletes, src_lsns]
        # each record is read by its own schema: one group per schema, the largest first (it
        # is the table's; it sets the column types the others must fit)
        groups: dict[int, list[int]] = {}
        for j, cols in enumerate(schemas):
            groups.setdefault(id(cols), []).append(j)
        order = sorted(groups.values(), key=len, reverse=True)
        self._adopt(schemas[order[0][0]] if order else current)
        main = self.columns
        tables = []
        for members in order:
            self.columns = schemas[members[0]]
            sub = [[col[j] for j in members] for col in parts]
            rows = self._group_rows(sub, [index[j] for j in members], out, quarantine)
            if rows is None:
                continue
            if tables and rows.num_rows:
                try:
                    pa.concat_tables([tables[0], rows], promote_options="permissive")
                except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
                    for j in members:
                        reject(index[j], f"its schema conflicts with the table's ({exc})"[:200])
                    continue
            tables.append(rows)
        self.columns = main
        out.rejected.sort()
        if not images:
            out.rows = self._to_arrow(*parts)
        elif not tables:  # every record was quarantined
            out.rows = pa.schema(
                meta_schema_fields() + [pa.field(SOURCE_LSN, pa.int64())]
            ).empty_table()
        elif len(tables) == 1:
            out.rows = tables[0]
        else:
            rows = pa.concat_tables(tables, promote_options="permissive")
            out.rows = rows.sort_by([(LSN, "ascending"), (SEQ, "ascending")])
        return out

    def _group_rows(
        self, parts: list[list], index: list[int], out, quarantine: bool
    ) -> pa.Table | None:
        """The rows of records that share a schema; with `quarantine`, those holding a value
        their column cannot take go to `out.rejected` instead (None: all of them)."""
        if quarantine:
            try:
                return self._to_arrow(*parts)
            except EnvelopeError:
                # a value that does not fit its column: find the records that hold one
                keep = self._readable(parts, index, out.rejected)
                if not keep:
                    return None
                parts = [[col[j] for j in keep] for col in parts]
                try:
                    return self._to_arrow(*parts)
                except EnvelopeError as exc:  # each converts alone, not together
                    out.rejected += [(index[j], str(exc).split(": ", 1)[-1]) for j in keep]
                    return None
        return self._to_arrow(*parts)

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
        return keep

    def _key_only(self, image: Mapping[str, Any], nonkey: list[str]) -> bool:
        """A delete's before image that carries the key only (REPLICA IDENTITY DEFAULT). Debezium
        fills it with null, or for a NOT NULL column with its type's placeholder ("", 0, false,
        1970-01-01, a zero decimal): an image of only those carries no values. (A full image
        that happens to hold only those values is the row as raw has it already.)"""
        for c in nonkey:
            v = image.get(c)
            col = self.columns.get(c)
            if v is None or (col is not None and col.type == "struct" and _zero_struct(v)):
                continue
            if isinstance(v, bool):
                if v:
                    return False
                continue
            if isinstance(v, (dict, list)) or v not in PLACEHOLDER_DEFAULTS:
                return False
            if col is not None and col.semantic is None and col.type == "bytes" and v:
                return False  # a bytea value
        return True

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
            if deletes[i] and nonkey and self._key_only(images[i], nonkey):
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
            arr, text = self._convert(name, raw)
            arrays.append(arr)
            fields.append(pa.field(name, arr.type))
            if has_raw(arr.type):  # the lossless rule of analytics_assets.lib.values
                arrays.append(pa.array(text, pa.string()) if text else pa.nulls(n, pa.string()))
                fields.append(pa.field(raw_column(name), pa.string()))
                for cols in unchanged:
                    if cols is not None and name in cols:
                        cols.append(raw_column(name))
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

    def _convert(self, name: str, values: list) -> tuple[pa.Array, list | None]:
        """The column's typed array and, for values it cannot hold, their PostgreSQL text (the
        `__raw` companion; None when every value fits)."""
        col = self.columns.get(name)
        hint = self.hints.get(name)
        target = hint or self.types.get(name) or (col.arrow_type() if col else None)
        try:
            arr, text = decode_values(values, col, target)
            if target is not None and arr.type != target:
                arr, text = cast_values(arr, target, col, values)
        except (
            pa.ArrowInvalid,
            pa.ArrowNotImplementedError,
            ValueError,
            TypeError,
            ArithmeticError,  # decimal syntax, integers past int64
            LookupError,  # a struct without its fields
        ) as exc:
            raise EnvelopeError(
                f"Debezium records of {self.topic}: column {name!r} cannot be read as "
                f"{target or 'its JSON type'}: {str(exc)[:200]}"
            ) from None
        if arr.null_count < len(arr) or target is not None:
            self.types.setdefault(name, arr.type)
        return arr, text


MAX_TS_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z


def _int_in(v: Any, low: int, high: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and low <= v <= high


def _zero_struct(v: Any) -> bool:
    """A VariableScaleDecimal placeholder: zero at scale 0."""
    return isinstance(v, Mapping) and v.get("value") in ("AA==", "") and not v.get("scale")


__all__ = [
    "SPECIAL_FLOATS",
    "ConnectField",
    "DecodedRecords",
    "EnvelopeError",
    "TableDecoder",
    "column_types_from_settings",
    "encode_decimal",
    "row_columns",
]
