"""The whole platform on the embedded stack: source → CDC → raw → dbt → daily marts."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from decimal import Decimal
from zoneinfo import ZoneInfo

import dagster as dg
import duckdb
import psycopg2
import pytest
from graph_runs import platform_environment, run_graph, scratch_source_database

from analytics_assets import settings
from analytics_assets.dev.traffic import generate_history
from analytics_assets.lib.partitions import daily_partitions

END = dt.datetime(2026, 3, 10, tzinfo=dt.UTC)

# Per business time zone, the partitions the oracle test builds, one run each: New York's
# 2026-03-08 has 23 hours and its 2026-11-01 has 25. UTC, the default zone, is compared with the
# same oracle by the partition range test, whose run builds its days in UTC anyway.
ZONE_PARTITIONS = {
    "Asia/Seoul": ["2026-03-07"],
    "America/New_York": ["2026-03-08", "2026-11-01"],
}
# Local times placed on every zone's days: the hours in which the zones' dates differ, and on
# New York's DST days the hour after the skipped one and both 01:30s of the repeated one.
EDGE_TIMES = [(-1, 23, 30, 0), (0, 0, 30, 0), (0, 1, 30, 0), (0, 1, 30, 1), (0, 3, 30, 0)]
EDGE_TIMES += [(0, 23, 30, 0), (1, 0, 30, 0)]
DBT_MODELS = "group:staging or group:intermediate or group:marts"
# What a partition range of the daily marts needs built first: everything unpartitioned but the
# history models, which nothing daily reads.
DAILY_UPSTREAM = "not tag:daily and not group:history"


def _load_history(url: str) -> None:
    conn = psycopg2.connect(url)
    generate_history(conn, days=8, orders_per_day=60, seed=21, end=END)
    conn.close()


def _edge_orders(url: str) -> None:
    """Completed orders at the EDGE_TIMES of each zone's partition days."""
    moments = set()
    for zone, days in ZONE_PARTITIONS.items():
        for day in map(dt.date.fromisoformat, days):
            for offset, hour, minute, fold in EDGE_TIMES:
                local = dt.datetime.combine(day + dt.timedelta(days=offset), dt.time(hour, minute))
                moments.add(local.replace(tzinfo=ZoneInfo(zone), fold=fold).astimezone(dt.UTC))
    conn = psycopg2.connect(url)
    with conn, conn.cursor() as cur:
        cur.execute("select id from users where deleted_at is null order by id limit %s", (9,))
        users = [r[0] for r in cur.fetchall()]
        for i, moment in enumerate(sorted(moments)):
            cur.execute(
                "insert into orders (user_id, total, status, created_at, paid_at, updated_at) "
                "values (%s, %s, 'completed', %s, %s, %s)",
                (users[i % len(users)], Decimal(11 + i), moment, moment, moment),
            )
    conn.close()


def _source_daily_revenue(url: str, zone: str, day: str) -> tuple:
    """The oracle: daily_revenue's figures for a date, straight from the source with AT TIME
    ZONE."""
    conn = psycopg2.connect(url)
    with conn.cursor() as cur:
        cur.execute(
            """
            select count(*), count(distinct o.user_id), coalesce(sum(o.total), 0)
            from orders o join users u on u.id = o.user_id
            where o.status = 'completed' and o.deleted_at is null
              and (o.created_at at time zone %(zone)s)::date = %(day)s::date
            """,
            {"zone": zone, "day": day},
        )
        row = cur.fetchone()
    conn.close()
    return row


@pytest.fixture(scope="module")
def ingested(pg_stack, tmp_path_factory):
    """One source with history and edge orders, ingested once into one warehouse (a zone only
    changes how dbt dates the raw rows, not the rows)."""
    workdir = tmp_path_factory.mktemp("e2e")
    with scratch_source_database(pg_stack.url("postgres")) as url:
        _load_history(url)
        _edge_orders(url)
        with platform_environment(url, workdir) as env:
            from analytics_assets.definitions import build_definitions

            with dg.instance_for_test() as instance:
                assert run_graph(build_definitions(), instance, "group:raw").success
            yield env


