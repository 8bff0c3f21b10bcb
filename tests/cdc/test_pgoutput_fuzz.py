"""The pgoutput decoder on hostile bytes: a real stream from the embedded PostgreSQL 18, with its
values as text and as binary, mutated thousands of times (seeded, so every run tries the same
mutations of the same structure).

Every mutated stream must either decode or raise DecodeError: no other exception, no crash, and
no decoded value holding bytes from outside the message it came from."""

from __future__ import annotations

import random
import re
import struct
from dataclasses import dataclass, field

import pyarrow as pa
import pytest
from graph_runs import scratch_source_database
from test_pgoutput import Peek

from analytics_assets.lib.errors import DecodeError
from analytics_assets.lib.pgoutput import PgOutputDecoder
from analytics_assets.lib.pgoutput_wire import frame_copy_rows

KEYS = {"users": ("id",), "orders": ("id",), "notes": ("id",)}
MUTATIONS_PER_KIND = 400


@dataclass
class Stream:
    """A framed pgoutput stream and where its fields are (found by walking it)."""

    buf: bytes
    starts: list[int]
    rows: list[bytes]  # the messages, unframed
    binary: bool = False  # values in binary
    kind_bytes: list[int] = field(default_factory=list)
    copy_lengths: list[int] = field(default_factory=list)  # int32
    value_lengths: list[int] = field(default_factory=list)  # int32
    column_counts: list[int] = field(default_factory=list)  # int16: tuples and relations
    truncate_counts: list[int] = field(default_factory=list)  # int32
    tuple_kinds: list[int] = field(default_factory=list)
    tags: list[int] = field(default_factory=list)  # N/K/O after the relation id or old tuple


def locate(buf: bytes, starts: list[int]) -> Stream:
    rows = []
    s = Stream(buf, starts, rows)
    for start in starts:
        length = struct.unpack_from(">i", buf, start - 4)[0]
        rows.append(buf[start : start + length])
        s.kind_bytes.append(start)
        s.copy_lengths.append(start - 4)
        kind = chr(buf[start])
        if kind == "R":
            p = buf.index(b"\0", buf.index(b"\0", start + 5) + 1) + 2
            s.column_counts.append(p)
        elif kind == "T":
            s.truncate_counts.append(start + 1)
        elif kind in "IUD":
            s.tags.append(start + 5)
            p = start + 6
            while True:
                s.column_counts.append(p)
                ncols = struct.unpack_from(">h", buf, p)[0]
                p += 2
                for _ in range(ncols):
                    s.tuple_kinds.append(p)
                    if buf[p] in b"tb":
                        s.value_lengths.append(p + 1)
                        p += 5 + struct.unpack_from(">i", buf, p + 1)[0]
                    else:
                        p += 1
                if p >= start + length:
                    break
                s.tags.append(p)  # the 'N' after an update's old tuple
                p += 1
    return s


# the notes' `m`: an enum as text; binary values come only for the types the binary path
# reads (lib/pgoutput_binary.py), so there a jsonb
NOTES = {
    "text": ("create type mood as enum ('calm', 'restless')", "mood", "calm", "restless"),
    "binary": ("select 1", "jsonb", '"calm"', '["restless"]'),
}


@pytest.fixture(scope="module", params=["text", "binary"])
def stream(pg_stack, request) -> Stream:
    create_type, m_type, calm, restless = NOTES[request.param]
    with scratch_source_database(pg_stack.url("postgres")) as url:
        peek = Peek(url, ["users", "orders"])
        peek.execute(
            create_type,
            f"create table notes (id int primary key, body text, m {m_type}, n numeric(8, 3))",
            "alter table notes replica identity full",
            f'alter publication "{peek.pub}" add table notes',
        )
        peek.execute(
            "insert into users (id, email, full_name, country) select g, 'user' || g || "
            "'@example.com', case when g % 2 = 0 then repeat('Ö', g * 7) end, 'DE' "
            "from generate_series(1, 5) g"
        )
        peek.execute(
            "insert into orders (id, user_id, total, status) select g, g, g * 1.5, "
            "'status-' || g from generate_series(1, 5) g",
            "update orders set status = 'paid' where id = 2",
            "update orders set id = 100 where id = 1",
        )
        peek.execute(
            "insert into notes values (1, repeat('body ', 60), %(calm)s, 1.25), "
            "(2, 'short', %(restless)s, null), (3, null, null, 2)",
            "update notes set n = 9.5 where id = 1",
            "delete from notes where id = 2",
            "delete from users where id = 5",
            params={"calm": calm, "restless": restless},
        )
        peek.execute("truncate orders")
        peek.execute("select pg_logical_emit_message(true, 'analytics_assets.heartbeat', 'x')")
        peek.execute(
            "alter table users add column tier text",
            "insert into users (id, email, tier) values (9, 'late@example.com', 'gold')",
        )
        binary = request.param == "binary"
        buf, starts = peek.messages(binary=binary)
        peek.close()
    s = locate(buf, [int(s) for s in starts])
    s.binary = binary
    return s


def decode(buf: bytes, starts) -> object:
    return PgOutputDecoder(primary_keys=KEYS).decode(buf, starts)


