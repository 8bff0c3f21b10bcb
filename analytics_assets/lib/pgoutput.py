"""A columnar decoder for PostgreSQL's `pgoutput` logical replication protocol (proto_version 1).

The message formats are PostgreSQL's "Logical Replication Message Formats" chapter. Python is the
CDC bottleneck (the server decodes ~730k row changes/s, a Python loop over messages manages a
fraction of that), so nothing here loops over rows in Python: a chunk of messages arrives as one
buffer plus an array of message offsets, and every step (message kinds, transaction boundaries,
tuple walking, value extraction) is a numpy operation over all messages at once. Column values
end up in one byte buffer per table, become Arrow string arrays without copying, and are converted
to typed Arrow arrays (ints, decimals, timestamps...) by Arrow's C++ casts, keyed by type oid.

Only the rare messages (Relation, Type, Truncate, Origin, logical Message) are handled one by one.

Output per table is an Arrow table of row images in commit order with the CDC metadata columns of
`analytics_assets.lib.feeds.base`: `_lsn` (the transaction's commit LSN), `_seq` (ordinal of the
change inside its transaction), `_op`, `_is_deleted`, `_commit_ts` and `_unchanged_cols` (columns
whose value the change does not carry: unchanged TOAST values, non-key columns of a key-only old
tuple; the warehouse keeps the previous value for those).

Primary-key updates are emitted as two rows: a delete of the old key (old image) followed by the
update with the new key, at consecutive `_seq` values, so the old key row ends up deleted.
"""

from __future__ import annotations

import ctypes
import datetime as dt
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from analytics_assets.lib.feeds.base import (
    Position,
    meta_schema_fields,
)
from analytics_assets.lib.values import has_raw, raw_column, split_text

PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01 in Unix microseconds

# Message kinds (first byte)
_B, _C, _O, _R, _Y, _I, _U, _D, _T, _M = (ord(c) for c in "BCORYIUDTM")
# Tuple data kinds
_NULL, _UNCHANGED, _TEXT = (ord(c) for c in "nut")  # 'b' (binary) is never requested

# Type oids
BOOL, BYTEA, CHAR, NAME, INT8, INT2, INT4, TEXT, OID = 16, 17, 18, 19, 20, 21, 23, 25, 26
JSON, FLOAT4, FLOAT8, BPCHAR, VARCHAR, DATE, TIME = 114, 700, 701, 1042, 1043, 1082, 1083
TIMESTAMP, TIMESTAMPTZ, NUMERIC, UUID, JSONB = 1114, 1184, 1700, 2950, 3802

MAX_DECIMAL_PRECISION = 38  # DuckDB's and BigQuery BIGNUMERIC-free maximum

OP_CODES = np.frombuffer(b"cudtr", np.uint8)

log = logging.getLogger(__name__)


class DecodeError(RuntimeError):
    """The byte stream is not the pgoutput protocol this decoder understands."""


@dataclass(frozen=True)
class Column:
    name: str
    type_oid: int
    typmod: int
    is_key: bool


@dataclass(frozen=True)
class Relation:
    relid: int
    namespace: str
    name: str
    replica_identity: str  # d (default), n (nothing), f (full), i (index)
    columns: tuple[Column, ...]

    @property
    def table(self) -> str:
        return self.name if self.namespace == "public" else f"{self.namespace}.{self.name}"


@dataclass
class DecodedTable:
    """One table's share of a decoded chunk."""

    table: str
    rows: pa.Table  # source columns + metadata columns, in commit order
    key: tuple[str, ...]
    truncates: list[Position] = field(default_factory=list)


