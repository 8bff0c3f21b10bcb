"""The daily revenue summary: numbers read from a real DuckDB `marts.daily_revenue`, posted when
the mart lands a new day, read from the warehouse's read copy while a run holds the file."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from decimal import Decimal

import dagster as dg
import duckdb
import pytest

from analytics_assets.defs.notify.sensors import (
    DAILY_REVENUE_KEY,
    build_notify_defs,
    notify_daily_revenue_summary,
)
from analytics_assets.defs.notify.summary import (
    DayRevenue,
    read_daily_revenue,
    summary_message,
)
from analytics_assets.lib.read_copy import publish_read_copy
from analytics_assets.settings import get_settings

MARCH_8, MARCH_9, MARCH_10 = dt.date(2026, 3, 8), dt.date(2026, 3, 9), dt.date(2026, 3, 10)


@pytest.fixture
def warehouse(notify_env):
    """The mart as dbt builds it (same columns and types), two days of data."""
    path = notify_env / "warehouse.duckdb"
    with duckdb.connect(str(path)) as conn:
        conn.execute("create schema marts")
        conn.execute(
            "create table marts.daily_revenue (revenue_date date not null, unique_customers bigint,"
            " order_count bigint, total_revenue decimal(18,2), avg_order_value decimal(18,2))"
        )
        conn.execute(
            "insert into marts.daily_revenue values"
            " ('2026-03-08', 40, 50, 1000.00, 20.00),"
            " ('2026-03-09', 44, 60, 1234.50, 20.58)"
        )
    return path


def test_summary_compares_the_day_with_the_day_before(warehouse):
    today, previous = read_daily_revenue(warehouse, MARCH_9)
    assert today == DayRevenue(MARCH_9, Decimal("1234.50"), 60, 44)
    assert previous == DayRevenue(MARCH_8, Decimal("1000.00"), 50, 40)

    text, fields = summary_message(today, previous)
    assert text == (
        ":bar_chart: Daily revenue 2026-03-09: revenue 1,234.50 (+23.4%), 60 orders (+20.0%), "
        "44 unique customers (+10.0%) vs 2026-03-08"
    )
    assert fields["revenue"] == "1234.50" and fields["previous_revenue"] == "1000.00"
    assert (fields["orders"], fields["unique_customers"]) == (60, 44)
    assert fields["revenue_change"] == "+23.4%"


def test_a_day_without_completed_orders_is_a_day_of_zeros(warehouse):
    today, previous = read_daily_revenue(warehouse, MARCH_10)
    assert today == DayRevenue.empty(MARCH_10)
    text, fields = summary_message(today, previous)
    assert "revenue 0.00 (-100.0%), 0 orders (-100.0%)" in text
    first, before = read_daily_revenue(warehouse, MARCH_8)
    assert summary_message(first, before)[1]["revenue_change"] == "new"


def test_summary_names_the_closed_days_restated_since_the_last_one(warehouse):
    from analytics_assets.defs.dbt.restatements import Restatement

    def restated(day, measure, previous, new, hour):
        at = dt.datetime(2026, 3, 10, hour, tzinfo=dt.UTC)
        return Restatement("daily_revenue", day, measure, Decimal(previous), Decimal(new),
                           "orders updated 1", at)  # fmt: skip

    today, previous = read_daily_revenue(warehouse, MARCH_9)
    text, fields = summary_message(
        today,
        previous,
        [
            restated(MARCH_8, "total_revenue", "900.00", "950.00", 1),
            restated(MARCH_8, "total_revenue", "950.00", "1000.00", 2),  # restated twice
            restated(MARCH_8, "order_count", "49", "50", 2),
        ],
    )
    assert text.endswith(
        "\n:memo: Restated: 2026-03-08 revenue 900.00 -> 1,000.00 (orders updated 1)"
    )
    assert fields["restated_days"] == [
        {"date": "2026-03-08", "previous_revenue": "900.00", "revenue": "1000.00",
         "caused_by": "orders updated 1"}
    ]  # fmt: skip
    assert summary_message(today, previous)[1]["restated_days"] == []


class WriterHoldingTheLock:
    """Another process with the warehouse open read-write, as a dbt run would have it."""

    def __init__(self, path):
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import duckdb, sys; c = duckdb.connect(sys.argv[1]); print('locked', flush=True);"
                " sys.stdin.read()",
                str(path),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout.readline().strip() == "locked"

    def release(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=10)


def test_sensor_posts_each_new_day_once_from_the_read_copy_while_a_writer_holds_the_file(
    warehouse, sink
):
    notifier = build_notify_defs().resources["notifier"]

    with dg.instance_for_test() as instance:

        def land(day: dt.date):
            instance.report_runless_asset_event(
                dg.AssetMaterialization(asset_key=DAILY_REVENUE_KEY, partition=day.isoformat())
            )

        def tick(cursor):
            context = dg.build_sensor_context(
                instance=instance, cursor=cursor, resources={"notifier": notifier}
            )
            result = notify_daily_revenue_summary(context)
            return context.cursor, result.skip_message

        cursor, _ = tick(None)  # starts watching
        land(MARCH_9)

        # no read copy yet (nothing was published): wait for it, consume nothing
        unpublished_cursor, why = tick(cursor)
        assert "does not exist yet" in why and "retrying next tick" in why
        assert unpublished_cursor == cursor
        assert sink.lines() == []

        publish_read_copy(get_settings())
        writer = WriterHoldingTheLock(warehouse)  # a run holds the warehouse itself
        try:
            cursor, _ = tick(cursor)
        finally:
            writer.release()
        cursor, why = tick(cursor)
        assert why == "no new materialization of marts/daily_revenue"

        land(MARCH_8)  # late data re-materializes an older day: no second summary for it
        cursor, why = tick(cursor)
        assert why == "only days already summarised were re-materialized"

    [line] = sink.lines()
    assert line["kind"] == "daily_summary"
    assert line["fields"]["date"] == "2026-03-09"
    assert line["fields"]["previous_date"] == "2026-03-08"
    assert line["fields"]["revenue"] == "1234.50"
