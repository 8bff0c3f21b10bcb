"""A columnar decoder for PostgreSQL's `pgoutput` logical replication protocol (proto_version 1).

The message formats are PostgreSQL's "Logical Replication Message Formats" chapter. Python is the
CDC bottleneck (the server decodes ~730k row changes/s, a Python loop over messages manages a
fraction of that), so nothing here loops over rows in Python: a chunk of messages arrives as one
buffer plus an array of message offsets, and every step (message kinds, transaction boundaries,
tuple walking, value extraction) works on all messages at once: numpy operations, and two
compiled loops (`_pgoutput_kernels.c`, an extension module the package build compiles). Every
read is bounded by the end of the message it belongs to, so corrupt bytes raise DecodeError. Column values
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

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from analytics_assets.lib import _pgoutput_kernels as kernels
from analytics_assets.lib.errors import DecodeError
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


# Padding decode() requires after the last message (the StringView kernel copies 12 bytes)
PADDING = 16
# Exact lengths of the fixed-size messages, minimum lengths of the row messages' headers
_FIXED_LENGTH = {_B: 21, _C: 26}
_ROW_HEADER = 8  # kind, relation id, tag, column count


def _fail_at(bad: np.ndarray, where: np.ndarray, what: str) -> None:
    """DecodeError for the first True in `bad`, naming its byte position from `where`."""
    if len(bad) and bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DecodeError(f"{what} (byte {int(np.broadcast_to(where, bad.shape)[i])})")


def _message_ends(a: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Where each message ends, from the COPY row header in front of it: field count 1, then the
    length. Every message lies inside the buffer before its padding and before the next one's
    header, so no read bounded by these ends can reach another message's bytes."""
    n = len(starts)
    if n == 0:
        return np.zeros(0, np.int64)
    limit = len(a) - PADDING
    _fail_at((starts < 6) | (starts >= limit), starts, "a message starts outside the buffer")
    # byte by byte: six 1-D gathers cost a third of one gather through a 2-D index grid
    fields_ok = (a[starts - 6] == 0) & (a[starts - 5] == 1)
    _fail_at(~fields_ok, starts - 6, "a COPY row does not hold exactly one field")
    length = np.zeros(n, np.int64)
    for k in range(4, 0, -1):
        length <<= 8
        length |= a[starts - k]
    length[length >= 2**31] -= 2**32  # int32
    _fail_at(length < 1, starts - 4, "a COPY row length is not positive")
    ends = starts + length
    nxt = np.append(starts[1:] - 6, limit)
    _fail_at(ends > nxt, starts - 4, "a COPY row runs into the next message or the padding")
    return ends