@dataclass
class DecodedChunk:
    tables: dict[str, DecodedTable]
    messages: int
    changes: int  # row changes decoded (all tables, before the skip filter)
    first: Position | None  # first change position in the chunk
    last: Position | None  # last change position reached (even when skipped or filtered out)
    checkpoint_lsn: int | None  # end LSN of the last transaction completed in this chunk
    min_commit_ts: dt.datetime | None
    max_commit_ts: dt.datetime | None
    in_transaction: bool  # the chunk ended inside a transaction


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
        if precision is not None:
            digits, scale = (precision - scale, 0) if scale < 0 else (max(precision, scale), scale)
            if digits <= MAX_DECIMAL_PRECISION:
                return pa.decimal128(digits, scale)
        return pa.string()
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


def source_fields(columns: Sequence[Column]) -> list[pa.Field]:
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
# feed turns those rows into dead letters (`SlotFeed._to_batch`) instead of applying them.
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
    values: Sequence[pa.Array], columns: Sequence[Column], *, check_utf8: bool = False
) -> Converted:
    """Typed columns (and companions) from the text of each column. A value that cannot be
    converted (text PostgreSQL does not print; invalid UTF-8 with `check_utf8`, e.g. from a
    SQL_ASCII database) becomes NULL and its row is marked in `reasons`; the rest convert."""
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


def _per_value(values: pa.Array, c: Column) -> tuple[pa.Array, pa.Array | None, list[bool]]:
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


def _row_json(values: Sequence[pa.Array], columns: Sequence[Column], i: int) -> bytes:
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


def _be(a: np.ndarray, pos: np.ndarray, width: int, dtype: str) -> np.ndarray:
    """Big-endian integers of `width` bytes at arbitrary (unaligned) offsets."""
    if len(pos) == 0:
        return np.zeros(0, dtype=np.int64)
    raw = a[pos[:, None] + np.arange(width)]
    return np.ascontiguousarray(raw).view(dtype).ravel().astype(np.int64)


def be16(a, pos):
    return _be(a, pos, 2, ">i2")


def be32u(a, pos):
    return _be(a, pos, 4, ">u4")


def be64(a, pos):
    return _be(a, pos, 8, ">i8")


def _cstring(data: bytes, pos: int) -> tuple[str, int]:
    end = data.index(b"\0", pos)
    return data[pos:end].decode("utf-8"), end + 1


def _int(data: bytes, pos: int, width: int, signed: bool = True) -> int:
    return int.from_bytes(data[pos : pos + width], "big", signed=signed)


@dataclass
class _Tuples:
    """Column-wise view of m tuples: value start, length and kind per (column, tuple)."""

    start: np.ndarray  # (ncols, m) int64
    length: np.ndarray  # (ncols, m) int64
    kind: np.ndarray  # (ncols, m) uint8
    end: np.ndarray  # (m,) position after the tuple


def _walk_tuples(a: np.ndarray, pos: np.ndarray, ncols: int) -> _Tuples:
    """Walk TupleData (after its int16 column count) for many tuples at once."""
    if KERNELS is None:
        return _walk_tuples_numpy(a, pos, ncols)
    m = len(pos)
    start = np.empty((ncols, m), np.int64)
    length = np.empty((ncols, m), np.int64)
    kind = np.empty((ncols, m), np.uint8)
    end = np.empty(m, np.int64)
    bad = ctypes.c_int64(0)
    pos = np.ascontiguousarray(pos, np.int64)
    code = KERNELS.pgo_walk_tuples(
        _ptr(a),
        len(a),
        _ptr(pos),
        m,
        ncols,
        _ptr(start),
        _ptr(length),
        _ptr(kind),
        _ptr(end),
        ctypes.byref(bad),
    )
    if code == _BAD_KIND:
        raise DecodeError(f"unsupported tuple data kind {chr(bad.value)!r}")
    if code:
        raise DecodeError("a tuple runs past the end of its message buffer")
    return _Tuples(start, length, kind, end)


