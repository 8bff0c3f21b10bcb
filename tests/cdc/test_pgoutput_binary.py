"""pgoutput's binary values (lib/pgoutput_binary.py) on real streams from the embedded
PostgreSQL 18: the same changes peeked as text and as binary decode to the same Arrow tables,
edge values included; malformed binary values raise DecodeError naming the byte."""

from __future__ import annotations

import random
import struct

import numpy as np
import pytest
from test_pgoutput import Peek

from analytics_assets.lib.errors import BinaryValueUnsupported, DecodeError
from analytics_assets.lib.pgoutput import PgOutputDecoder
from analytics_assets.lib.pgoutput_binary import BINARY_TYPES
from analytics_assets.lib.pgoutput_wire import frame_copy_rows

ALL_TYPES = (
    "create table every (id int8 primary key, k2 int2, k4 int4, o oid, b bool, by bytea, "
    "t text, v varchar(8), c char(3), nm name, js json, jb jsonb, f4 real, f8 float8, d date, "
    "ts timestamp, tz timestamptz, n numeric, n2 numeric(12, 2), nw numeric(40, 4), "
    "nn numeric(5, -2), u uuid, long text)",
    "alter table every replica identity full",
)
EDGE_ROWS = (
    "insert into every values "
    "(1, -32768, 2147483647, 4294967295, true, '\\x00ff10'::bytea, 'plain', 'ab', 'x', 'nm', "
    '\'{"a": [1, 2]}\', \'{"b": {"c": null}, "a": 1.50}\', 1.1, 0.1, \'2024-02-29\', '
    "'2024-02-29 12:00:00.5', '2024-02-29 23:59:59.999999+00', 0, 12.5, "
    "'123456789012345678901234567890123456.7890', 12345, "
    "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', repeat('toast ', 5000)), "
    "(2, 0, -1, 0, false, ''::bytea, '', '', '', '', 'null', '[]', 'NaN', '-Infinity', "
    "'infinity', '-infinity', 'infinity', 'NaN', 'NaN', 'NaN', null, "
    "'00000000-0000-0000-0000-000000000000', null), "
    "(3, null, null, null, null, null, null, null, null, null, null, null, '-0', "
    "'1e-300', '0044-03-15 BC', '0044-03-15 12:00:00 BC', '10000-01-01 00:00:00+00', "
    "'-0.000000000000000000012', -9999999999.99, '-0.0001', -99900, null, null), "
    "(4, 7, 7, 7, true, '\\xdeadbeef'::bytea, 'Grüße ☀', 'ö', 'ü', 'x', '\"s\"', '\"s\"', "
    "'Infinity', 1.7976931348623157e308, '5874897-12-31', '294276-12-31 23:59:59.999999', "
    "'4713-01-01 00:00:00+00 BC', 'Infinity', null, null, null, null, 'short')"
)
CHANGES = (
    "update every set k4 = 8, t = 'changed' where id = 1",  # `long` unchanged: TOAST from old
    "update every set id = 10 where id = 2",  # a key change under binary keys
    "delete from every where id = 3",
)


@pytest.fixture
def every(source_db):
    peek = Peek(source_db, ["users", "orders"])
    peek.execute(*ALL_TYPES, f'alter publication "{peek.pub}" add table every')
    yield peek
    peek.close()


def decode_both(peek: Peek):
    keys = {"every": ("id",)}
    text = PgOutputDecoder(primary_keys=keys).decode(*peek.messages(binary=False))
    binary = PgOutputDecoder(primary_keys=keys).decode(*peek.messages(binary=True))
    return text, binary


def test_binary_values_decode_to_the_tables_the_text_path_makes(every):
    every.execute(EDGE_ROWS)
    every.execute(*CHANGES)
    with every.conn.cursor() as cur:  # the table has a column of every type read in binary
        cur.execute("select atttypid::int from pg_attribute where attrelid = 'every'::regclass")
        assert {oid for (oid,) in cur.fetchall()} >= BINARY_TYPES
    assert b"2024-02-29" in every.messages()[0]
    assert b"2024-02-29" not in every.messages(binary=True)[0]  # the values came as binary
    text, binary = decode_both(every)
    t, b = text.tables["every"].rows, binary.tables["every"].rows
    assert t.num_rows == 8  # 4 inserts, an update, a key change (delete + insert), a delete
    assert b.schema == t.schema
    for name in t.column_names:  # (NaN compared as text: NaN != NaN)
        assert [repr(v) for v in b[name].to_pylist()] == [repr(v) for v in t[name].to_pylist()]
    assert {c for c in t.column_names if c.endswith("__raw")} >= {"d__raw", "ts__raw", "tz__raw"}
    assert "infinity" in t["tz__raw"].to_pylist()


