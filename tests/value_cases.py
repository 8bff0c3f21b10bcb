"""Generated values of every column type an application table commonly has, written into the
real source and compared with raw after ingesting through a feed (tests/cdc and tests/kafka).

Values are generated as PostgreSQL literals (text), edges included: numerics of any precision
with NaN and ±Infinity, timestamps/dates at ±infinity, BC and past year 9999, `24:00:00`,
jsonb, bytea, uuid, arrays, an enum, any NUL-free Unicode, float NaN/±Infinity. The comparison
turns each raw value back into PostgreSQL's text (typed column, else its `__raw` companion) and
compares it with the source's own text of the value.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import uuid
from decimal import Decimal

import numpy as np
import psycopg2
from hypothesis import strategies as st

from analytics_assets.lib.values import pg_date_text, pg_timestamp_text

SETUP = (
    "create type mood as enum ('sad', 'ok', 'happy ☀')",
    "create table vals (id int primary key, n numeric(12, 2), nw numeric(40, 4), nu numeric, "
    "ts timestamp, tz timestamptz, d date, t time, iv interval, j jsonb, b bytea, u uuid, "
    "ai int[], at text[], e mood, tx text, f8 float8, f4 real)",
)
COLUMNS = ("n", "nw", "nu", "ts", "tz", "d", "t", "iv", "j", "b", "u", "ai", "at", "e", "tx")
COLUMNS += ("f8", "f4")

TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=8
)


def _digits(n: int) -> st.SearchStrategy[str]:
    return st.integers(0, 10**n - 1).map(str)


def _decimal(int_digits: int, scale: int, specials: list[str]) -> st.SearchStrategy[str]:
    finite = st.builds(
        lambda sign, i, f: f"{sign}{i}.{f}" if scale else f"{sign}{i}",
        st.sampled_from(["", "-"]),
        _digits(int_digits),
        _digits(scale).map(lambda f: f.rjust(scale, "0")) if scale else st.just(""),
    )
    return st.one_of(finite, st.sampled_from(specials)) if specials else finite


def _free_decimal() -> st.SearchStrategy[str]:
    return st.builds(
        lambda sign, i, f: f"{sign}{i}.{f}" if f else f"{sign}{i}",
        st.sampled_from(["", "-"]),
        _digits(45),
        st.text(alphabet="0123456789", max_size=40),
    )


def _year_text(year: int) -> str:
    """Astronomical year -> PostgreSQL's literal year and era suffix."""
    return (f"{year:04d}", "") if year > 0 else (f"{1 - year:04d}", " BC")


DAY = st.tuples(st.integers(1, 12), st.integers(1, 28))
YEARS = st.one_of(
    st.integers(1, 9999), st.integers(-4712, 0), st.integers(10000, 200_000)
)  # astronomical: 0 is 1 BC; timestamps stop where int64 epoch microseconds do (Debezium's)
CLOCK = st.tuples(
    st.integers(0, 23), st.integers(0, 59), st.integers(0, 59), st.integers(0, 10**6 - 1)
)


def _timestamp(zone: str) -> st.SearchStrategy[str]:
    def text(year, md, clock):
        y, era = _year_text(year)
        hh, mi, ss, us = clock
        return f"{y}-{md[0]:02d}-{md[1]:02d} {hh:02d}:{mi:02d}:{ss:02d}.{us:06d}{zone}{era}"

    finite = st.builds(text, YEARS, DAY, CLOCK)
    return st.one_of(finite, finite, st.sampled_from(["infinity", "-infinity"]))


def _date() -> st.SearchStrategy[str]:
    def text(year, md):
        y, era = _year_text(year)
        return f"{y}-{md[0]:02d}-{md[1]:02d}{era}"

    years = st.one_of(YEARS, st.integers(200_000, 5_874_000))
    return st.one_of(st.builds(text, years, DAY), st.sampled_from(["infinity", "-infinity"]))