def _walk_tuples_numpy(a: np.ndarray, pos: np.ndarray, ncols: int) -> _Tuples:
    """`_walk_tuples` without the compiled kernels: column by column for all tuples at once."""
    m = len(pos)
    start = np.empty((ncols, m), np.int64)
    length = np.zeros((ncols, m), np.int64)
    kind = np.empty((ncols, m), np.uint8)
    p = pos.astype(np.int64, copy=True)
    win4 = np.lib.stride_tricks.sliding_window_view(a, 4)
    for j in range(ncols):
        k = a[p]
        kind[j] = k
        has_value = k == _TEXT
        if has_value.any():
            ln = win4[p + 1].view(">i4")[:, 0] * has_value
            length[j] = ln
            start[j] = p + 5
            p += 1
            p += (ln + 4) * has_value
        else:
            start[j] = p + 1
            p += 1
    bad = (kind != _TEXT) & (kind != _NULL) & (kind != _UNCHANGED)
    if bad.any():
        raise DecodeError(f"unsupported tuple data kind {chr(int(kind[bad][0]))!r}")
    return _Tuples(start, length, kind, p)


def _bool_np(arr: pa.BooleanArray) -> np.ndarray:
    """An Arrow boolean array as numpy, nulls as False (without pyarrow's pandas-backed paths)."""
    n, off = len(arr), arr.offset
    validity, values = arr.buffers()
    bits = np.unpackbits(np.frombuffer(values, np.uint8), bitorder="little")[off : off + n]
    out = bits.astype(bool)
    if validity is not None:
        valid = np.unpackbits(np.frombuffer(validity, np.uint8), bitorder="little")[off : off + n]
        out &= valid.astype(bool)
    return out


def _keys_differ(a, old: _Tuples, oi, new: _Tuples, ni, key_cols) -> np.ndarray:
    """For updates carrying the old tuple: does any key column's value differ (byte-wise)?"""
    kc = np.array(key_cols)
    ok, nk = old.kind[kc][:, oi], new.kind[kc][:, ni]
    ol, nl = old.length[kc][:, oi], new.length[kc][:, ni]
    differs = ((ok != nk) | (ol != nl)).any(axis=0)
    same = np.flatnonzero(~differs)
    if len(same):
        os_, ns_ = old.start[kc][:, oi][:, same], new.start[kc][:, ni][:, same]
        ov = _gather_strings(a, os_, ol[:, same], ok[:, same] == _TEXT)
        nv = _gather_strings(a, ns_, nl[:, same], nk[:, same] == _TEXT)
        neq = np.zeros(len(same), bool)
        for o_arr, n_arr in zip(ov, nv, strict=True):
            ne = pc.not_equal(o_arr.cast(pa.string()), n_arr.cast(pa.string()))
            neq |= _bool_np(ne)  # null (both null) counts as equal
        differs[same] = neq
    return differs


def _gather_strings(
    a: np.ndarray, starts: np.ndarray, lengths: np.ndarray, valid: np.ndarray
) -> list[pa.Array]:
    """One Arrow string_view array per column (row of the 2-D inputs) whose values point straight
    into the message buffer: no byte copying and no per-value Python objects. Values of up to 12
    bytes are inlined in their 16-byte view (Arrow's StringView layout), longer ones reference the
    buffer by offset."""
    ncols, m = starts.shape
    total = ncols * m
    if total == 0:
        return [pa.array([], pa.string_view()) for _ in range(ncols)]
    if len(a) >= 2**31:
        raise DecodeError("a decoded chunk must be smaller than 2 GiB")
    flat_valid = np.ascontiguousarray(valid).ravel()
    if KERNELS is None:
        views = _string_views_numpy(a, starts.ravel(), lengths.ravel(), flat_valid)
    else:
        views = np.empty((total, 4), "<i4")
        st = np.ascontiguousarray(starts, np.int64)
        ln = np.ascontiguousarray(lengths, np.int64)
        code = KERNELS.pgo_string_views(
            _ptr(a),
            len(a),
            _ptr(st),
            _ptr(ln),
            _ptr(flat_valid.view(np.uint8)),
            total,
            _ptr(views),
        )
        if code:
            raise DecodeError("a value runs past the end of its message buffer")
    bitmap = None if flat_valid.all() else pa.py_buffer(np.packbits(flat_valid, bitorder="little"))
    everything = pa.Array.from_buffers(
        pa.string_view(), total, [bitmap, pa.py_buffer(views), pa.py_buffer(a)]
    )
    return [everything.slice(j * m, m) for j in range(ncols)]