def test_numerics_print_as_postgres_prints_them(every):
    rng = random.Random("numeric-text")
    values = ["0", "-0", "NaN", "Infinity", "-Infinity", "0.0000", "10000", "9999.9999"]
    for _ in range(500):
        whole = str(rng.randrange(10 ** rng.randrange(1, 30)))
        frac = "".join(rng.choice("0123456789") for _ in range(rng.randrange(0, 25)))
        values.append(f"{rng.choice(['', '-'])}{whole}{'.' + frac if frac else ''}")
    every.execute("create table nums (id int primary key, n numeric)")
    every.execute(f'alter publication "{every.pub}" add table nums')
    every.execute(
        "insert into nums select i, v::numeric from unnest(%s::text[]) with ordinality x(v, i)",
        params=(values,),
    )
    text, binary = decode_both(every)
    printed = every.conn.cursor()
    printed.execute("select n::text from nums order by id")
    expected = [r[0] for r in printed.fetchall()]
    assert binary.tables["nums"].rows["n"].to_pylist() == expected
    assert text.tables["nums"].rows["n"].to_pylist() == expected


def test_a_type_the_binary_path_does_not_read_says_so(every):
    every.execute("create table arr (id int primary key, a int[])")
    every.execute(f'alter publication "{every.pub}" add table arr')
    every.execute("insert into arr values (1, '{1,2}')")
    with pytest.raises(BinaryValueUnsupported, match="'a'.*type oid 1007"):
        PgOutputDecoder().decode(*every.messages(binary=True))
    assert PgOutputDecoder().decode(*every.messages()).tables["arr"].rows["a"].to_pylist() == [
        "{1,2}"
    ]


def _value_at(buf: bytes, starts, column: int) -> int:
    """Byte position of an Insert's `column`-th value's int32 length (the first Insert)."""
    for s in starts:
        if buf[s] == ord("I"):
            p = s + 8  # kind, relation id, 'N', column count
            for _ in range(column):
                p += 5 + struct.unpack_from(">i", buf, p + 1)[0] if buf[p] == ord("b") else 1
            return p + 1
    raise AssertionError("no insert")


@pytest.mark.parametrize(
    ("ddl", "value", "mutate", "message"),
    [
        ("int8", "5", lambda v: v[:4], "8-byte binary value at byte \\d+ is 4 bytes long"),
        ("numeric", "12.5", lambda v: v[:8] + b"\x27\x10" + v[10:], "binary numeric at byte \\d+"),
        ("numeric", "12.5", lambda v: v[:-2], "binary numeric at byte \\d+"),
        ("jsonb", "{}", lambda v: b"\x02" + v[1:], "jsonb value at byte \\d+ has no version 1"),
        ("timestamp", "2024-01-01", lambda v: b"\x80\x01" + v[2:], "timestamp at byte \\d+ is out"),
        ("date", "2024-01-01", lambda v: b"\x80\x01" + v[2:], "date at byte \\d+ is out of range"),
    ],
)
def test_malformed_binary_values_raise_decode_error_naming_the_byte(
    every, ddl, value, mutate, message
):
    every.execute(f"create table bad (id int primary key, x {ddl})")
    every.execute(f'alter publication "{every.pub}" add table bad')
    every.execute("insert into bad values (1, %s)", params=(value,))
    buf, starts = every.messages(binary=True)
    at = _value_at(buf, starts, 1)
    length = struct.unpack_from(">i", buf, at)[0]
    old = buf[at + 4 : at + 4 + length]
    new = mutate(old)
    rows = []
    for s in starts:
        row = buf[s : s + struct.unpack_from(">i", buf, s - 4)[0]]
        if s < at < s + len(row):
            cut = at - s
            row = row[:cut] + struct.pack(">i", len(new)) + new + row[cut + 4 + length :]
        rows.append(struct.pack(">hi", 1, len(row)) + row)
    mutated, new_starts = frame_copy_rows(rows)
    with pytest.raises(DecodeError, match=message):
        PgOutputDecoder().decode(mutated, np.asarray(new_starts))
