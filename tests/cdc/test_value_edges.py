"""Values at the edges of their types on the slot feed: each arrives in raw exactly or by the
documented `__raw` rule (lib/values.py), and a value the platform cannot take is quarantined
with its position while the feed goes on."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

import psycopg2
import pytest
from cdc_helpers import CdcEnv, drop_database

from analytics_assets.lib.values import (
    days_from_civil,
    decimal_text,
    pg_date_text,
    pg_time_text,
    pg_timestamp_text,
)

EDGES = (
    "create table edges (id int primary key, ts timestamp, tstz timestamptz, d date, "
    "amount numeric(12, 2), wide numeric(40, 4), free numeric, neg numeric(5, -2), f4 real)"
)


def test_infinity_bc_dates_nan_and_wide_numerics_arrive_by_the_raw_rule(cdc):
    cdc.execute(EDGES)
    cdc.tables = ("edges",)
    cdc.execute(
        "insert into edges values (1, '2024-02-29 12:00:00.5', '2024-02-29 12:00:00+00', "
        "'2024-02-29', 12.5, 1.5, 1.5, 12345, 1.1)"
    )
    cdc.ingest()  # the snapshot; the edge values below come through the stream
    cdc.execute(
        "insert into edges values (2, 'infinity', '-infinity', 'infinity', 'NaN', "
        "'123456789012345678901234567890123456.7890', "
        "'123456789012345678901234567890.123456789', null, null), "
        "(3, '0044-03-15 12:00:00 BC', '0044-03-15 12:00:00.25+00 BC', '0044-03-15 BC', "
        "null, 'NaN', 'Infinity', null, 'NaN'), "
        "(4, '12345-06-07 08:09:10', '10000-01-01 00:00:00+00', '5874897-12-31', "
        "null, null, '-Infinity', null, '-Infinity')"
    )
    result = cdc.ingest()
    assert result.tables["edges"].changes_by_op["c"] == 3
    # a companion column comes with the first value that needs it: `neg` never had one
    companions = {
        c
        for (c,) in cdc.raw(
            "select column_name from information_schema.columns where table_schema = 'raw' "
            "and table_name = 'edges' and column_name like '%\\_\\_raw' escape '\\'"
        )
    }
    assert companions == {"ts__raw", "tstz__raw", "d__raw", "amount__raw"}
    rows = cdc.raw(
        "select id, ts, ts__raw, tstz, tstz__raw, d, d__raw, amount, amount__raw, wide, free, "
        "neg, null as neg__raw, f4 from raw.edges order by id"
    )
    assert rows[0] == (
        1,
        dt.datetime(2024, 2, 29, 12, 0, 0, 500000),
        None,
        dt.datetime(2024, 2, 29, 12, tzinfo=dt.UTC),
        None,
        dt.date(2024, 2, 29),
        None,
        Decimal("12.50"),
        None,
        "1.5000",
        "1.5",
        Decimal(12300),  # numeric(5, -2) rounds to hundreds at the source
        None,
        pytest.approx(1.100000023841858, abs=0),  # the float4 value itself
    )
    assert rows[1][:10] == (
        2,
        *(None, "infinity", None, "-infinity", None, "infinity"),
        None,
        "NaN",
        "123456789012345678901234567890123456.7890",
    )
    assert rows[1][10] == "123456789012345678901234567890.123456789"
    assert rows[2][1:7] == (
        *(None, "0044-03-15 12:00:00 BC", None, "0044-03-15 12:00:00.25+00 BC"),
        *(None, "0044-03-15 BC"),
    )
    assert rows[2][9:11] == ("NaN", "Infinity") and rows[2][13] != rows[2][13]  # NaN
    assert rows[3][1:7] == (
        *(None, "12345-06-07 08:09:10", None, "10000-01-01 00:00:00+00"),
        *(None, "5874897-12-31"),
    )
    assert rows[3][10] == "-Infinity" and rows[3][13] == float("-inf")

    # a change back to a value the typed column holds clears the companion
    cdc.execute("update edges set ts = '2020-01-01', d = '2020-01-01' where id = 2")
    cdc.ingest()
    assert cdc.raw("select ts, ts__raw, d, d__raw from raw.edges where id = 2") == [
        (dt.datetime(2020, 1, 1), None, dt.date(2020, 1, 1), None)
    ]


def test_a_companion_column_comes_with_the_first_value_that_needs_it(cdc):
    cdc.execute("create table spans (id int primary key, until timestamptz)")
    cdc.tables = ("spans",)
    cdc.execute("insert into spans values (1, '2030-01-01')")
    cdc.ingest()
    cdc.execute("update spans set until = '2031-01-01' where id = 1")
    cdc.ingest()
    columns = "select column_name from information_schema.columns where table_name = '{}'"
    assert "until__raw" not in {c for (c,) in cdc.raw(columns.format("spans"))}
    cdc.execute("insert into spans values (2, 'infinity')")
    cdc.ingest()
    for table in ("spans", "spans_changes"):
        assert "until__raw" in {c for (c,) in cdc.raw(columns.format(table))}
    assert cdc.raw("select id, until, until__raw from raw.spans order by id") == [
        (1, dt.datetime(2031, 1, 1, tzinfo=dt.UTC), None),
        (2, None, "infinity"),
    ]


def test_a_key_only_delete_keeps_the_companion_of_the_deleted_row(cdc):
    cdc.execute("create table ends (id int primary key, until timestamptz)")
    cdc.tables = ("ends",)
    cdc.ingest()
    cdc.execute("insert into ends values (1, 'infinity')")
    cdc.execute("delete from ends where id = 1")  # REPLICA IDENTITY DEFAULT: the key only
    cdc.ingest()
    assert cdc.raw("select until, until__raw, _is_deleted from raw.ends") == [
        (None, "infinity", True)
    ]


@pytest.mark.parametrize(
    "value",
    [
        "infinity",
        "-infinity",
        "0001-01-01 00:00:00",
        "9999-12-31 23:59:59.999999",
        "0001-12-31 23:59:59.000001 BC",
        "4713-01-01 00:00:00 BC",
        "0044-03-15 12:00:00.5 BC",
        "10000-01-01 00:00:00",
        "294276-12-31 23:59:59.999999",
    ],
)
def test_the_raw_text_of_epoch_values_is_what_postgres_prints(cdc, value):
    """The Debezium decoder prints epoch values with these functions; they must give
    PostgreSQL's own text (the slot feed's), so raw is the same on both feeds."""
    with cdc.connect() as conn, conn.cursor() as cur:
        cur.execute("set timezone = 'UTC'; set datestyle = 'ISO, YMD'")
        cur.execute(
            "select %s::timestamp::text, %s::timestamptz::text, %s::timestamp::date::text, "
            "case when isfinite(%s::timestamp) then %s::timestamp::date - date '1970-01-01' end, "
            "(extract(epoch from %s::timestamp::time) * 1000000)::int8",
            (value,) * 6,
        )
        ts, tstz, day, days, time_us = cur.fetchone()
    if days is None:
        us = 2**63 - 1 if value == "infinity" else -(2**63)
        days = 2**31 - 1 if value == "infinity" else -(2**31)
    else:
        us = days * 86_400_000_000 + time_us
    assert pg_timestamp_text(us, tz=False) == ts
    assert pg_timestamp_text(us, tz=True) == tstz
    assert pg_date_text(days) == day


def test_calendar_and_decimal_helpers_are_exact():
    assert days_from_civil(1970, 1, 1) == 0 and days_from_civil(0, 12, 31) == -719_163
    assert pg_date_text(days_from_civil(-43, 3, 15)) == "0044-03-15 BC"
    assert pg_time_text(86_400_000_000) == "24:00:00"
    assert pg_time_text(45_296_789_000) == "12:34:56.789"
    assert decimal_text(-5, 3) == "-0.005"
    assert decimal_text(123, -2) == "12300"
    assert decimal_text(12345678901234567890123456789012345678, 10) == (
        "1234567890123456789012345678.9012345678"
    )


@pytest.fixture
def ascii_cdc(pg_stack, tmp_path):
    """A SQL_ASCII source database: text columns hold whatever bytes were written."""
    admin_url = pg_stack.url("postgres")
    name = f"c_ascii_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(admin_url)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(
            f"create database \"{name}\" encoding 'SQL_ASCII' template template0 "
            "lc_collate 'C' lc_ctype 'C'"
        )
    admin.close()
    env = CdcEnv(admin_url.rsplit("/", 1)[0] + "/" + name, name, tmp_path, tables=("notes",))
    yield env
    drop_database(admin_url, name)


def _insert_bytes(env: CdcEnv, rows: list[tuple[int, bytes]]) -> None:
    conn = psycopg2.connect(env.url)
    conn.set_client_encoding("SQL_ASCII")
    with conn.cursor() as cur:
        for id_, body in rows:
            cur.execute("insert into notes values (%s, convert_from(%s, 'SQL_ASCII'))", (id_, body))
    conn.commit()
    conn.close()


def test_text_that_is_not_utf8_is_quarantined_with_its_position_and_the_feed_goes_on(ascii_cdc):
    env = ascii_cdc
    env.execute("create table notes (id int primary key, body text)")
    _insert_bytes(env, [(1, b"fine"), (2, b"caf\xe9 latin-1")])
    first = env.ingest()  # the snapshot: row 2 cannot be taken
    assert first.tables["notes"].changes_by_op["r"] == 1
    _insert_bytes(env, [(3, b"also fine"), (4, b"\xff\xfe")])
    env.execute("update notes set body = 'fixed' where id = 2")
    second = env.ingest()
    assert second.caught_up
    assert env.raw("select id, body from raw.notes order by id") == [
        (1, "fine"),
        (2, "fixed"),
        (3, "also fine"),
    ]
    dead = env.raw(
        "select topic, kafka_offset, kafka_partition, table_name, reason, record_value "
        "from raw._dead_letters order by first_seen_at, kafka_offset"
    )
    assert [d[3] for d in dead] == ["notes", "notes"]
    assert all(d[0] == f"pgoutput:{env.slot}" for d in dead)
    assert "column 'body': text that is not valid UTF-8" in dead[0][4]
    assert b"caf\\\\xe9 latin-1" in dead[0][5] and b'"id": "2"' in dead[0][5]
    # the streamed one names its change: commit LSN and seq, as the raw rows carry them
    lsn, seq = env.raw("select _lsn, _seq from raw.notes_changes where id = 3")[0]
    assert (dead[1][1], dead[1][2]) == (lsn, seq + 2)  # row 4: the next insert of that commit
    assert env.ingest().caught_up  # nothing is stuck: the next ingest has nothing to do