def _string_views_numpy(
    a: np.ndarray, st: np.ndarray, lengths: np.ndarray, valid: np.ndarray
) -> np.ndarray:
    """The (total, 4) int32 StringView entries of `_gather_strings`, without the kernels."""
    ln = np.where(valid, lengths, 0).astype(np.int32)
    window = np.lib.stride_tricks.sliding_window_view(a, 12)[st]  # (total, 12) bytes
    short = ln <= 12
    # Bytes after a short value are not zeroed: these views never leave the decoder, and the
    # casts that consume them (to string, int, decimal, float) read `length` bytes only.
    w32 = window.view("<i4")  # (total, 3)
    views = np.empty((len(st), 4), "<i4")
    views[:, 0] = ln
    views[:, 1] = w32[:, 0]  # inline bytes 0-3, or the 4-byte prefix
    views[:, 2] = np.where(short, w32[:, 1], 0)  # inline bytes 4-7, or buffer index 0
    views[:, 3] = np.where(short, w32[:, 2], st.astype(np.int32))  # inline 8-11, or offset
    return views


# ---------------------------------------------------------------------------------------------
# the compiled kernels (_pgoutput_kernels.c), when built

KERNELS_PATH = Path(__file__).with_name("_pgoutput_kernels.so")
_BAD_KIND = 2


def _ptr(arr: np.ndarray) -> ctypes.c_void_p:
    return ctypes.c_void_p(arr.ctypes.data)


def load_kernels(path: Path = KERNELS_PATH) -> ctypes.CDLL | None:
    """The compiled kernels, or None (the numpy code runs instead) when the library is not
    built or ANALYTICS_ASSETS_PGOUTPUT_KERNELS=0. ctypes releases the GIL during each call."""
    if os.environ.get("ANALYTICS_ASSETS_PGOUTPUT_KERNELS", "1") == "0" or not path.exists():
        return None
    try:
        lib = ctypes.CDLL(str(path))
        if lib.pgo_kernels_version() != 1:
            raise OSError("version mismatch: rebuild it with `make install`")
    except OSError as exc:
        log.warning("pgoutput kernels %s not loaded (%s): decoding with numpy", path, exc)
        return None
    i64, ptr = ctypes.c_int64, ctypes.c_void_p
    lib.pgo_walk_tuples.argtypes = [ptr, i64, ptr, i64, i64, ptr, ptr, ptr, ptr, ptr]
    lib.pgo_string_views.argtypes = [ptr, i64, ptr, ptr, ptr, i64, ptr]
    lib.pgo_walk_tuples.restype = lib.pgo_string_views.restype = ctypes.c_int
    return lib


KERNELS = load_kernels()


# ---------------------------------------------------------------------------------------------
# the decoder


@dataclass
class _Txn:
    lsn: int = 0  # final (commit) LSN from Begin
    commit_ts: int = 0  # microseconds since 2000-01-01
    xid: int = 0
    seq: int = 0  # changes emitted so far
    open: bool = False