TIME = st.one_of(
    st.builds(lambda c: f"{c[0]:02d}:{c[1]:02d}:{c[2]:02d}.{c[3]:06d}", CLOCK), st.just("24:00:00")
)
INTERVAL = st.builds(
    lambda y, mo, d, us: f"{y} years {mo} mons {d} days {us} microseconds",
    st.integers(-100, 100),
    st.integers(-20, 20),
    st.integers(-400, 400),
    st.integers(-(10**12), 10**12),
)
JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(10**6), 10**6), TEXT),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(TEXT, inner, max_size=3)),
    max_leaves=6,
).map(lambda v: json.dumps(v, ensure_ascii=False))
FLOAT8 = st.floats(allow_nan=True, allow_infinity=True)
FLOAT4 = st.floats(width=32, allow_nan=True, allow_infinity=True)


def _maybe(s: st.SearchStrategy) -> st.SearchStrategy:
    return st.one_of(st.none(), s, s, s)


ROW = st.fixed_dictionaries(
    {
        "n": _maybe(_decimal(10, 2, ["NaN"])),
        "nw": _maybe(_decimal(36, 4, ["NaN"])),
        "nu": _maybe(st.one_of(_free_decimal(), st.sampled_from(["NaN", "Infinity", "-Infinity"]))),
        "ts": _maybe(_timestamp("")),
        "tz": _maybe(_timestamp("+00")),
        "d": _maybe(_date()),
        "t": _maybe(TIME),
        "iv": _maybe(INTERVAL),
        "j": _maybe(JSON),
        "b": _maybe(st.binary(max_size=12)),
        "u": _maybe(st.uuids().map(str)),
        "ai": _maybe(st.lists(st.one_of(st.none(), st.integers(-(2**31), 2**31 - 1)), max_size=4)),
        "at": _maybe(st.lists(st.one_of(st.none(), TEXT), max_size=4)),
        "e": _maybe(st.sampled_from(["sad", "ok", "happy ☀"])),
        "tx": _maybe(TEXT),
        "f8": _maybe(FLOAT8),
        "f4": _maybe(FLOAT4),
    }
)
# a workload: rows inserted, then some updated to other values, some deleted
WORKLOAD = st.tuples(
    st.lists(ROW, min_size=1, max_size=6),
    st.lists(st.tuples(st.integers(0, 5), ROW), max_size=3),
    st.lists(st.integers(0, 5), max_size=2),
)

_CASTS = {"n": "numeric", "nw": "numeric", "nu": "numeric", "ts": "timestamp", "tz": "timestamptz"}
_CASTS |= {"d": "date", "t": "time", "iv": "interval", "j": "jsonb", "u": "uuid"}
_CASTS |= {"ai": "int[]", "at": "text[]", "e": "mood", "f8": "float8", "f4": "real"}


def _param(col: str, value):
    if value is None:
        return None
    if col == "b":
        return psycopg2.Binary(value)
    if col in ("f8", "f4"):
        return (
            repr(value)
            if math.isfinite(value)
            else {"nan": "NaN", "inf": "Infinity"}.get(repr(value), "-Infinity")
        )
    return value


def _placeholders() -> str:
    return ", ".join(f"%s::{_CASTS.get(c, 'text')}" if c != "b" else "%s" for c in COLUMNS)


def apply_workload(conn, workload) -> None:
    """Insert, update and delete as the workload says, one transaction per step."""
    rows, updates, deletes = workload
    with conn.cursor() as cur:
        for i, row in enumerate(rows):
            cur.execute(
                f"insert into vals values (%s, {_placeholders()})",  # noqa: S608 - fixed casts
                [i, *(_param(c, row[c]) for c in COLUMNS)],
            )
    conn.commit()
    with conn.cursor() as cur:
        for i, row in updates:
            sets = ", ".join(
                f"{c} = %s::{_CASTS[c]}" if c in _CASTS else f"{c} = %s" for c in COLUMNS
            )
            cur.execute(
                f"update vals set {sets} where id = %s",  # noqa: S608 - fixed casts
                [*(_param(c, row[c]) for c in COLUMNS), i],
            )
        for i in deletes:
            cur.execute("delete from vals where id = %s", (i,))
    conn.commit()


