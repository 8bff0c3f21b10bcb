"""PostgreSQL column values as Arrow: the Arrow type of each column type (by oid and typmod)
and the vectorized conversion of pgoutput's (and COPY's) text values to it, with the `__raw`
companions of `analytics_assets.lib.values` and the per-row reject reasons of values that cannot
be taken. The protocol walk that finds the values is `analytics_assets.lib.pgoutput`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from analytics_assets.lib.errors import DecodeError
from analytics_assets.lib.values import decimal_type, has_raw, raw_column, split_text

# Type oids
BOOL, BYTEA, CHAR, NAME, INT8, INT2, INT4, TEXT, OID = 16, 17, 18, 19, 20, 21, 23, 25, 26
JSON, FLOAT4, FLOAT8, BPCHAR, VARCHAR, DATE, TIME = 114, 700, 701, 1042, 1043, 1082, 1083
TIMESTAMP, TIMESTAMPTZ, NUMERIC, UUID, JSONB = 1114, 1184, 1700, 2950, 3802


@dataclass(frozen=True)
class RelationColumn:
    """One column of a source table, as a pgoutput Relation message (or the catalog) states it."""

    name: str
    type_oid: int
    typmod: int
    is_key: bool


def arrow_type(type_oid: int, typmod: int) -> pa.DataType:
    """The Arrow type a Postgres column is decoded to.

    Numerics keep full precision: `numeric(p, s)` that a decimal128 holds becomes one (a negative
    scale, PostgreSQL 15's numeric(p, -s), as decimal128(p + s, 0)); unconstrained `numeric` and
    wider ones stay exact as strings (a decimal128(38, 10) would round values with more than 10
    fractional digits). Dates, timestamps and decimals get a `__raw` companion for the values
    they cannot hold (`analytics_assets.lib.values`).
    """
    if type_oid in (INT8, OID):
        return pa.int64()
    if type_oid == INT4:
        return pa.int32()
    if type_oid == INT2:
        return pa.int16()
    if type_oid == BOOL:
        return pa.bool_()
    if type_oid in (FLOAT4, FLOAT8):
        return pa.float64()
    if type_oid == NUMERIC:
        precision, scale = numeric_precision_scale(typmod)
        return pa.string() if precision is None else decimal_type(precision, scale)
    if type_oid == TIMESTAMPTZ:
        return pa.timestamp("us", tz="UTC")
    if type_oid == TIMESTAMP:
        return pa.timestamp("us")
    if type_oid == DATE:
        return pa.date32()
    if type_oid == BYTEA:
        return pa.binary()
    return pa.string()  # text, varchar, bpchar, json, jsonb, uuid, time, interval, arrays...


def numeric_precision_scale(typmod: int) -> tuple[int | None, int]:
    """(precision, scale) of a numeric typmod; the scale is an 11-bit signed field since
    PostgreSQL 15 (numeric(5, -2), numeric(2, 5))."""
    if typmod < 4:
        return None, 0
    value = typmod - 4
    return (value >> 16) & 0xFFFF, ((value & 0x7FF) ^ 0x400) - 0x400


def source_fields(columns: Sequence[RelationColumn]) -> list[pa.Field]:
    """The Arrow fields of a relation's columns: each column, then its `__raw` companion."""
    fields = []
    for c in columns:
        t = arrow_type(c.type_oid, c.typmod)
        fields.append(pa.field(c.name, t))
        if has_raw(t):
            fields.append(pa.field(raw_column(c.name), pa.string()))
    return fields


def text_to_arrow(values: pa.Array, type_oid: int, typmod: int) -> pa.Array:
    """Convert Postgres text output (DateStyle ISO, UTC) to the column's Arrow type, vectorized
    (a value the type cannot hold becomes NULL: see `text_to_columns` for its companion)."""
    return text_to_columns(values, type_oid, typmod)[0]


def text_to_columns(
    values: pa.Array, type_oid: int, typmod: int
) -> tuple[pa.Array, pa.Array | None]:
    """Postgres text output -> (typed array, `__raw` companion or None for types without one).
    Raises DecodeError for text the type cannot parse (see `columns_from_text`)."""
    target = arrow_type(type_oid, typmod)
    try:
        if has_raw(target):
            return split_text(values, target)
        if pa.types.is_string_view(values.type) and not (
            pa.types.is_integer(target) or pa.types.is_floating(target)
        ):
            values = values.cast(pa.string())
        if target == pa.string():
            return values, None
        if type_oid == BOOL:
            return pc.equal(values, "t"), None
        if type_oid == BYTEA:
            return pa.array(
                [None if v is None else bytes.fromhex(v[2:]) for v in values.to_pylist()],
                pa.binary(),
            ), None
        if type_oid == FLOAT4:  # the float4 value itself (its shortest text is not exact)
            return pc.cast(pc.cast(values, pa.float32()), target), None
        return pc.cast(values, target), None
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError) as exc:
        raise DecodeError(
            f"cannot convert Postgres type oid {type_oid} (typmod {typmod}) to {target}: {exc}"
        ) from None