class PgOutputDecoder:
    """Stateful across chunks: relations seen so far and the transaction a chunk may end inside.

    `primary_keys` (table -> key columns, from the catalog) says which columns identify a row;
    without it the Relation message's key flags are used (with REPLICA IDENTITY FULL those flag
    every column, which is why the catalog's primary key is preferred).
    """

    def __init__(
        self,
        tables: set[str] | None = None,
        primary_keys: dict[str, tuple[str, ...]] | None = None,
    ):
        self.tables = tables
        self.primary_keys = dict(primary_keys or {})
        self.relations: dict[int, Relation] = {}
        self.type_names: dict[int, str] = {}
        self.txn = _Txn()
        self.checkpoint_lsn: int | None = None
        self.check_utf8 = False  # a database whose text need not be UTF-8 (SQL_ASCII)

    # -- rare messages, one at a time ---------------------------------------------------------

    def _parse_relation(self, data: bytes, pos: int) -> Relation:
        relid = _int(data, pos + 1, 4, signed=False)
        namespace, p = _cstring(data, pos + 5)
        name, p = _cstring(data, p)
        replident = chr(data[p])
        ncols = _int(data, p + 1, 2)
        p += 3
        cols = []
        for _ in range(ncols):
            flags = data[p]
            cname, p = _cstring(data, p + 1)
            typoid = _int(data, p, 4, signed=False)
            typmod = _int(data, p + 4, 4)
            p += 8
            cols.append(Column(cname, typoid, typmod, bool(flags & 1)))
        rel = Relation(relid, namespace or "public", name, replident, tuple(cols))
        pk = self.primary_keys.get(rel.table)
        if pk:
            cols = [Column(c.name, c.type_oid, c.typmod, c.name in pk) for c in rel.columns]
            rel = Relation(relid, rel.namespace, rel.name, replident, tuple(cols))
        return rel

    def _wanted(self, rel: Relation) -> bool:
        return self.tables is None or rel.table in self.tables

    # -- the chunk ----------------------------------------------------------------------------

    def decode(
        self,
        buf: bytes | np.ndarray,
        starts: np.ndarray,
        skip_through: Position | None = None,
    ) -> DecodedChunk:
        """Decode the messages at `starts` in `buf` (each message runs to the next framing; the
        buffer must have at least 16 bytes of padding after the last message).

        Changes at or before `skip_through` are dropped (already applied downstream).
        """
        a = np.frombuffer(buf, np.uint8) if not isinstance(buf, np.ndarray) else buf
        raw = buf if isinstance(buf, bytes) else a.tobytes()
        starts = np.asarray(starts, np.int64)
        n = len(starts)
        kinds = a[starts] if n else np.zeros(0, np.uint8)

        is_b = kinds == _B
        is_c = kinds == _C
        is_i = kinds == _I
        is_u = kinds == _U
        is_d = kinds == _D
        is_rowmsg = is_i | is_u | is_d
        known = is_b | is_c | is_rowmsg | np.isin(kinds, (_R, _Y, _O, _T, _M))
        if not known.all():
            i = int(np.flatnonzero(~known)[0])
            raise DecodeError(f"unsupported pgoutput message {chr(int(kinds[i]))!r} (#{i} of {n})")

        # -- transactions: Begin/Commit fields for all transactions at once
        b_idx = np.flatnonzero(is_b)
        c_idx = np.flatnonzero(is_c)
        b_pos = starts[b_idx]
        txn_lsn = np.concatenate([[self.txn.lsn], be64(a, b_pos + 1)])
        txn_ts = np.concatenate([[self.txn.commit_ts], be64(a, b_pos + 9)])
        txn_of = np.cumsum(is_b) - 1 + 1  # 0 = the transaction open before this chunk

        # -- rare messages in order: relations (versioned), truncates
        rare_idx = np.flatnonzero(~(is_b | is_c | is_rowmsg))
        rel_events: list[tuple[int, Relation]] = []
        truncate_events: list[tuple[int, list[int]]] = []
        for i in rare_idx.tolist():
            s = int(starts[i])
            k = raw[s]
            if k == _R:
                rel_events.append((i, self._parse_relation(raw, s)))
            elif k == _Y:
                oid = _int(raw, s + 1, 4, signed=False)
                _, p = _cstring(raw, s + 5)
                self.type_names[oid], _ = _cstring(raw, p)
            elif k == _T:
                nrel = _int(raw, s + 1, 4)
                relids = [_int(raw, s + 6 + 4 * r, 4, signed=False) for r in range(nrel)]
                truncate_events.append((i, relids))
            # Origin and logical messages (heartbeats) carry no row change

        # -- row messages: relation id, shape
        row_idx = np.flatnonzero(is_rowmsg)
        row_pos = starts[row_idx]
        relid = be32u(a, row_pos + 1)
        tag5 = a[row_pos + 5]  # N (insert/update without old), K/O (old tuple)

        # relation version per row message: the latest Relation message before it
        versions: list[Relation] = []
        ver = np.full(len(row_idx), -1, np.int64)
        rel_by_id: dict[int, list[tuple[int, Relation]]] = {}
        for i, rel in rel_events:
            rel_by_id.setdefault(rel.relid, []).append((i, rel))
        for rid in np.unique(relid).tolist():
            mask = relid == rid
            current = self.relations.get(rid)
            if current is not None:
                versions.append(current)
                ver[mask] = len(versions) - 1
            for i, rel in rel_by_id.get(rid, []):
                versions.append(rel)
                ver[mask & (row_idx > i)] = len(versions) - 1
        if (ver < 0).any():
            raise DecodeError("row change for a relation that was never described")
        for _, rel in rel_events:
            self.relations[rel.relid] = rel

        # -- positions: every change message (insert/update/delete/truncate) takes the next
        # ordinal k in its transaction and _seq = 2k; the delete of the old key emitted for a
        # primary-key update takes 2k - 1. Numbering never depends on which tables are decoded.
        emit = (is_rowmsg | (kinds == _T)).astype(np.int64)
        cum = np.cumsum(emit)
        base = np.concatenate([[-self.txn.seq], cum[b_idx]])
        seq_end = 2 * (cum - base[txn_of])
        msg_lsn = txn_lsn[txn_of]
        msg_ts = txn_ts[txn_of]

        changes_total = int(emit.sum())
        first = last = None
        change_msgs = np.flatnonzero(emit > 0)
        if len(change_msgs):
            f, l_ = change_msgs[0], change_msgs[-1]
            first = Position(int(msg_lsn[f]), int(seq_end[f]) - 1)
            last = Position(int(msg_lsn[l_]), int(seq_end[l_]))

        # -- row images per relation version, walked column by column for all rows at once.
        # Rows of a table are not sorted: their positions say the order.
        tables: dict[str, DecodedTable] = {}
        parts: dict[str, list[pa.Table]] = {}
        for v, rel in enumerate(versions):
            if not self._wanted(rel):
                continue
            sel = np.flatnonzero(ver == v)
            if len(sel) == 0:
                continue
            for table in self._version_rows(
                a, rel, sel, row_idx, row_pos, tag5, kinds, seq_end, msg_lsn, msg_ts, skip_through
            ):
                parts.setdefault(rel.table, []).append(table)
            if rel.table in parts:
                key = tuple(c.name for c in rel.columns if c.is_key)
                tables.setdefault(rel.table, DecodedTable(rel.table, parts[rel.table][0], key))

        for i, relids in truncate_events:
            pos = Position(int(msg_lsn[i]), int(seq_end[i]))
            if skip_through is not None and pos <= skip_through:
                continue
            for rid in relids:
                rel = self.relations.get(rid)
                if rel is None or not self._wanted(rel):
                    continue
                entry = tables.get(rel.table)
                if entry is None:
                    key = tuple(c.name for c in rel.columns if c.is_key)
                    entry = tables[rel.table] = DecodedTable(rel.table, _empty_rows(rel), key)
                entry.truncates.append(pos)

        for name, tbls in parts.items():
            if len(tbls) > 1:
                tables[name].rows = pa.concat_tables(tbls, promote_options="permissive")

        # -- state for the next chunk
        checkpoint = self.checkpoint_lsn
        if len(c_idx):
            checkpoint = int(be64(a, starts[c_idx[-1:]] + 10)[0])
            self.checkpoint_lsn = checkpoint
        last_b = int(b_idx[-1]) if len(b_idx) else -1
        last_c = int(c_idx[-1]) if len(c_idx) else -1
        in_txn = last_b > last_c or (last_b < 0 and last_c < 0 and self.txn.open)
        if in_txn:
            t = len(b_idx)  # index into txn arrays of the open transaction
            self.txn = _Txn(int(txn_lsn[t]), int(txn_ts[t]), 0, int(cum[-1] - base[t]), True)
        else:
            self.txn = _Txn()
        ts_seen = msg_ts[change_msgs] if len(change_msgs) else np.zeros(0, np.int64)
        return DecodedChunk(
            tables=tables,
            messages=n,
            changes=changes_total,
            first=first,
            last=last,
            checkpoint_lsn=checkpoint,
            min_commit_ts=_ts(int(ts_seen.min())) if len(ts_seen) else None,
            max_commit_ts=_ts(int(ts_seen.max())) if len(ts_seen) else None,
            in_transaction=in_txn,
        )

    def _version_rows(
        self, a, rel, sel, row_idx, row_pos, tag5, kinds, seq_end, msg_lsn, msg_ts, skip_through
    ) -> list[pa.Table]:
        """Row images of one relation version: new images of inserts/updates, old images of
        deletes, and old-key deletes for primary-key updates."""
        ncols = len(rel.columns)
        msg = row_idx[sel]
        pos = row_pos[sel]
        kinds_v = kinds[msg]
        has_old = (kinds_v != _I) & ((tag5[sel] == ord("K")) | (tag5[sel] == ord("O")))
        old_rows = np.flatnonzero(has_old)
        old_index = np.cumsum(has_old) - 1  # row -> index among old tuples
        old = _walk_tuples(a, pos[old_rows] + 8, ncols)
        new_rows = np.flatnonzero(kinds_v != _D)
        new_pos = pos[new_rows] + 8
        new_has_old = has_old[new_rows]
        upd_new = np.flatnonzero(new_has_old)  # index among new tuples of updates with old
        oi = old_index[new_rows[upd_new]]
        new_pos[upd_new] = old.end[oi] + 3
        counts = np.concatenate([be16(a, pos[old_rows] + 6), be16(a, new_pos - 2)])
        if (counts != ncols).any():
            raise DecodeError(f"tuple column count differs from relation {rel.table}")
        new = _walk_tuples(a, new_pos, ncols)

        key_cols = [j for j, c in enumerate(rel.columns) if c.is_key]
        pk_moved = np.zeros(0, np.int64)  # index among new tuples
        if len(upd_new):
            # unchanged TOAST values come with the old tuple under REPLICA IDENTITY FULL
            fill = (new.kind[:, upd_new] == _UNCHANGED) & (old.kind[:, oi] == _TEXT)
            if fill.any():
                for arr_new, arr_old in (
                    (new.kind, old.kind),
                    (new.start, old.start),
                    (new.length, old.length),
                ):
                    sub = arr_new[:, upd_new]
                    sub[fill] = arr_old[:, oi][fill]
                    arr_new[:, upd_new] = sub
            if key_cols:
                pk_moved = upd_new[_keys_differ(a, old, oi, new, upd_new, key_cols)]

        nonkey = np.array([not c.is_key for c in rel.columns])[:, None]
        del_rows = np.flatnonzero(kinds_v == _D)
        groups = [
            # (tuples, which tuples, message index, seq offset, op code, key-only flags)
            (new, None, msg[new_rows], 0, np.where(kinds_v[new_rows] == _I, 0, 1), None),
            (old, old_index[del_rows], msg[del_rows], 0, 2, tag5[sel][del_rows] == ord("K")),
        ]
        if len(pk_moved):
            pk_old = oi[np.searchsorted(upd_new, pk_moved)]
            key_only = tag5[sel][new_rows[pk_moved]] == ord("K")
            groups.append((old, pk_old, msg[new_rows[pk_moved]], -1, 2, key_only))
        out = []
        for tuples, take, gmsg, seq_off, op, key_only in groups:
            if len(gmsg) == 0:
                continue
            start, length, kind = tuples.start, tuples.length, tuples.kind
            if take is not None:
                start, length, kind = start[:, take], length[:, take], kind[:, take]
            seq = seq_end[gmsg] + seq_off
            lsn = msg_lsn[gmsg]
            op = np.broadcast_to(np.asarray(op, np.int64), gmsg.shape)
            unchanged = kind == _UNCHANGED
            if key_only is not None and key_only.any():
                unchanged = unchanged | (nonkey & key_only[None, :])
            if skip_through is not None:
                keep = (lsn > skip_through.lsn) | (
                    (lsn == skip_through.lsn) & (seq > skip_through.seq)
                )
                if not keep.all():
                    start, length, kind, unchanged = (
                        x[:, keep] for x in (start, length, kind, unchanged)
                    )
                    gmsg, op, seq, lsn = gmsg[keep], op[keep], seq[keep], lsn[keep]
                if len(gmsg) == 0:
                    continue
            values = _gather_strings(a, start, length, kind == _TEXT)
            cols = columns_from_text(values, rel.columns, check_utf8=self.check_utf8)
            schema = pa.schema(
                [pa.field(c, arr.type) for c, arr in zip(cols.names, cols.arrays, strict=True)]
                + meta_schema_fields()
            )
            # a companion is carried exactly when its column is
            meta = _meta_arrays(lsn, seq, op, msg_ts[gmsg], unchanged[cols.source], cols.names)
            out.append(_with_rejects(pa.Table.from_arrays(cols.arrays + meta, schema=schema), cols))
        return out


