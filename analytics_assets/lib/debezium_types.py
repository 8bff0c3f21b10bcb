"""Debezium's value encodings (Kafka Connect JSON converter) -> Arrow arrays: the row schema's
fields (`ConnectField`), each semantic type's decoding, the lossless `__raw` rule for values a typed
column cannot hold (`analytics_assets.lib.values`), column types declared for schemaless topics
(CDC_COLUMN_TYPES) and the `precise` decimal encoding the tests and the bench emit. The envelope
(ops, images, positions, quarantine) is `analytics_assets.lib.debezium`.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from analytics_assets.lib.values import (
    HIGH_DAY,
    HIGH_US,
    INT32_MAX,
    INT32_MIN,
    INT64_MAX,
    INT64_MIN,
    LOW_DAY,
    LOW_US,
    days_from_civil,
    decimal_text,
    decimal_type,
    pg_date_text,
    pg_time_text,
    pg_timestamp_text,
)

DECIMAL = "org.apache.kafka.connect.data.Decimal"
VARIABLE_DECIMAL = "io.debezium.data.VariableScaleDecimal"
ZONED_TIMESTAMP = "io.debezium.time.ZonedTimestamp"
MICRO_TIMESTAMP = "io.debezium.time.MicroTimestamp"
TIMESTAMP = "io.debezium.time.Timestamp"
NANO_TIMESTAMP = "io.debezium.time.NanoTimestamp"
DATE = "io.debezium.time.Date"
CONNECT_TIMESTAMP = "org.apache.kafka.connect.data.Timestamp"
CONNECT_DATE = "org.apache.kafka.connect.data.Date"
MICRO_TIME = "io.debezium.time.MicroTime"
TIME = "io.debezium.time.Time"
NANO_TIME = "io.debezium.time.NanoTime"
CONNECT_TIME = "org.apache.kafka.connect.data.Time"  # time.precision.mode=connect: millis
# decimal.handling.mode=string spells numeric NaN/±Infinity as SpecialValueDecimal's names
SPECIAL_DECIMALS = {
    "NAN": "NaN",
    "NaN": "NaN",
    "POSITIVE_INFINITY": "Infinity",
    "Infinity": "Infinity",
    "NEGATIVE_INFINITY": "-Infinity",
    "-Infinity": "-Infinity",
}
# Kafka Connect's JsonConverter (Jackson) quotes non-finite doubles
SPECIAL_FLOATS = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}

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


@dataclass(frozen=True)
class ConnectField:
    """One field of a Debezium row schema (a Kafka Connect field; the pgoutput decoder's
    counterpart is `pgoutput_types.RelationColumn`)."""

    name: str
    type: str  # Kafka Connect type: int16, int64, string, bytes, struct, ...
    semantic: str | None = None  # the schema `name`, e.g. io.debezium.time.ZonedTimestamp
    parameters: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_schema(cls, f: Mapping[str, Any]) -> ConnectField:
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
            return decimal_type(self.param("connect.decimal.precision"), scale)
        if s == ZONED_TIMESTAMP:
            return pa.timestamp("us", tz="UTC")
        if s in (MICRO_TIMESTAMP, TIMESTAMP, NANO_TIMESTAMP, CONNECT_TIMESTAMP):
            return pa.timestamp("us")
        if s in (DATE, CONNECT_DATE):
            return pa.date32()
        if s == VARIABLE_DECIMAL or self.type in ("struct", "array", "map"):
            return pa.string()
        if s in (MICRO_TIME, TIME, NANO_TIME, CONNECT_TIME):
            return pa.string()  # PostgreSQL's text of the time (24:00:00 is one)
        if self.is_string_decimal:
            # decimal.handling.mode=string keeps the column's precision/scale as parameters
            # (when the connector propagates them): exact decimals
            scale = int(self.param("connect.decimal.scale") or self.param("scale") or 0)
            return decimal_type(self.param("connect.decimal.precision"), scale)
        return _CONNECT_TYPES.get(self.type, pa.string())

    @property
    def is_string_decimal(self) -> bool:
        return self.type == "string" and bool(self.param("connect.decimal.precision"))


def row_columns(schema: Mapping[str, Any]) -> list[ConnectField]:
    """The row columns from an envelope schema (the `after`, else `before`, struct)."""
    fields = {f.get("field"): f for f in schema.get("fields", [])}
    for image in ("after", "before"):
        f = fields.get(image)
        if f and f.get("fields"):
            return [ConnectField.from_schema(c) for c in f["fields"]]
    return []


def decode_values(
    values: list, col: ConnectField | None, target: pa.DataType | None
) -> tuple[pa.Array, list | None]:
    """Values as Debezium encodes them -> an Arrow array of the column's type, and the
    PostgreSQL text of the values that type cannot hold (None when all fit)."""
    s = col.semantic if col else None
    if s == DECIMAL:
        t = col.arrow_type()
        scale = int(col.param("scale") or 0)
        text = [None if v is None else decimal_text(_unscaled(v), scale) for v in values]
        return _decimals(text, t), None
    if s == VARIABLE_DECIMAL:
        return pa.array([_variable_decimal(v) for v in values], pa.string()), None
    if s in (MICRO_TIMESTAMP, CONNECT_TIMESTAMP, TIMESTAMP, NANO_TIMESTAMP):
        per_us = {MICRO_TIMESTAMP: (1, 1), NANO_TIMESTAMP: (1, 1000)}.get(s, (1000, 1))
        return _epoch_timestamps(values, *per_us, pa.timestamp("us"))
    if s in (DATE, CONNECT_DATE):
        return _epoch_dates(values)
    if s == ZONED_TIMESTAMP:
        return _zoned_timestamps(values)
    if s in (MICRO_TIME, TIME, NANO_TIME, CONNECT_TIME):
        mul, div = {MICRO_TIME: (1, 1), TIME: (1000, 1), CONNECT_TIME: (1000, 1)}.get(s, (1, 1000))
        return pa.array(
            [None if v is None else pg_time_text(_integer(v) * mul // div) for v in values],
            pa.string(),
        ), None
    if col is not None and col.type == "bytes":
        return pa.array(
            [None if v is None else base64.b64decode(v, validate=True) for v in values],
            pa.binary(),
        ), None
    if col is not None and col.type in ("struct", "array", "map"):
        return pa.array([_json_text(v) for v in values], pa.string()), None
    if col is not None and col.is_string_decimal:
        return _decimal_strings(values, col.arrow_type())
    if col is not None:
        t = _CONNECT_TYPES.get(col.type, pa.string())
        if pa.types.is_floating(t):
            values = [SPECIAL_FLOATS.get(v, v) if isinstance(v, str) else v for v in values]
        if col.type in ("float32", "float"):  # the float4 value itself, as the slot feed has it
            return pa.array(values, pa.float32()).cast(t), None
        return pa.array(values, t), None
    return _infer(values), None


def _json_text(v: Any) -> str | None:
    if v is None:
        return None
    return json.dumps(v, separators=(",", ":"), ensure_ascii=False)


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
        [None if v is None else v if isinstance(v, str) else _json_text(v) for v in values],
        pa.string(),
    )


def cast_values(
    arr: pa.Array, target: pa.DataType, col: ConnectField | None, values: list
) -> tuple[pa.Array, list | None]:
    """A column whose declared type (a hint, or what earlier batches learned) differs from what
    its values decode to: schemaless epoch numbers, ISO strings, decimal text."""
    if pa.types.is_timestamp(target) and pa.types.is_integer(arr.type):
        # a schemaless epoch number: in the unit the hint names
        per_us = {"s": (1_000_000, 1), "ms": (1000, 1), "us": (1, 1), "ns": (1, 1000)}
        return _epoch_timestamps(values, *per_us[target.unit], target)
    if pa.types.is_date(target) and pa.types.is_integer(arr.type):
        return _epoch_dates(values)
    if pa.types.is_timestamp(target) and pa.types.is_string(arr.type):
        typed, text = _zoned_timestamps(values)
        return typed.cast(pa.timestamp("us")).cast(target), text
    if pa.types.is_decimal(target) and pa.types.is_string(arr.type):
        return _decimal_strings(values, target)
    if pa.types.is_timestamp(target) and pa.types.is_timestamp(arr.type):
        if target.tz is not None and arr.type.tz is None:
            return arr.cast(pa.timestamp(arr.type.unit)).cast(
                pa.timestamp(target.unit, tz=target.tz)
            ), None
    if pa.types.is_null(arr.type) or arr.null_count == len(arr):
        return pa.nulls(len(arr), target), None
    return arr.cast(target), None


def _integer(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError(f"{str(v)[:40]!r} is not an integer")
    return v


def _unscaled(v: Any) -> int:
    """The exact integer of a `precise` decimal: base64 big-endian two's complement bytes."""
    if not isinstance(v, str):
        raise TypeError(f"{str(v)[:40]!r} is not a base64 decimal")
    return int.from_bytes(base64.b64decode(v, validate=True), "big", signed=True)