def _check_lengths(kinds: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> None:
    """Begin and Commit have fixed sizes; a row change holds at least its header."""
    size = ends - starts
    for kind, length in _FIXED_LENGTH.items():
        _fail_at(
            (kinds == kind) & (size != length),
            starts,
            f"a {chr(kind)!r} message is not {length} bytes",
        )
    rows = (kinds == _I) | (kinds == _U) | (kinds == _D)
    _fail_at(rows & (size < _ROW_HEADER), starts, "a row change message is shorter than its header")


def _check_tags(kinds: np.ndarray, tag: np.ndarray, index: np.ndarray, pos: np.ndarray) -> None:
    """The byte after the relation id: an insert carries 'N'; an update 'N', or 'K'/'O' (old
    key / old row) first; a delete 'K' or 'O'."""
    n, k, o = ord("N"), ord("K"), ord("O")
    ok = np.where(
        kinds == _I,
        tag == n,
        np.where(kinds == _U, (tag == n) | (tag == k) | (tag == o), (tag == k) | (tag == o)),
    )
    if not ok.all():
        i = int(np.flatnonzero(~ok)[0])
        raise DecodeError(
            f"message #{int(index[i])} ({chr(int(kinds[i]))!r}) at byte {int(pos[i])}: "
            f"tuple tag {chr(int(tag[i]))!r} at byte {int(pos[i]) + 5}"
        )


class _Fields:
    """The fields of one message read one at a time, never past the message's end."""

    def __init__(self, data: bytes, index: int, start: int, end: int):
        self.data, self.index, self.start, self.end = data, index, start, end

    def error(self, pos: int, what: str) -> DecodeError:
        kind = chr(self.data[self.start])
        return DecodeError(
            f"message #{self.index} ({kind!r}, bytes {self.start}-{self.end}): {what} at byte {pos}"
        )

    def int(self, pos: int, width: int, signed: bool = True) -> int:
        if pos + width > self.end:
            raise self.error(pos, f"a {width}-byte integer runs past the message end")
        return int.from_bytes(self.data[pos : pos + width], "big", signed=signed)

    def cstring(self, pos: int) -> tuple[str, int]:
        end = self.data.find(b"\0", pos, self.end)
        if end < 0:
            raise self.error(pos, "a string runs past the message end")
        try:
            return self.data[pos:end].decode("utf-8"), end + 1
        except UnicodeDecodeError:
            raise self.error(pos, "a string is not UTF-8") from None

    def done(self, pos: int) -> None:
        if pos != self.end:
            raise self.error(pos, f"the fields end {self.end - pos} bytes before the message end")


@dataclass
class _Tuples:
    """Column-wise view of m tuples: value start, length and kind per (column, tuple)."""

    start: np.ndarray  # (ncols, m) int64
    length: np.ndarray  # (ncols, m) int64
    kind: np.ndarray  # (ncols, m) uint8
    end: np.ndarray  # (m,) position after the tuple


def _walk_tuples(a: np.ndarray, pos: np.ndarray, lim: np.ndarray, ncols: int) -> _Tuples:
    """Walk TupleData (after its int16 column count) for many tuples at once; tuple i must end
    by `lim[i]`, its message's end (the compiled kernel checks every read against it)."""
    m = len(pos)
    start = np.empty((ncols, m), np.int64)
    length = np.empty((ncols, m), np.int64)
    kind = np.empty((ncols, m), np.uint8)
    end = np.empty(m, np.int64)
    failed = kernels.walk_tuples(
        a,
        np.ascontiguousarray(pos, np.int64),
        np.ascontiguousarray(lim, np.int64),
        ncols,
        start,
        length,
        kind,
        end,
    )
    if failed is not None:
        code, at, detail = failed
        kind = chr(detail) if code == 4 else ""
        raise DecodeError(_WALK_ERRORS[code].format(at=at, detail=detail, kind=kind))
    return _Tuples(start, length, kind, end)


_WALK_ERRORS = {
    1: "a column's kind byte at byte {at} lies past the end of its message",
    2: "a value's length at byte {at} runs past the end of its message",
    3: "value length {detail} at byte {at} runs outside its message",
    4: "unsupported tuple data kind {kind!r} at byte {at}",
}


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
    views = np.empty((total, 4), "<i4")
    failed = kernels.string_views(
        a,
        np.ascontiguousarray(starts, np.int64).ravel(),
        np.ascontiguousarray(lengths, np.int64).ravel(),
        flat_valid.view(np.uint8),
        views,
    )
    if failed is not None:
        raise DecodeError(f"a value at byte {failed[1]} runs past the end of the buffer")
    bitmap = None if flat_valid.all() else pa.py_buffer(np.packbits(flat_valid, bitorder="little"))
    everything = pa.Array.from_buffers(
        pa.string_view(), total, [bitmap, pa.py_buffer(views), pa.py_buffer(a)]
    )
    return [everything.slice(j * m, m) for j in range(ncols)]


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

    def _parse_relation(self, f: _Fields) -> Relation:
        relid = f.int(f.start + 1, 4, signed=False)
        namespace, p = f.cstring(f.start + 5)
        name, p = f.cstring(p)
        replident = chr(f.int(p, 1))
        if replident not in "dnfi":
            raise f.error(p, f"unknown replica identity {replident!r}")
        ncols = f.int(p + 1, 2)
        if ncols < 0:
            raise f.error(p + 1, f"negative column count {ncols}")
        p += 3
        cols = []
        for _ in range(ncols):
            flags = f.int(p, 1)
            cname, p = f.cstring(p + 1)
            typoid = f.int(p, 4, signed=False)
            typmod = f.int(p + 4, 4)
            try:
                arrow_type(typoid, typmod)
            except (ValueError, pa.ArrowException):
                raise f.error(p + 4, f"column {cname!r}: type modifier {typmod}") from None
            p += 8
            cols.append(Column(cname, typoid, typmod, bool(flags & 1)))
        f.done(p)
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
        """Decode the messages at `starts` in `buf`, laid out as `frame_copy_rows` does: each
        message right after its binary COPY row header (int16 field count 1, int32 length),
        which says where the message ends, and at least 16 bytes of padding after the last.

        Every read stays inside its own message: a length, count or tag byte that does not fit
        raises DecodeError naming the message and byte, whatever the bytes are.
        Changes at or before `skip_through` are dropped (already applied downstream).
        """
        a = np.frombuffer(buf, np.uint8) if not isinstance(buf, np.ndarray) else buf
        raw = buf if isinstance(buf, bytes) else a.tobytes()
        starts = np.asarray(starts, np.int64)
        n = len(starts)
        ends = _message_ends(a, starts)
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
            raise DecodeError(
                f"unsupported pgoutput message {chr(int(kinds[i]))!r} (#{i} of {n}, "
                f"byte {int(starts[i])})"
            )
        _check_lengths(kinds, starts, ends)

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
            f = _Fields(raw, i, int(starts[i]), int(ends[i]))
            s = f.start
            k = raw[s]
            if k == _R:
                rel_events.append((i, self._parse_relation(f)))
            elif k == _Y:
                oid = f.int(s + 1, 4, signed=False)
                _, p = f.cstring(s + 5)
                name, p = f.cstring(p)
                f.done(p)
                self.type_names[oid] = name
            elif k == _T:
                nrel = f.int(s + 1, 4)
                if nrel < 0 or s + 6 + 4 * nrel != f.end:
                    raise f.error(s + 1, f"truncate relation count {nrel} does not fit the message")
                relids = [f.int(s + 6 + 4 * r, 4, signed=False) for r in range(nrel)]
                truncate_events.append((i, relids))
            # Origin and logical messages (heartbeats) carry no row change

        # -- row messages: relation id, shape
        row_idx = np.flatnonzero(is_rowmsg)
        row_pos = starts[row_idx]
        row_end = ends[row_idx]
        relid = be32u(a, row_pos + 1)
        tag5 = a[row_pos + 5]  # N (insert/update without old), K/O (old tuple)
        _check_tags(kinds[row_idx], tag5, row_idx, row_pos)

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
                a,
                rel,
                sel,
                row_idx,
                row_pos,
                row_end,
                tag5,
                kinds,
                seq_end,
                msg_lsn,
                msg_ts,
                skip_through,
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
                try:
                    tables[name].rows = pa.concat_tables(tbls, promote_options="permissive")
                except (pa.ArrowTypeError, pa.ArrowInvalid) as exc:
                    # two Relation messages in one chunk give a column types Arrow cannot merge
                    raise DecodeError(f"table {name}: {exc}") from None

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
        self,
        a,
        rel,
        sel,
        row_idx,
        row_pos,
        row_end,
        tag5,
        kinds,
        seq_end,
        msg_lsn,
        msg_ts,
        skip_through,
    ) -> list[pa.Table]:
        """Row images of one relation version: new images of inserts/updates, old images of
        deletes, and old-key deletes for primary-key updates."""
        ncols = len(rel.columns)
        msg = row_idx[sel]
        pos = row_pos[sel]
        end = row_end[sel]
        kinds_v = kinds[msg]
        has_old = (kinds_v != _I) & ((tag5[sel] == ord("K")) | (tag5[sel] == ord("O")))
        old_rows = np.flatnonzero(has_old)
        old_index = np.cumsum(has_old) - 1  # row -> index among old tuples
        old = _walk_tuples(a, pos[old_rows] + 8, end[old_rows], ncols)
        new_rows = np.flatnonzero(kinds_v != _D)
        new_pos = pos[new_rows] + 8
        new_has_old = has_old[new_rows]
        upd_new = np.flatnonzero(new_has_old)  # index among new tuples of updates with old
        oi = old_index[new_rows[upd_new]]
        # an update's old tuple is followed by 'N' and the new tuple's column count
        after_old, upd_end = old.end[oi], end[new_rows[upd_new]]
        _fail_at(
            after_old + 3 > upd_end, after_old, "the new tuple header runs past the message end"
        )
        _fail_at(
            a[after_old] != ord("N"), after_old, "an update's new tuple does not start with 'N'"
        )
        new_pos[upd_new] = after_old + 3
        counts = np.concatenate([be16(a, pos[old_rows] + 6), be16(a, new_pos - 2)])
        if (counts != ncols).any():
            i = int(np.flatnonzero(counts != ncols)[0])
            at = np.concatenate([pos[old_rows] + 6, new_pos - 2])[i]
            raise DecodeError(
                f"tuple column count {int(counts[i])} at byte {int(at)} differs from the "
                f"{ncols} columns of relation {rel.table}"
            )
        new = _walk_tuples(a, new_pos, end[new_rows], ncols)
        # a row message ends with its last tuple
        del_rows_ = np.flatnonzero(kinds_v == _D)
        last_end = np.concatenate([old.end[old_index[del_rows_]], new.end])
        msg_end = np.concatenate([end[del_rows_], end[new_rows]])
        _fail_at(last_end != msg_end, last_end, "bytes are left after the message's last tuple")

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
    try:
        return dt.datetime.fromtimestamp((pg_us + PG_EPOCH_US) / 1e6, tz=dt.UTC)
    except (ValueError, OverflowError, OSError):
        raise DecodeError(f"commit timestamp {pg_us} us after 2000-01-01 is out of range") from None


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