def _ts(pg_us: int) -> dt.datetime:
    return dt.datetime.fromtimestamp((pg_us + PG_EPOCH_US) / 1e6, tz=dt.UTC)


def _meta_arrays(lsn, seq, op, commit_ts_pg, unchanged, names) -> list[pa.Array]:
    m = len(lsn)
    op_bytes = OP_CODES[op]
    op_arr = pa.Array.from_buffers(
        pa.string(),
        m,
        [None, pa.py_buffer(np.arange(m + 1, dtype=np.int32)), pa.py_buffer(op_bytes)],
    )
    ts = pa.array(commit_ts_pg + PG_EPOCH_US, pa.int64()).cast(pa.timestamp("us", tz="UTC"))
    return [
        pa.array(lsn, pa.int64()),
        pa.array(seq, pa.int64()),
        op_arr,
        pa.array(op == 2, pa.bool_()),
        ts,
        _unchanged_lists(unchanged, names),
    ]


def _unchanged_lists(unchanged: np.ndarray, names: list[str]) -> pa.Array:
    m = unchanged.shape[1]
    if not unchanged.any():
        return pa.nulls(m, pa.list_(pa.string()))
    per_row = unchanged.sum(axis=0)
    offsets = np.zeros(m + 1, np.int32)
    np.cumsum(per_row, out=offsets[1:])
    rows, cols = np.nonzero(unchanged.T)
    values = pa.array(np.array(names, dtype=object)[cols], pa.string())
    mask = pa.array(per_row == 0)
    return pa.ListArray.from_arrays(pa.array(offsets), values, mask=mask)


def _empty_rows(rel: Relation) -> pa.Table:
    return pa.schema(source_fields(rel.columns) + meta_schema_fields()).empty_table()


def _with_rejects(table: pa.Table, cols: Converted) -> pa.Table:
    if cols.reasons is None:
        return table
    return table.append_column(REJECT_REASON, cols.reasons).append_column(REJECT_VALUE, cols.values)


__all__ = [
    "REJECT_REASON",
    "REJECT_VALUE",
    "Column",
    "Converted",
    "DecodeError",
    "DecodedChunk",
    "DecodedTable",
    "PgOutputDecoder",
    "Relation",
    "arrow_type",
    "columns_from_text",
    "source_fields",
    "text_to_arrow",
    "text_to_columns",
]