def _decimals(text: list, t: pa.DataType) -> pa.Array:
    """Exact decimal text -> decimal128 (built from exact Decimals, never through a rounding
    context) or, for a decimal wider than decimal128, the text itself."""
    if pa.types.is_decimal(t):
        return pa.array([None if v is None else Decimal(v) for v in text], t)
    return pa.array(text, pa.string())


def _decimal_strings(values: list, t: pa.DataType) -> tuple[pa.Array, list | None]:
    """decimal.handling.mode=string: decimal text, or NaN/±Infinity under Debezium's names
    (PostgreSQL's spelling in raw: in the `__raw` companion, or the text column itself)."""
    special = [SPECIAL_DECIMALS.get(v) if isinstance(v, str) else None for v in values]
    for v in values:
        if v is not None and not isinstance(v, str):
            raise TypeError(f"{str(v)[:40]!r} is not decimal text")
    if not pa.types.is_decimal(t):
        return pa.array([sp or v for sp, v in zip(special, values, strict=True)], pa.string()), None
    plain = [None if sp else v for sp, v in zip(special, values, strict=True)]
    return _decimals(plain, t), (special if any(special) else None)


def _epoch_timestamps(
    values: list, mul: int, div: int, target: pa.DataType
) -> tuple[pa.Array, list | None]:
    """Epoch numbers (`us = v * mul // div`) -> timestamps; values outside 0001..9999 and
    Debezium's ±infinity (the int64 extremes) -> NULL + PostgreSQL's text."""
    ints = pa.array(values, pa.int64())
    try:  # the usual batch: every value inside the range, vectorized
        us = ints if (mul, div) == (1, 1) else pc.divide(pc.multiply_checked(ints, mul), div)
        if not pc.any(pc.or_(pc.less(us, LOW_US), pc.greater_equal(us, HIGH_US))).as_py():
            return us.cast(target), None
    except pa.ArrowInvalid:  # an overflow: infinity or a far year in milliseconds
        pass
    micros: list = []
    text: list = []
    for v in ints.to_pylist():
        u = None if v is None or v in (INT64_MAX, INT64_MIN) else v * mul // div
        inside = v is None or (u is not None and LOW_US <= u < HIGH_US)
        micros.append(u if inside else None)
        if inside:
            text.append(None)
        elif u is None:
            text.append("infinity" if v > 0 else "-infinity")
        else:
            text.append(pg_timestamp_text(u, tz=target.tz is not None))
    return pa.array(micros, pa.int64()).cast(target), text