def source_text(conn, json_arrays: bool) -> dict[int, dict[str, str | None]]:
    """Every source value as PostgreSQL prints it under the feeds' session settings (arrays as
    JSON when the feed delivers them so: Debezium)."""
    cols = [
        f"to_json({c})::text" if json_arrays and c in ("ai", "at") else f"{c}::text"
        for c in COLUMNS
    ]
    with conn.cursor() as cur:
        cur.execute(
            "set timezone = 'UTC'; set datestyle = 'ISO, YMD'; set intervalstyle = 'postgres'; "
            "set extra_float_digits = 3; set bytea_output = 'hex'"
        )
        cur.execute(f"select id, {', '.join(cols)} from vals order by id")  # noqa: S608
        rows = cur.fetchall()
    conn.rollback()
    return {r[0]: dict(zip(COLUMNS, r[1:], strict=True)) for r in rows}


def raw_text(con, columns=COLUMNS) -> dict[int, dict[str, str | None]]:
    """Every raw value (live rows) as PostgreSQL's text: the typed value printed, else its
    `__raw` companion."""
    names = [r[0] for r in con.execute("describe raw.vals").fetchall()]
    select = [c for c in columns if c in names]
    select += [f"{c}__raw" for c in columns if f"{c}__raw" in names]
    quoted = ", ".join(f'"{c}"' for c in select)
    got = con.execute(
        f"select id, {quoted} from raw.vals where not _is_deleted order by id"  # noqa: S608
    ).fetchall()
    out = {}
    for r in got:
        values = dict(zip(select, r[1:], strict=True))
        row = {}
        for c in columns:
            value = _as_pg_text(values.get(c))
            row[c] = value if value is not None else values.get(f"{c}__raw")
        out[r[0]] = row
    return out


def _as_pg_text(v) -> str | None:
    if v is None or isinstance(v, str):
        return v
    if isinstance(v, dt.datetime):
        naive = v.astimezone(dt.UTC).replace(tzinfo=None) if v.tzinfo else v
        us = (naive - dt.datetime(1970, 1, 1)) // dt.timedelta(microseconds=1)
        return pg_timestamp_text(us, tz=v.tzinfo is not None)
    if isinstance(v, dt.date):
        return pg_date_text((v - dt.date(1970, 1, 1)).days)
    if isinstance(v, Decimal):
        return str(v)
    if isinstance(v, bytes):
        return "\\x" + v.hex()
    if isinstance(v, uuid.UUID):
        return str(v)
    return repr(v)


def assert_same(source: dict, raw: dict, skip: dict[str, str] | None = None) -> None:
    """raw equals the source value for value; floats as numbers (NaN equal to NaN), `skip`
    maps a column to the documented reason it is left out."""
    assert sorted(raw) == sorted(source), "raw has other rows than the source"
    for key, src in source.items():
        for c in COLUMNS:
            if skip and c in skip:
                continue
            got, want = raw[key][c], src[c]
            if c in ("f8", "f4") and want is not None and got is not None:
                w = float(np.float32(want)) if c == "f4" else float(want)
                g = float(got)
                assert (math.isnan(w) and math.isnan(g)) or g == w, (key, c, got, want)
            else:
                assert got == want, (key, c, got, want)


def dead_letters(con) -> int:
    exists = con.execute(
        "select count(*) from information_schema.tables "
        "where table_schema = 'raw' and table_name = '_dead_letters'"
    ).fetchone()[0]
    return con.execute("select count(*) from raw._dead_letters").fetchone()[0] if exists else 0