@pytest.mark.parametrize("zone", list(ZONE_PARTITIONS))
def test_daily_revenue_of_a_partition_equals_the_source_aggregate_in_its_zone(
    ingested, zone, monkeypatch
):
    """daily_revenue for a partition == the source's completed orders of that date in the zone,
    however many hours the day has; and the reconciliation check agrees."""
    from analytics_assets.definitions import build_definitions

    days = ZONE_PARTITIONS[zone]
    monkeypatch.setenv("PARTITION_TIMEZONE", zone)
    settings.get_settings.cache_clear()
    daily_partitions.cache_clear()
    with duckdb.connect(str(ingested.warehouse.path)) as con:  # only this test's partitions
        for mart in ("daily_revenue", "daily_product_sales", "daily_customer_mix"):
            con.execute(f"drop table if exists marts.{mart}")  # noqa: S608 - fixed names
    checks = []
    try:
        defs = build_definitions()
        with dg.instance_for_test() as instance:
            for i, day in enumerate(days):
                # the first run rebuilds every model in the zone, the next only a partition
                run = run_graph(defs, instance, "tag:daily" if i else DBT_MODELS, partition=day)
                assert run.success, run.step_failures()
                checks += run.evaluations("source_reconciliation", "marts/daily_revenue")
    finally:
        settings.get_settings.cache_clear()
        daily_partitions.cache_clear()

    with duckdb.connect(str(ingested.warehouse.path), read_only=True) as con:
        rows = con.execute(
            "select revenue_date, order_count, unique_customers, total_revenue "
            "from marts.daily_revenue"
        ).fetchall()
    mart = {r[0].isoformat(): (r[1], r[2], Decimal(r[3])) for r in rows}
    expected = {day: _source_daily_revenue(ingested.source.url, zone, day) for day in days}
    assert all(count > 0 for count, _, _ in expected.values())
    assert mart == expected, "only the partitions built, each equal to the source's date"
    for day in days:  # the zone decides: the same dates in UTC hold other orders
        assert _source_daily_revenue(ingested.source.url, "UTC", day) != expected[day]
    assert len(checks) == len(days) and all(c.passed for c in checks), checks


def test_partition_range_runs_dbt_once_for_five_days(platform_env, tmp_path):
    _load_history(platform_env.source.url)
    env = dict(os.environ, DAGSTER_HOME=str(tmp_path / "home"))
    os.makedirs(env["DAGSTER_HOME"])
    dagster = os.path.join(os.path.dirname(sys.executable), "dagster")
    base = [dagster, "asset", "materialize", "-m", "analytics_assets.definitions"]
    for extra in (
        ["--select", DAILY_UPSTREAM],
        ["--select", "tag:daily", "--partition-range", "2026-03-03...2026-03-07"],
    ):
        proc = subprocess.run(base + extra, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]

    instance = dg.DagsterInstance.from_config(env["DAGSTER_HOME"])
    try:
        runs = instance.get_runs()
        range_runs = [r for r in runs if r.tags.get("dagster/asset_partition_range_start")]
        assert len(range_runs) == 1
        records = instance.get_records_for_run(
            range_runs[0].run_id, of_type=dg.DagsterEventType.STEP_START
        ).records
        dbt_steps = [r for r in records if "dbt_daily_marts" in (r.event_log_entry.step_key or "")]
        assert len(dbt_steps) == 1, "one dbt invocation for the whole range"
        logs = instance.all_logs(range_runs[0].run_id)
        invocations = [
            e
            for e in logs
            if "dbt build" in (e.user_message or "") and "--vars" in (e.user_message or "")
        ]
        joined = "\n".join(e.user_message for e in invocations)
        assert json.dumps({"max_date": "2026-03-08", "min_date": "2026-03-03"}) in joined or (
            '"min_date": "2026-03-03"' in joined
        )
        mats = instance.get_materialized_partitions(dg.AssetKey(["marts", "daily_revenue"]))
        assert mats == {f"2026-03-0{d}" for d in range(3, 8)}
    finally:
        instance.dispose()

    # each day of the range (UTC, the default zone) equals the source's completed orders
    with duckdb.connect(str(platform_env.warehouse.path), read_only=True) as con:
        rows = con.execute(
            "select revenue_date, order_count, unique_customers, total_revenue "
            "from marts.daily_revenue"
        ).fetchall()
    mart = {r[0].isoformat(): (r[1], r[2], Decimal(r[3])) for r in rows}
    expected = {day: _source_daily_revenue(platform_env.source.url, "UTC", day) for day in mats}
    assert all(count > 0 for count, _, _ in expected.values())
    assert mart == expected
