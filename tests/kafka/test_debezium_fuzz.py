"""Fuzz: seeded mutations of real encoded Debezium events (the tests' connector, every common
column type) are each either applied as they read or quarantined with a reason; the other
records of their batch are decoded exactly as without them. Each record is read by its own
schema, so a mutated schema cannot change how the rest of its batch decodes."""

from __future__ import annotations

import copy
import json
import math
import random
import sys
from pathlib import Path

import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from value_cases import COLUMNS, SETUP, _param  # noqa: E402

from analytics_assets.lib.debezium import TableDecoder  # noqa: E402

CASES = 300
JUNK = [
    None,
    "",
    "x",
    -1,
    0,
    2**70,
    1.5,
    "NaN",
    "infinity",
    [],
    {},
    [1, "a"],
    {"a": 1},
    True,
    "AA==",
    "!!not base64",
    "-0043-03-15T12:00:00Z",
    "9999999999999999999999",
]


def _events(kenv) -> list[bytes]:
    """Real events: inserts, updates and deletes of generated rows of every column type."""
    kenv.execute(*SETUP)
    kenv.execute("alter table vals replica identity full")
    kenv.tables = ("vals",)
    con = kenv.connector()
    rng = random.Random(19)
    try:
        for i in range(12):
            row = _row(rng)
            con.insert("vals", id=i, **{c: _param(c, row[c]) for c in COLUMNS})
        con.commit()
        for i in range(0, 12, 3):
            con.update("vals", i, tx=f"changed {i} ✓", n="1.25")
        con.delete("vals", 5)
        con.commit()
        return [value for _, _, value in con.sent if value is not None]
    finally:
        con.close()


def _row(rng: random.Random) -> dict:
    """A row with edge values for every column (deterministic, no hypothesis engine)."""
    pick = rng.choice
    return {
        "n": pick([None, "12.50", "-0.01", "NaN"]),
        "nw": pick([None, "123456789012345678901234567890123456.7890", "NaN"]),
        "nu": pick([None, "3.14159265358979323846264338327950288", "Infinity"]),
        "ts": pick([None, "2024-02-29 12:00:00.5", "infinity", "0044-03-15 12:00:00 BC"]),
        "tz": pick([None, "2024-02-29 12:00:00+00", "-infinity", "10000-01-01 00:00:00+00"]),
        "d": pick([None, "2024-02-29", "infinity", "0044-03-15 BC"]),
        "t": pick([None, "24:00:00", "12:34:56.789"]),
        "iv": pick([None, "1 year 2 mons 3 days 04:05:06.789"]),
        "j": pick([None, '{"a": [1, "ü"]}', "[]"]),
        "b": pick([None, b"\x00\xff", b""]),
        "u": pick([None, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"]),
        "ai": pick([None, [1, None, 3], []]),
        "at": pick([None, ["a", None, "日本"], []]),
        "e": pick([None, "ok", "happy ☀"]),
        "tx": pick([None, "naïve 🎉", ""]),
        "f8": pick([None, 1.5, math.nan, -math.inf]),
        "f4": pick([None, 1.1, math.inf]),
    }


def _mutate(value: bytes, rng: random.Random) -> bytes:
    """One seeded mutation: of the bytes, or of the JSON structure (payload or schema)."""
    kind = rng.randrange(8)
    if kind == 0:  # truncated
        return value[: rng.randrange(len(value))]
    if kind == 1:  # a flipped byte
        i = rng.randrange(len(value))
        return value[:i] + bytes([value[i] ^ (1 << rng.randrange(8))]) + value[i + 1 :]
    if kind == 2:  # a range cut out
        i = rng.randrange(len(value))
        return value[:i] + value[i + rng.randrange(1, 40) :]
    obj = json.loads(value)
    payload = obj["payload"]
    if kind == 3:  # a column value replaced
        image = payload["after"] or payload["before"]
        image[rng.choice(list(image))] = copy.deepcopy(rng.choice(JUNK))
    elif kind == 4:  # an envelope field replaced or removed
        key = rng.choice(["op", "before", "after", "source", "ts_ms"])
        if rng.random() < 0.3:
            payload.pop(key, None)
        else:
            payload[key] = copy.deepcopy(rng.choice(JUNK))
    elif kind == 5:  # a source field replaced
        payload["source"][rng.choice(["table", "lsn", "ts_ms"])] = copy.deepcopy(rng.choice(JUNK))
    elif kind == 6:  # a column's schema changed: type, semantic name or parameters
        row = next(f for f in obj["schema"]["fields"] if f["field"] == "after")
        field = rng.choice(row["fields"])
        what = rng.choice(["type", "name", "parameters"])
        field[what] = rng.choice(
            {
                "type": ["int64", "string", "bytes", "boolean", "struct", "nonsense"],
                "name": [
                    "io.debezium.time.Date",
                    "org.apache.kafka.connect.data.Decimal",
                    "io.debezium.time.ZonedTimestamp",
                    "io.debezium.time.MicroTime",
                    None,
                ],
                "parameters": [
                    {"scale": "x"},
                    {"scale": "999"},
                    {"connect.decimal.precision": "-3"},
                    {"scale": "2", "connect.decimal.precision": "1"},
                    None,
                ],
            }[what]
        )
    else:  # the wrapper without its schema (a schemaless record)
        obj = payload
    return json.dumps(obj, separators=(",", ":")).encode()


def _rows(decoder_rows: pa.Table) -> dict[int, dict]:
    """Decoded rows by position, source columns and op only (NaN made comparable)."""
    out = {}
    for r in decoder_rows.to_pylist():
        out[r["_lsn"]] = {
            k: ("NaN" if isinstance(v, float) and math.isnan(v) else v)
            for k, v in r.items()
            if not k.startswith("_") or k in ("_op", "_is_deleted", "_unchanged_cols")
        }
    return out


def _decode(values: list[bytes]):
    dec = TableDecoder("vals", key=("id",), topic="fuzz.public.vals")
    n = len(values)
    return dec.decode(values, list(range(1, n + 1)), [0] * n, quarantine=True)


def test_mutated_events_are_applied_or_quarantined_and_the_rest_of_the_batch_is_exact(kenv):
    events = _events(kenv)
    assert len(events) >= 16
    baseline = _rows(_decode(events).rows)
    assert len(baseline) == len(events)
    rng = random.Random(1907)
    outcomes = {"applied": 0, "quarantined": 0}
    for case in range(CASES):
        batch = list(events)
        mutated = set(rng.sample(range(len(batch)), rng.randint(1, 3)))
        for i in mutated:
            batch[i] = _mutate(batch[i], rng)
        out = _decode(batch)  # never raises with quarantine
        got = _rows(out.rows)
        rejected = {i for i, _ in out.rejected}
        assert rejected <= mutated, f"case {case}: good records quarantined {rejected - mutated}"
        assert all(reason for _, reason in out.rejected)
        # a mutated record may read as a tombstone or a truncate (an op 'u' one bit from 't')
        neither = [i for i in mutated if i + 1 not in got and i not in rejected]
        assert len(neither) == out.tombstones + len(out.truncates), f"case {case}: lost"
        for i in range(len(batch)):
            if i in mutated:
                outcomes["applied" if i + 1 in got else "quarantined"] += 1
            else:  # a mutated name may add a column: NULL for the records without it
                row, want = got.get(i + 1) or {}, baseline[i + 1]
                assert {k: row.get(k) for k in want} == want, f"case {case}: record {i} changed"
                assert all(row[k] is None for k in set(row) - set(want)), f"case {case}: {i}"
    assert outcomes["applied"] and outcomes["quarantined"]  # both kinds of outcome were seen