def messages_by_position(buf: bytes, starts) -> dict[tuple[int, int], list[tuple[int, int]]]:
    """(commit LSN, change ordinal) -> the (start, end) of the messages that may carry it, read
    from the (mutated) bytes as the decoder reads them; mutated Begins can repeat an LSN."""
    out: dict[tuple[int, int], list[tuple[int, int]]] = {}
    lsn, k = 0, 0
    for start in starts:
        end = start + struct.unpack_from(">i", buf, start - 4)[0]
        kind = chr(buf[start])
        if kind == "B":
            lsn, k = struct.unpack_from(">q", buf, start + 1)[0], 0
        elif kind in "IUDT":
            k += 1
            out.setdefault((lsn, k), []).append((start, end))
    return out


# what the binary path prints from a value's bytes rather than copying them: numerics, and the
# `__raw` text of dates and timestamps
PRINTED = re.compile(
    rb"-?\d+(\.\d+)?|NaN|-?Infinity|-?infinity"
    rb"|\d{4,}-\d\d-\d\d( \d\d:\d\d:\d\d(\.\d{1,6})?)?(\+00)?( BC)?"
).fullmatch


def assert_values_inside_their_messages(
    buf: bytes, starts, chunk, what: str, binary: bool = False
) -> None:
    where = messages_by_position(buf, starts)
    for table in chunk.tables.values():
        rows = table.rows
        meta = zip(rows["_lsn"].to_pylist(), rows["_seq"].to_pylist(), strict=True)
        candidates = [where.get((lsn, (seq + 1) // 2), []) for lsn, seq in meta]
        for name in rows.column_names:
            column = rows[name]
            if name.startswith("_") or not (
                pa.types.is_string(column.type) or pa.types.is_binary(column.type)
            ):
                continue
            for value, spans in zip(column.cast(pa.binary()).to_pylist(), candidates, strict=True):
                if value and not (binary and PRINTED(value)):
                    assert any(value in buf[s:e] for s, e in spans), (
                        f"{what}: {table.table}.{name} holds {value[:40]!r}, not from its message"
                    )


def mutations(s: Stream, kind: str, rng: random.Random):
    """(description, buffer, starts) of one mutation of `kind`."""
    buf, starts = bytearray(s.buf), s.starts
    lo, hi = starts[0] - 6, len(s.buf) - 16
    if kind == "bit flips":
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(lo, hi)
            buf[at] ^= 1 << rng.randrange(8)
        return f"bit flips (seed state {rng.random():.6f})", bytes(buf), starts
    if kind == "truncated buffer":
        cut = rng.randrange(lo + 1, hi)
        kept = [x for x in starts if x < cut]
        return f"cut at byte {cut}", bytes(buf[:cut]) + b"\0" * 16, kept
    if kind == "shortened message":
        rows = list(s.rows)
        i = rng.randrange(len(rows))
        cut = rng.randrange(1, len(rows[i])) if len(rows[i]) > 1 else 1
        rows[i] = rows[i][:cut]
        framed = [struct.pack(">hi", 1, len(r)) + r for r in rows]
        new, new_starts = frame_copy_rows(framed)
        return f"message #{i} cut to {cut} bytes", new, list(new_starts)
    if kind == "length fields":
        fields = [(p, ">i") for p in s.copy_lengths + s.value_lengths + s.truncate_counts]
        fields += [(p, ">h") for p in s.column_counts]
        at, fmt = rng.choice(fields)
        old = struct.unpack_from(fmt, buf, at)[0]
        top = 2**31 - 1 if fmt == ">i" else 2**15 - 1
        value = rng.choice([-1, -9, -top - 1, top, old + 1, old - 1, 0, old + 4096])
        value = max(-top - 1, min(top, value))
        struct.pack_into(fmt, buf, at, value)
        return f"{fmt} at byte {at}: {old} -> {value}", bytes(buf), starts
    if kind == "tags replaced":
        at, choices = rng.choice(
            [(p, b"BCIUDTRYOMZ\0") for p in s.kind_bytes]
            + [(p, b"ntubZ\0") for p in s.tuple_kinds]
            + [(p, b"NKOZ\0") for p in s.tags]
        )
        old, buf[at] = buf[at], rng.choice(choices)
        return f"byte {at}: {chr(old)!r} -> {chr(buf[at])!r}", bytes(buf), starts
    raise AssertionError(kind)


def test_the_unmutated_stream_decodes_every_table(stream):
    out = decode(stream.buf, stream.starts)
    assert set(out.tables) == {"users", "orders", "notes"}
    assert out.tables["orders"].truncates
    assert stream.value_lengths and stream.truncate_counts and len(stream.tags) > 10
    assert_values_inside_their_messages(stream.buf, stream.starts, out, "unmutated")


@pytest.mark.parametrize(
    "kind",
    ["bit flips", "truncated buffer", "shortened message", "length fields", "tags replaced"],
)
def test_mutated_streams_decode_or_raise_decode_error_and_never_read_outside(stream, kind):
    rng = random.Random(f"pgoutput-fuzz-{kind}")
    errors = 0
    for n in range(MUTATIONS_PER_KIND):
        what, buf, starts = mutations(stream, kind, rng)
        what = f"{kind} #{n}: {what}"
        try:
            out = decode(buf, starts)
        except DecodeError as exc:
            assert str(exc), what
            errors += 1
            continue
        except Exception as exc:  # noqa: BLE001 - the assertion names it
            raise AssertionError(f"{what}: {type(exc).__name__}: {exc}") from exc
        assert_values_inside_their_messages(buf, starts, out, what, stream.binary)
    assert errors > 0, "the mutations must reach the checks"
