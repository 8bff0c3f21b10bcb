"""The pgoutput wire format (proto_version 1): where each field of a message lies, and the
vectorized readers of it (numpy, and the compiled loops of `_pgoutput_kernels.c`) that the decoder
(`analytics_assets.lib.pgoutput`) uses. The lag reading's SQL (`lib/feeds/slot_lag.py`) reads the
same bytes on the server and is built from the offsets stated here, so the two cannot disagree.

Offsets count from a message's first byte (its kind), as PostgreSQL's "Logical Replication
Message Formats" chapter lays them out.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from analytics_assets.lib import _pgoutput_kernels as kernels
from analytics_assets.lib.errors import DecodeError

PG_EPOCH = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)  # the zero of pgoutput's timestamps
PG_EPOCH_US = 946_684_800_000_000  # PG_EPOCH in Unix microseconds

# Message kinds (the first byte)
BEGIN, COMMIT, ORIGIN, RELATION, TYPE, INSERT, UPDATE, DELETE, TRUNCATE, MESSAGE = (
    ord(c) for c in "BCORYIUDTM"
)
# Tuple data kinds
VALUE_NULL, VALUE_UNCHANGED, VALUE_TEXT, VALUE_BINARY = (ord(c) for c in "nutb")


def has_value(kind: np.ndarray) -> np.ndarray:
    """Which tuple data kinds carry a value (text or binary)."""
    return (kind == VALUE_TEXT) | (kind == VALUE_BINARY)


# Begin: kind, final (commit) LSN int64, commit timestamp int64 (us since 2000-01-01), xid int32
BEGIN_FINAL_LSN = 1
BEGIN_COMMIT_TS = 9
BEGIN_LENGTH = 21
# Commit: kind, flags int8, commit LSN int64, end LSN int64, commit timestamp int64
COMMIT_END_LSN = 10
COMMIT_LENGTH = 26
# Insert / Update / Delete: kind, relation id int32, tuple tag ('N', 'K' or 'O'), then the tuple:
# its column count int16 and its columns
ROW_RELATION_ID = 1
ROW_TUPLE_TAG = 5
ROW_COLUMN_COUNT = 6
ROW_TUPLE_DATA = 8
# Truncate: kind, relation count int32, options int8, relation ids int32 each
TRUNCATE_RELATION_COUNT = 1
TRUNCATE_RELATION_IDS = 6
# The messages that take the next ordinal of their transaction (the change positions)
CHANGE_KINDS = (INSERT, UPDATE, DELETE, TRUNCATE)

# Padding decode() requires after the last message (the StringView kernel copies 12 bytes)
PADDING = 16
# Exact lengths of the fixed-size messages
FIXED_LENGTH = {BEGIN: BEGIN_LENGTH, COMMIT: COMMIT_LENGTH}
# A binary COPY's PGCOPY signature + flags + header extension length, before its first row
COPY_HEADER = 19


def frame_copy_rows(rows: list[bytes]) -> tuple[bytes, np.ndarray]:
    """Binary COPY rows of one bytea column -> one padded buffer + message start offsets."""
    lens = np.fromiter(map(len, rows), np.int64, len(rows))
    starts = np.zeros(len(rows), np.int64)
    if len(rows) > 1:
        np.cumsum(lens[:-1], out=starts[1:])
    starts += 6  # int16 field count + int32 length
    rows.append(b"\0" * PADDING)
    buf = b"".join(rows)
    rows.pop()
    return buf, starts


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


def fail_at(bad: np.ndarray, where: np.ndarray, what: str) -> None:
    """DecodeError for the first True in `bad`, naming its byte position from `where`."""
    if len(bad) and bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DecodeError(f"{what} (byte {int(np.broadcast_to(where, bad.shape)[i])})")


def message_ends(a: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Where each message ends, from the COPY row header in front of it: field count 1, then the
    length. Every message lies inside the buffer before its padding and before the next one's
    header, so no read bounded by these ends can reach another message's bytes."""
    n = len(starts)
    if n == 0:
        return np.zeros(0, np.int64)
    limit = len(a) - PADDING
    fail_at((starts < 6) | (starts >= limit), starts, "a message starts outside the buffer")
    # byte by byte: six 1-D gathers cost a third of one gather through a 2-D index grid
    fields_ok = (a[starts - 6] == 0) & (a[starts - 5] == 1)
    fail_at(~fields_ok, starts - 6, "a COPY row does not hold exactly one field")
    length = np.zeros(n, np.int64)
    for k in range(4, 0, -1):
        length <<= 8
        length |= a[starts - k]
    length[length >= 2**31] -= 2**32  # int32
    fail_at(length < 1, starts - 4, "a COPY row length is not positive")
    ends = starts + length
    nxt = np.append(starts[1:] - 6, limit)
    fail_at(ends > nxt, starts - 4, "a COPY row runs into the next message or the padding")
    return ends