# Extra columns of a decoded table whose rows hold a value the platform cannot take: the slot
# feed turns those rows into dead letters (`feeds.slot_snapshot.split_rejected`) instead of
# applying them.
REJECT_REASON = "_reject_reason"
REJECT_VALUE = "_reject_value"


@dataclass
class Converted:
    """A relation's text columns as typed Arrow columns (companions included)."""

    names: list[str]
    arrays: list[pa.Array]
    source: np.ndarray  # per output column: index of the relation column it comes from
    reasons: pa.Array | None = None  # per row: why it cannot be taken (None: every row can)
    values: pa.Array | None = None  # per rejected row: its text values as JSON


def columns_from_text(
    values: Sequence[pa.Array],
    columns: Sequence[RelationColumn],
    *,
    check_utf8: bool = False,
    converted: dict[int, tuple[pa.Array, pa.Array | None]] | None = None,
) -> Converted:
    """Typed columns (and companions) from the text of each column. A value that cannot be
    converted (text PostgreSQL does not print; invalid UTF-8 with `check_utf8`, e.g. from a
    SQL_ASCII database) becomes NULL and its row is marked in `reasons`; the rest convert.
    `converted` holds the columns that came as binary values, already converted
    (`analytics_assets.lib.pgoutput_binary`)."""
    names: list[str] = []
    arrays: list[pa.Array] = []
    source: list[int] = []
    reasons: list[str | None] | None = None
    for j, (val, c) in enumerate(zip(values, columns, strict=True)):
        found: list[tuple[list[bool], str]] = []
        bad = _bad_utf8(val) if check_utf8 else None
        if bad is not None:
            val = _nullify(val, bad)
            found.append((bad, "text that is not valid UTF-8"))
        if converted is not None and j in converted:
            typed, raw = converted[j]
        else:
            try:
                typed, raw = text_to_columns(val, c.type_oid, c.typmod)
            except DecodeError as exc:
                typed, raw, bad = _per_value(val, c)
                found.append((bad, str(exc)))
        for bad, what in found:
            reasons = reasons or [None] * len(val)
            for i in (i for i, b in enumerate(bad) if b and reasons[i] is None):
                reasons[i] = f"column {c.name!r}: {what}"
        names.append(c.name)
        arrays.append(typed)
        source.append(j)
        if raw is not None:
            names.append(raw_column(c.name))
            arrays.append(raw)
            source.append(j)
    out = Converted(names, arrays, np.asarray(source, np.int64))
    if reasons is not None:
        out.reasons = pa.array(reasons, pa.string())
        out.values = pa.array(
            [None if r is None else _row_json(values, columns, i) for i, r in enumerate(reasons)],
            pa.binary(),
        )
    return out


def _bad_utf8(values: pa.Array) -> list[bool] | None:
    """Per value: not valid UTF-8 (None when all are). Text columns only."""
    if not (pa.types.is_string(values.type) or pa.types.is_string_view(values.type)):
        return None
    # the decoder's views leave bytes after short values as they are: validate copies
    values = values.cast(pa.string()) if pa.types.is_string_view(values.type) else values
    try:
        values.validate(full=True)
        return None
    except pa.ArrowInvalid:
        pass
    out = []
    for i in range(len(values)):
        try:
            values.slice(i, 1).validate(full=True)
            out.append(False)
        except pa.ArrowInvalid:
            out.append(True)
    return out


def _per_value(values: pa.Array, c: RelationColumn) -> tuple[pa.Array, pa.Array | None, list[bool]]:
    """`text_to_columns` value by value: the ones that convert, and which did not."""
    bad = []
    for i in range(len(values)):
        try:
            text_to_columns(values.slice(i, 1), c.type_oid, c.typmod)
            bad.append(False)
        except DecodeError:
            bad.append(True)
    kept = _nullify(values, bad)
    typed, raw = text_to_columns(kept, c.type_oid, c.typmod)
    return typed, raw, bad


def _nullify(values: pa.Array, mask: list[bool]) -> pa.Array:
    if pa.types.is_string_view(values.type):
        values = values.cast(pa.string())
    return pc.if_else(pa.array(mask), pa.scalar(None, values.type), values)


def _row_json(values: Sequence[pa.Array], columns: Sequence[RelationColumn], i: int) -> bytes:
    """One row's text values as JSON (bytes that are not UTF-8 escaped), for its dead letter."""
    row = {}
    for val, c in zip(values, columns, strict=True):
        one = val.slice(i, 1)
        one = one.cast(pa.string()) if pa.types.is_string_view(one.type) else one
        scalar = one.cast(pa.binary())[0].as_py()
        row[c.name] = None if scalar is None else scalar.decode("utf-8", "backslashreplace")
    return json.dumps(row, ensure_ascii=False).encode()


# ---------------------------------------------------------------------------------------------
# vectorized byte access


__all__ = [
    "REJECT_REASON",
    "REJECT_VALUE",
    "Converted",
    "RelationColumn",
    "arrow_type",
    "columns_from_text",
    "numeric_precision_scale",
    "source_fields",
    "text_to_arrow",
    "text_to_columns",
]
