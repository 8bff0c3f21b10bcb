"""Debezium envelope decoding (no broker): wrappers, ops, tombstones, decimal and time modes,
unchanged TOAST placeholders and malformed records."""

from __future__ import annotations

import base64
import datetime as dt
import json
from decimal import Decimal

import pyarrow as pa
import pytest

from analytics_assets.lib.debezium import (
    PLACEHOLDER,
    TableDecoder,
    encode_decimal,
)
from analytics_assets.lib.errors import EnvelopeError
from analytics_assets.lib.feeds.base import Position

FIELDS = [
    {"field": "id", "type": "int64", "optional": False},
    {"field": "name", "type": "string", "optional": True},
    {
        "field": "price",
        "type": "bytes",
        "name": "org.apache.kafka.connect.data.Decimal",
        "parameters": {"scale": "3", "connect.decimal.precision": "20"},
        "optional": True,
    },
    {"field": "at", "type": "string", "name": "io.debezium.time.ZonedTimestamp", "optional": True},
    {
        "field": "local",
        "type": "int64",
        "name": "io.debezium.time.MicroTimestamp",
        "optional": True,
    },
    {"field": "ms", "type": "int64", "name": "io.debezium.time.Timestamp", "optional": True},
    {"field": "day", "type": "int32", "name": "io.debezium.time.Date", "optional": True},
    {
        "field": "any_num",
        "type": "struct",
        "name": "io.debezium.data.VariableScaleDecimal",
        "optional": True,
    },
]


def wrap(payload, fields=FIELDS):
    row = {"type": "struct", "fields": fields, "optional": True}
    schema = {
        "type": "struct",
        "fields": [{**row, "field": "before"}, {**row, "field": "after"}],
    }
    return json.dumps({"schema": schema, "payload": payload}).encode()


def env(op, before=None, after=None, ts=1_700_000_000_000, table="items"):
    return {"op": op, "before": before, "after": after, "source": {"ts_ms": ts, "table": table}}


def decode(values, **kw):
    dec = TableDecoder("items", key=("id",), **kw)
    n = len(values)
    return dec.decode(values, list(range(1, n + 1)), [0] * n)


def test_precise_decimals_and_time_encodings_with_the_schema_wrapper():
    row = {
        "id": 1,
        "name": "Zoë ✓",
        "price": encode_decimal(Decimal("-12345678901234.567"), 3),
        "at": "2026-03-01T12:30:15.123456Z",
        "local": 1_772_368_215_123_456,
        "ms": 1_772_368_215_123,
        "day": 20_513,
        "any_num": {"scale": 7, "value": base64.b64encode((15).to_bytes(1, "big")).decode()},
    }
    out = decode([wrap(env("c", after=row))]).rows
    got = out.to_pylist()[0]
    assert out.schema.field("price").type == pa.decimal128(20, 3)
    assert got["price"] == Decimal("-12345678901234.567")
    assert got["at"] == dt.datetime(2026, 3, 1, 12, 30, 15, 123456, tzinfo=dt.UTC)
    assert got["local"] == dt.datetime(2026, 3, 1, 12, 30, 15, 123456)
    assert got["ms"] == dt.datetime(2026, 3, 1, 12, 30, 15, 123000)
    assert got["day"] == dt.date(2026, 3, 1)
    assert got["any_num"] == "0.0000015"
    assert got["name"] == "Zoë ✓"
    assert got["_op"] == "c" and got["_is_deleted"] is False
    assert got["_commit_ts"] == dt.datetime.fromtimestamp(1_700_000_000, dt.UTC)


def test_decimal_string_and_double_modes():
    fields = [
        {"field": "id", "type": "int64"},
        {"field": "s", "type": "string"},
        {"field": "d", "type": "double"},
    ]
    value = wrap(env("r", after={"id": 1, "s": "12345678.91", "d": 12.5}), fields)
    plain = decode([value]).rows
    assert plain.column("s").to_pylist() == ["12345678.91"]  # exact text without a hint
    assert plain.column("d").type == pa.float64()
    hinted = decode([value], column_types={"s": pa.decimal128(12, 2)}).rows
    assert hinted.column("s").to_pylist() == [Decimal("12345678.91")]


def test_schemaless_records_infer_types_or_take_hints():
    rows = [json.dumps(env("c", after={"id": 1, "t": "2026-01-01T00:00:00Z", "n": 2.5, "b": True}))]
    rows.append(json.dumps(env("c", after={"id": 2, "t": None, "n": 3, "b": None})))
    out = decode([r.encode() for r in rows]).rows
    assert out.schema.field("n").type == pa.float64()
    assert out.schema.field("t").type == pa.string()
    hinted = decode(
        [r.encode() for r in rows], column_types={"t": pa.timestamp("us", tz="UTC")}
    ).rows
    assert hinted.column("t").to_pylist()[0] == dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def test_ops_tombstones_truncates_and_primary_key_updates():
    values = [
        wrap(env("r", after={"id": 1, "name": "a"})),
        wrap(env("u", before={"id": 1, "name": "a"}, after={"id": 1, "name": "b"})),
        # a primary-key update as Debezium emits it
        wrap(env("d", before={"id": 1, "name": "b"})),
        None,  # tombstone
        wrap(env("c", after={"id": 2, "name": "b"})),
        wrap(env("t")),
        b"",  # an empty value is a tombstone too
        json.dumps({"schema": None, "payload": None}).encode(),  # wrapped tombstone
    ]
    out = decode(values)
    assert out.rows.column("_op").to_pylist() == ["r", "u", "d", "c"]
    assert out.rows.column("_is_deleted").to_pylist() == [False, False, True, False]
    assert out.rows.column("id").to_pylist() == [1, 1, 1, 2]
    assert out.rows.column("_lsn").to_pylist() == [1, 2, 3, 5]
    assert out.truncates == [Position(6, 0)]
    assert out.tombstones == 3