def check_lengths(kinds: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> None:
    """Begin and Commit have fixed sizes; a row change holds at least its header."""
    size = ends - starts
    for kind, length in FIXED_LENGTH.items():
        fail_at(
            (kinds == kind) & (size != length),
            starts,
            f"a {chr(kind)!r} message is not {length} bytes",
        )
    rows = (kinds == INSERT) | (kinds == UPDATE) | (kinds == DELETE)
    fail_at(
        rows & (size < ROW_TUPLE_DATA), starts, "a row change message is shorter than its header"
    )


def check_tags(kinds: np.ndarray, tag: np.ndarray, index: np.ndarray, pos: np.ndarray) -> None:
    """The byte after the relation id: an insert carries 'N'; an update 'N', or 'K'/'O' (old
    key / old row) first; a delete 'K' or 'O'."""
    n, k, o = ord("N"), ord("K"), ord("O")
    ok = np.where(
        kinds == INSERT,
        tag == n,
        np.where(kinds == UPDATE, (tag == n) | (tag == k) | (tag == o), (tag == k) | (tag == o)),
    )
    if not ok.all():
        i = int(np.flatnonzero(~ok)[0])
        raise DecodeError(
            f"message #{int(index[i])} ({chr(int(kinds[i]))!r}) at byte {int(pos[i])}: "
            f"tuple tag {chr(int(tag[i]))!r} at byte {int(pos[i]) + 5}"
        )


class Fields:
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
class Tuples:
    """RelationColumn-wise view of m tuples: value start, length and kind per (column, tuple)."""

    start: np.ndarray  # (ncols, m) int64
    length: np.ndarray  # (ncols, m) int64
    kind: np.ndarray  # (ncols, m) uint8
    end: np.ndarray  # (m,) position after the tuple


def walk_tuples(a: np.ndarray, pos: np.ndarray, lim: np.ndarray, ncols: int) -> Tuples:
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
    return Tuples(start, length, kind, end)


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


def keys_differ(a, old: Tuples, oi, new: Tuples, ni, key_cols) -> np.ndarray:
    """For updates carrying the old tuple: does any key column's value differ (byte-wise)?"""
    kc = np.array(key_cols)
    ok, nk = old.kind[kc][:, oi], new.kind[kc][:, ni]
    ol, nl = old.length[kc][:, oi], new.length[kc][:, ni]
    differs = ((ok != nk) | (ol != nl)).any(axis=0)
    same = np.flatnonzero(~differs)
    if len(same):
        os_, ns_ = old.start[kc][:, oi][:, same], new.start[kc][:, ni][:, same]
        ov = gather_strings(a, os_, ol[:, same], has_value(ok[:, same]))
        nv = gather_strings(a, ns_, nl[:, same], has_value(nk[:, same]))
        neq = np.zeros(len(same), bool)
        for o_arr, n_arr in zip(ov, nv, strict=True):  # as bytes: binary values are no text
            ne = pc.not_equal(o_arr.view(pa.binary_view()), n_arr.view(pa.binary_view()))
            neq |= _bool_np(ne)  # null (both null) counts as equal
        differs[same] = neq
    return differs


def gather_strings(
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


__all__ = [
    "frame_copy_rows",
    "gather_strings",
    "message_ends",
    "walk_tuples",
]
