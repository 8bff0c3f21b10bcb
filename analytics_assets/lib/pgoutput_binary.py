"""pgoutput's binary values (the `binary` option: each type's send function instead of its text
output) as the same Arrow columns, companions included, that the text path
(`analytics_assets.lib.pgoutput_types`) makes of the same values.

The source server skips the output functions (timestamps, numerics and integers are the costly
ones), so the feed asks for binary whenever every column type it publishes is one this module
reads (`BINARY_TYPES`). A binary value of another type (a column altered within the backlog)
raises `BinaryValueUnsupported`, and the feed reads that stretch again as text. Every length is
checked against the value it belongs to: malformed bytes raise `DecodeError` naming the byte.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from analytics_assets.lib import _pgoutput_kernels as kernels
from analytics_assets.lib.errors import BinaryValueUnsupported, DecodeError
from analytics_assets.lib.pgoutput_types import (
    BOOL,
    BPCHAR,
    BYTEA,
    DATE,
    FLOAT4,
    FLOAT8,
    INT2,
    INT4,
    INT8,
    JSON,
    JSONB,
    NAME,
    NUMERIC,
    OID,
    TEXT,
    TIMESTAMP,
    TIMESTAMPTZ,
    UUID,
    VARCHAR,
    RelationColumn,
    arrow_type,
    text_to_columns,
)
from analytics_assets.lib.pgoutput_wire import PG_EPOCH_US
from analytics_assets.lib.values import (
    HIGH_DAY,
    HIGH_US,
    INT32_MAX,
    INT32_MIN,
    INT64_MAX,
    INT64_MIN,
    LOW_DAY,
    LOW_US,
    pg_date_text,
    pg_timestamp_text,
)

# types whose binary form is their text's bytes
TEXT_LIKE = frozenset({TEXT, VARCHAR, BPCHAR, NAME, JSON})
_UUID_BYTES = np.dtype("V16")
# fixed-size types: each value as one item of this (native) dtype
_FIXED = {BOOL: np.dtype(np.uint8), INT2: np.dtype(np.int16), INT4: np.dtype(np.int32)}
_FIXED |= {INT8: np.dtype(np.int64), OID: np.dtype(np.uint32), FLOAT4: np.dtype(np.float32)}
_FIXED |= {FLOAT8: np.dtype(np.float64), DATE: np.dtype(np.int32)}
_FIXED |= {TIMESTAMP: np.dtype(np.int64), TIMESTAMPTZ: np.dtype(np.int64), UUID: _UUID_BYTES}
BINARY_TYPES = TEXT_LIKE | _FIXED.keys() | {BYTEA, JSONB, NUMERIC}

PG_EPOCH_DAYS = PG_EPOCH_US // 86_400_000_000
# PostgreSQL's own bounds [low, end) (4714-11-24 BC .. 5874898 / 294277 AD), since 2000-01-01
_PG_LOW_DAY, _PG_END_DAY = -2_451_545, 2_145_031_949
_PG_LOW_US, _PG_END_US = -211_813_488_000_000_000, 9_223_371_331_200_000_000


def text_spans(
    a: np.ndarray,
    start: np.ndarray,
    length: np.ndarray,
    valid: np.ndarray,
    binary: np.ndarray,
    columns: Sequence[RelationColumn],
) -> tuple[np.ndarray, np.ndarray]:
    """(start, length) of each value's text (2-D, as `walk_tuples` gives them): the binary
    values of jsonb columns begin after jsonb_send's version byte, which must be 1; every other
    value is its own bytes."""
    jsonb = [j for j in np.flatnonzero(binary) if columns[j].type_oid == JSONB]
    if not jsonb:
        return start, length
    start, length = start.copy(), length.copy()
    for j in jsonb:
        v = valid[j]
        pos = start[j][v]
        bad = (length[j][v] < 1) | (a[np.minimum(pos, len(a) - 1)] != 1)
        if bad.any():
            raise DecodeError(f"a jsonb value at byte {int(pos[bad][0])} has no version 1 byte")
        start[j][v] += 1
        length[j][v] -= 1
    return start, length


def binary_to_columns(
    a: np.ndarray,
    start: np.ndarray,
    length: np.ndarray,
    valid: np.ndarray,
    text: pa.Array,
    column: RelationColumn,
) -> tuple[pa.Array, pa.Array | None]:
    """One column's binary values -> (typed array, `__raw` companion or None), as
    `text_to_columns` makes of the same values' text, for a type whose binary form is not its
    text (`binary_columns`). `text` is the values' bytes as string views."""
    oid = column.type_oid
    if oid == BYTEA:
        return text.cast(pa.binary_view()).cast(pa.binary()), None
    if oid == NUMERIC:
        return text_to_columns(_numeric_text(a, start, length, valid), oid, column.typmod)
    dtype = _FIXED.get(oid)
    if dtype is None:
        raise BinaryValueUnsupported(
            f"column {column.name!r}: binary values of type oid {oid} are not read"
        )
    values = _fixed(a, start, length, valid, dtype)
    mask = None if valid.all() else ~valid
    if oid == UUID:
        return _uuid_text(values, mask), None
    if oid == BOOL:
        return pa.array(values != 0, pa.bool_(), mask=mask), None
    if oid == DATE:
        return _dates(values.astype(np.int64), valid, mask, start)
    if oid in (TIMESTAMP, TIMESTAMPTZ):
        return _timestamps(values, valid, mask, start, oid == TIMESTAMPTZ)
    return pa.array(values, arrow_type(oid, column.typmod), mask=mask), None