def test_unchanged_toast_and_key_only_deletes_are_listed_as_unchanged():
    values = [
        wrap(env("u", after={"id": 1, "name": PLACEHOLDER, "day": 3})),
        wrap(env("d", before={"id": 1, "name": None, "day": None})),  # REPLICA IDENTITY DEFAULT
    ]
    out = decode(values).rows
    unchanged = out.column("_unchanged_cols").to_pylist()
    assert unchanged[0] == ["name"]
    carried_by_companions = {"price__raw", "at__raw", "local__raw", "ms__raw", "day__raw"}
    assert set(unchanged[1]) == {f["field"] for f in FIELDS} - {"id"} | carried_by_companions
    assert out.column("name").to_pylist() == [None, None]


def test_key_columns_come_from_the_record_key():
    dec = TableDecoder("items")
    key = json.dumps({"schema": {}, "payload": {"tenant": 1, "id": 2}}).encode()
    dec.decode([wrap(env("c", after={"id": 2}))], [1], [0], keys=[key])
    assert dec.key == ("tenant", "id")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (b'{"payload": {"op": "c"', "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (json.dumps(env("x", after={"id": 1})).encode(), "unknown or missing op 'x'"),
        (json.dumps(env("c")).encode(), "op 'c' without its after image"),
        (json.dumps(env("d")).encode(), "op 'd' without its before image"),
        (json.dumps(env("c", after={"id": 1}, table="other")).encode(), "table 'other'"),
    ],
)
def test_malformed_records_raise_with_their_location(value, message):
    dec = TableDecoder("items", topic="app.public.items")
    with pytest.raises(EnvelopeError, match=message) as exc:
        dec.decode([value], [1], [0], where=[(2, 41)])
    assert "app.public.items partition 2 offset 41" in str(exc.value)


def test_a_value_that_does_not_fit_its_column_type_is_an_error():
    bad = wrap(env("c", after={"id": 1, "at": "not a time"}))
    with pytest.raises(EnvelopeError, match="column 'at'"):
        decode([bad])


def test_quarantine_leaves_bad_records_out_and_keeps_the_good_ones():
    """`quarantine=True` (the Kafka feed's mode): every bad kind is listed with its index and
    reason, the good records around them decode as they would alone, and a bad value of one
    record does not decide a column's type."""
    good = [wrap(env("c", after={"id": i, "name": f"n{i}", "at": None})) for i in (1, 2, 3)]
    bad = [
        b'{"payload": {"op": "c"',
        b"[1, 2]",
        json.dumps(env("x", after={"id": 9})).encode(),
        json.dumps(env("c")).encode(),
        json.dumps(env("c", after={"id": 9}, table="other")).encode(),
        wrap(env("c", after={"id": 9, "at": "not a time"})),
    ]
    values = [good[0], *bad[:3], good[1], *bad[3:], good[2]]
    dec = TableDecoder("items", key=("id",))
    n = len(values)
    out = dec.decode(values, list(range(1, n + 1)), [0] * n, quarantine=True)
    assert out.rows.column("id").to_pylist() == [1, 2, 3]
    assert out.rows.column("_lsn").to_pylist() == [1, 5, 9]
    assert out.rows.schema.field("at").type == pa.timestamp("us", tz="UTC")
    assert [i for i, _ in out.rejected] == [1, 2, 3, 5, 6, 7]
    reasons = dict(out.rejected)
    assert reasons[1].startswith("not JSON") and reasons[2] == "not a JSON object"
    assert reasons[3] == "unknown or missing op 'x'" and "after image" in reasons[5]
    assert "table 'other'" in reasons[6]
    assert reasons[7].startswith("column 'at' cannot be read")


def test_repeated_schema_text_is_not_reparsed_and_gives_the_same_rows():
    """Kafka Connect's JsonConverter repeats the schema in every record; after the first, only
    the payload is parsed (the schema bytes must match exactly, else the full record is)."""

    def compact(payload, fields=FIELDS):
        return json.dumps(json.loads(wrap(payload, fields)), separators=(",", ":")).encode()

    other = [{"field": "id", "type": "int64"}, {"field": "name", "type": "int32"}]
    values = [
        compact(env("c", after={"id": 1, "name": "a", "day": 1})),
        compact(env("c", after={"id": 2, "name": "b", "day": 2})),
        wrap(env("c", after={"id": 3, "name": "c", "day": 3})),  # same schema, other spacing
        compact(env("c", after={"id": 4, "name": "d", "day": 4})),
    ]
    dec = TableDecoder("items", key=("id",))
    out = dec.decode(values, [1, 2, 3, 4], [0] * 4).rows
    assert dec._prefix is not None
    assert out.column("name").to_pylist() == ["a", "b", "c", "d"]
    assert out.column("day").to_pylist() == [
        dt.date(1970, 1, d) + dt.timedelta(days=1) for d in range(1, 5)
    ]
    # a changed schema (name is now int32) is picked up, not shadowed by the cached prefix
    out = dec.decode([compact(env("c", after={"id": 5, "name": 7}), other)], [5], [0]).rows
    assert out.schema.field("name").type == pa.int32()