def _epoch_dates(values: list) -> tuple[pa.Array, list | None]:
    """Epoch days -> dates; outside 0001..9999 and ±infinity (the int32 extremes) -> NULL +
    PostgreSQL's text."""
    ints = pa.array(values, pa.int64())
    if not pc.any(pc.or_(pc.less(ints, LOW_DAY), pc.greater_equal(ints, HIGH_DAY))).as_py():
        return ints.cast(pa.int32()).cast(pa.date32()), None
    days: list = []
    text: list = []
    for v in ints.to_pylist():
        inside = v is None or LOW_DAY <= v < HIGH_DAY
        days.append(v if inside else None)
        text.append(None if inside else pg_date_text(min(max(v, INT32_MIN), INT32_MAX)))
    return pa.array(days, pa.int32()).cast(pa.date32()), text


_ISO = re.compile(
    r"([+-]?\d{4,})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)"
)


def _zoned_timestamps(values: list) -> tuple[pa.Array, list | None]:
    """io.debezium.time.ZonedTimestamp (ISO-8601) -> timestamps in UTC; `infinity`,
    `-infinity` and instants outside 0001..9999 (Java writes `-0043-...`, `+10000-...`) ->
    NULL + PostgreSQL's text."""
    strings = pa.array(values, pa.string())
    try:
        typed = strings.cast(pa.timestamp("us", tz="UTC"))
        us = typed.cast(pa.int64())
        outside = pc.or_(pc.less(us, LOW_US), pc.greater_equal(us, HIGH_US))
        if not pc.any(outside).as_py():
            return typed, None
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    micros: list = []
    text: list = []
    for v in values:
        us = None if v is None else _iso_micros(v)
        inside = us is None or (isinstance(us, int) and LOW_US <= us < HIGH_US)
        micros.append(us if inside else None)
        text.append(None if inside else us if isinstance(us, str) else pg_timestamp_text(us, True))
    typed = pa.array(micros, pa.int64()).cast(pa.timestamp("us", tz="UTC"))
    return typed, (text if any(t is not None for t in text) else None)