def _fixed(
    a: np.ndarray, start: np.ndarray, length: np.ndarray, valid: np.ndarray, dtype: np.dtype
) -> np.ndarray:
    """Each value's bytes as one `dtype` item (big-endian to native; zeros for NULLs), by the
    compiled kernel, which checks every length."""
    swap = dtype != _UUID_BYTES
    out = np.empty(len(start), dtype)
    failed = kernels.fixed_values(
        a,
        np.ascontiguousarray(start, np.int64),
        np.ascontiguousarray(length, np.int64),
        np.ascontiguousarray(valid).view(np.uint8),
        dtype.itemsize,
        swap,
        out,
    )
    if failed is not None:
        code, at, detail = failed
        raise DecodeError(
            f"a {dtype.itemsize}-byte binary value at byte {at} is {detail} bytes long"
            if code == 7
            else f"a binary value at byte {at} runs past the end of the buffer"
        )
    return out


_HEX = np.array([f"{i:02x}".encode() for i in range(256)]).view(np.uint8).reshape(256, 2)
_UUID_SLOTS = np.array([0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34])


def _uuid_text(raw: np.ndarray, mask: np.ndarray | None) -> pa.Array:
    """16-byte uuids as PostgreSQL prints them (8-4-4-4-12 lowercase hex digits)."""
    m = len(raw)
    out = np.full((m, 36), ord("-"), np.uint8)
    pairs = _HEX[raw.view(np.uint8).reshape(-1, 16)]  # (m, 16, 2)
    out[:, _UUID_SLOTS] = pairs[:, :, 0]
    out[:, _UUID_SLOTS + 1] = pairs[:, :, 1]
    offsets = np.arange(m + 1, dtype=np.int32) * 36
    validity = None if mask is None else pa.py_buffer(np.packbits(~mask, bitorder="little"))
    return pa.Array.from_buffers(
        pa.string(), m, [validity, pa.py_buffer(offsets), pa.py_buffer(out)]
    )


