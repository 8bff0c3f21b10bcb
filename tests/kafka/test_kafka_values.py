"""Values through Debezium and the real broker: decimals beyond 28 and 38 digits, key-only
deletes with Debezium's NOT NULL placeholders, and column types declared for schemaless topics."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pyarrow as pa
import pytest

from analytics_assets import settings
from analytics_assets.lib.cdc import make_feed
from analytics_assets.lib.debezium_types import column_types_from_settings


def test_decimals_wider_than_28_and_38_digits_arrive_exactly(kenv):
    kenv.execute(
        "create table money (id bigint primary key, d38 numeric(38, 10), d40 numeric(40, 4), "
        "free numeric)"
    )
    kenv.tables = ("money",)
    con = kenv.connector()
    try:
        con.insert(
            "money",
            id=1,
            d38="1234567890123456789012345678.9012345678",
            d40="123456789012345678901234567890123456.7890",
            free="123456789012345678901234567890.123456789",
        )
        con.insert("money", id=2, d38="9999999999999999999999999999.9999999999", d40="-1")
        con.commit()
        assert kenv.ingest().caught_up
    finally:
        con.close()
    assert kenv.raw("select id, d38, d40, free from raw.money order by id") == [
        (
            1,
            Decimal("1234567890123456789012345678.9012345678"),
            "123456789012345678901234567890123456.7890",
            "123456789012345678901234567890.123456789",
        ),
        (2, Decimal("9999999999999999999999999999.9999999999"), "-1.0000", None),
    ]
    assert kenv.raw(
        "select count(*) from information_schema.tables where table_name = '_dead_letters'"
    ) == [(0,)]


def test_a_key_only_delete_with_placeholders_keeps_the_last_known_values(kenv):
    kenv.tables = ("orders",)
    con = kenv.connector()  # REPLICA IDENTITY DEFAULT: key-only deletes
    try:
        con.insert("orders", user_id=7, total="12.50", status="paid", paid_at="2026-01-02")
        con.commit()
        kenv.ingest()
        (order_id,) = con.ids("orders")
        con.delete("orders", order_id)  # before image: id + "", 0, 1970-01-01 placeholders
        con.commit()
        kenv.ingest()
    finally:
        con.close()
    row = "user_id, total, status, created_at > '2000-01-01', paid_at"
    assert kenv.raw(f"select {row}, _is_deleted from raw.orders") == [  # noqa: S608
        (7, Decimal("12.50"), "paid", True, dt.datetime(2026, 1, 2, tzinfo=dt.UTC), True)
    ]
    # the change log's delete holds the row as it was, not the placeholders
    assert kenv.raw(f"select {row} from raw.orders_changes where _op = 'd'") == [  # noqa: S608
        (7, Decimal("12.50"), "paid", True, dt.datetime(2026, 1, 2, tzinfo=dt.UTC))
    ]


def test_column_types_declared_in_settings_type_a_schemaless_topic(kenv, monkeypatch):
    monkeypatch.setenv("CDC_FEED", "kafka")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kenv.bootstrap)
    monkeypatch.setenv("KAFKA_GROUP_ID", kenv.group)
    monkeypatch.setenv("CDC_TOPIC_PREFIX", kenv.prefix)
    monkeypatch.setenv("CAPTURED_TABLES", "orders")
    monkeypatch.setenv(
        "CDC_COLUMN_TYPES",
        '{"orders": {"total": "numeric(12,2)", "created_at": "timestamptz", '
        '"paid_at": "timestamp with time zone", "updated_at": "timestamptz"}}',
    )
    settings.get_settings.cache_clear()
    try:
        feed = make_feed()
        assert feed.column_types["orders"]["total"] == pa.decimal128(12, 2)
        kenv.tables = ("orders",)
        con = kenv.connector(mode="string", schemas=False)
        try:
            con.insert("orders", user_id=1, total="-0.01", status="new", paid_at="infinity")
            con.commit()
            kenv.ingest(feed=feed)
        finally:
            con.close()
    finally:
        settings.get_settings.cache_clear()
    types = dict(
        kenv.raw(
            "select column_name, data_type from information_schema.columns "
            "where table_name = 'orders' and table_schema = 'raw'"
        )
    )
    assert types["total"] == "DECIMAL(12,2)" and types["created_at"] == "TIMESTAMP WITH TIME ZONE"
    assert types["status"] == "VARCHAR"
    assert kenv.raw("select total, paid_at, paid_at__raw from raw.orders") == [
        (Decimal("-0.01"), None, "infinity")
    ]


def test_column_types_setting_refuses_what_it_cannot_map(monkeypatch):
    monkeypatch.setenv("CDC_COLUMN_TYPES", '{"orders": {"total": "money"}}')
    settings.get_settings.cache_clear()
    try:
        with pytest.raises(settings.ConfigError, match="CDC_COLUMN_TYPES"):
            column_types_from_settings(settings.get_settings())
    finally:
        settings.get_settings.cache_clear()