def _iso_micros(v: Any) -> int | str:
    """Epoch microseconds of an ISO-8601 instant, or 'infinity' / '-infinity'."""
    if v in ("infinity", "-infinity"):
        return v
    m = _ISO.fullmatch(v) if isinstance(v, str) else None
    if m is None:
        raise ValueError(f"{str(v)[:40]!r} is not an ISO-8601 timestamp")
    year, month, day, hh, mi, ss, frac, zone = m.groups()
    us = (days_from_civil(int(year), int(month), int(day)) * 86_400 + int(hh) * 3600) * 10**6
    us += (int(mi) * 60 + int(ss)) * 10**6 + int((frac or "0").ljust(6, "0")[:6])
    if zone != "Z":
        sign = -1 if zone[0] == "-" else 1
        us -= sign * (int(zone[1:3]) * 3600 + int(zone[4:6]) * 60) * 10**6
    return us


def _variable_decimal(v: Mapping[str, Any] | None) -> str | None:
    """io.debezium.data.VariableScaleDecimal {scale, value}: its exact text."""
    if v is None:
        return None
    if not isinstance(v, Mapping):
        raise TypeError(f"{str(v)[:40]!r} is not a VariableScaleDecimal struct")
    return decimal_text(_unscaled(v["value"]), _integer(v["scale"]))


# -- declared column types (schemaless topics) --------------------------------------------------

_DECLARED = {
    "timestamptz": pa.timestamp("us", tz="UTC"),
    "timestamp with time zone": pa.timestamp("us", tz="UTC"),
    "timestamp": pa.timestamp("us"),
    "timestamp without time zone": pa.timestamp("us"),
    "date": pa.date32(),
    "bigint": pa.int64(),
    "int8": pa.int64(),
    "integer": pa.int32(),
    "int": pa.int32(),
    "int4": pa.int32(),
    "smallint": pa.int16(),
    "int2": pa.int16(),
    "boolean": pa.bool_(),
    "bool": pa.bool_(),
    "double precision": pa.float64(),
    "float8": pa.float64(),
    "real": pa.float64(),
    "float4": pa.float64(),
    "text": pa.string(),
    "varchar": pa.string(),
    "uuid": pa.string(),
    "json": pa.string(),
    "jsonb": pa.string(),
    "numeric": pa.string(),
}
_NUMERIC = re.compile(r"(?:numeric|decimal)\s*\(\s*(\d+)\s*(?:,\s*(-?\d+)\s*)?\)")


def declared_type(pg_type: str) -> pa.DataType:
    """The Arrow type a column declared as `pg_type` decodes to (the slot feed's mapping)."""
    m = _NUMERIC.fullmatch(pg_type)
    if m:
        return decimal_type(m.group(1), int(m.group(2) or 0))
    if pg_type not in _DECLARED:
        raise ValueError(pg_type)
    return _DECLARED[pg_type]


def column_types_from_settings(settings) -> dict[str, dict[str, pa.DataType]]:
    """CDC_COLUMN_TYPES as the Kafka feed's per-table column types."""
    from analytics_assets.lib.errors import ConfigError

    out: dict[str, dict[str, pa.DataType]] = {}
    for table, column, pg_type in settings.cdc.column_types:
        try:
            out.setdefault(table, {})[column] = declared_type(pg_type)
        except ValueError:
            raise ConfigError(
                f"CDC_COLUMN_TYPES: {table}.{column} has type {pg_type!r}, which is not one of "
                f"numeric(p,s), {', '.join(sorted(_DECLARED))}."
            ) from None
    return out


# -- encoding (what a Debezium connector emits): used by tests and the bench ------------------


def encode_decimal(d: Decimal, scale: int) -> str:
    """`decimal.handling.mode=precise`: base64 of the big-endian two's-complement unscaled value
    (Java's BigDecimal.unscaledValue().toByteArray() at the column's scale). Exact at any
    precision: the unscaled integer comes from the decimal's digits, never from a rounding
    context; a value with more fractional digits than `scale` is an error, as in Debezium."""
    sign, digits, exponent = d.as_tuple()
    if not isinstance(exponent, int):
        raise ValueError(f"{d} has no precise encoding (Debezium sends it as null)")
    unscaled = int("".join(map(str, digits)) or "0")
    shift = exponent + scale
    if shift < 0:
        if unscaled % 10**-shift:
            raise ValueError(f"{d} has more than {scale} fractional digits")
        unscaled //= 10**-shift
    else:
        unscaled *= 10**shift
    unscaled = -unscaled if sign else unscaled
    n = max(1, (unscaled.bit_length() + 8) // 8)
    return base64.b64encode(unscaled.to_bytes(n, "big", signed=True)).decode()


__all__ = [
    "ConnectField",
    "column_types_from_settings",
    "declared_type",
    "decode_values",
    "cast_values",
    "encode_decimal",
    "row_columns",
]