def _numeric_text(
    a: np.ndarray, start: np.ndarray, length: np.ndarray, valid: np.ndarray
) -> pa.Array:
    """Binary numerics as their text (numeric_out's), by the compiled kernel."""
    m = len(start)
    offsets = np.empty(m + 1, np.int64)
    data = kernels.numeric_text(
        a,
        np.ascontiguousarray(start, np.int64),
        np.ascontiguousarray(length, np.int64),
        np.ascontiguousarray(valid).view(np.uint8),
        offsets,
    )
    if isinstance(data, tuple):
        raise DecodeError(f"a binary numeric at byte {data[1]} is not one numeric_send writes")
    validity = None if valid.all() else pa.py_buffer(np.packbits(valid, bitorder="little"))
    return pa.Array.from_buffers(
        pa.large_string(), m, [validity, pa.py_buffer(offsets), pa.py_buffer(data)]
    ).cast(pa.string())


def _dates(
    days: np.ndarray, valid: np.ndarray, mask: np.ndarray | None, start: np.ndarray
) -> tuple[pa.Array, pa.Array]:
    """int32 days since 2000-01-01 -> date32 + `__raw` (±infinity, BC, years past 9999)."""
    epoch = days + PG_EPOCH_DAYS
    inside = ~valid | ((epoch >= LOW_DAY) & (epoch < HIGH_DAY))
    typed = pa.array(np.where(inside, epoch, 0).astype(np.int32), pa.int32(), mask=mask)
    typed = typed.cast(pa.date32())
    if inside.all():
        return typed, pa.nulls(len(days), pa.string())
    raw: list[str | None] = [None] * len(days)
    for i in np.flatnonzero(~inside):
        d = int(days[i])
        if d not in (INT32_MAX, INT32_MIN) and not _PG_LOW_DAY <= d < _PG_END_DAY:
            raise DecodeError(f"a binary date at byte {int(start[i])} is out of range ({d})")
        raw[i] = pg_date_text(d if d in (INT32_MAX, INT32_MIN) else d + PG_EPOCH_DAYS)
    return pc.if_else(pa.array(inside), typed, pa.scalar(None, typed.type)), pa.array(
        raw, pa.string()
    )


def _timestamps(
    us: np.ndarray, valid: np.ndarray, mask: np.ndarray | None, start: np.ndarray, tz: bool
) -> tuple[pa.Array, pa.Array]:
    """int64 us since 2000-01-01 -> timestamp + `__raw` (±infinity, BC, years past 9999)."""
    target = pa.timestamp("us", tz="UTC" if tz else None)
    inside = ~valid | ((us >= LOW_US - PG_EPOCH_US) & (us < HIGH_US - PG_EPOCH_US))
    epoch = np.where(inside, us, 0) + PG_EPOCH_US
    typed = pa.array(epoch, pa.int64(), mask=mask).cast(target)
    if inside.all():
        return typed, pa.nulls(len(us), pa.string())
    raw: list[str | None] = [None] * len(us)
    for i in np.flatnonzero(~inside):
        u = int(us[i])
        if u in (INT64_MAX, INT64_MIN):
            raw[i] = pg_timestamp_text(u, tz)
        elif _PG_LOW_US <= u < _PG_END_US:
            raw[i] = pg_timestamp_text(u + PG_EPOCH_US, tz)
        else:
            raise DecodeError(f"a binary timestamp at byte {int(start[i])} is out of range ({u})")
    return pc.if_else(pa.array(inside), typed, pa.scalar(None, target)), pa.array(raw, pa.string())


def binary_columns(
    a: np.ndarray,
    start: np.ndarray,
    length: np.ndarray,
    valid: np.ndarray,
    binary: np.ndarray,
    values: Sequence[pa.Array],
    columns: Sequence[RelationColumn],
) -> dict[int, tuple[pa.Array, pa.Array | None]]:
    """The converted columns (by index) of a group of tuples whose values came as binary
    (`binary`: per column; 2-D start/length/valid as `walk_tuples` gives them), but for the
    text-like ones and jsonb: their `values` (`text_spans`) take the text path as they are."""
    return {
        int(j): binary_to_columns(a, start[j], length[j], valid[j], values[j], columns[j])
        for j in np.flatnonzero(binary)
        if columns[j].type_oid not in TEXT_LIKE | {JSONB}
    }


__all__ = ["BINARY_TYPES", "binary_columns", "binary_to_columns", "text_spans"]
