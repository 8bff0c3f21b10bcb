"""The whole platform on the embedded stack: source → CDC → raw → dbt → daily marts."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from decimal import Decimal

import dagster as dg
import duckdb
import psycopg2

from analytics_assets.defs.sources.traffic import generate_history

END = dt.datetime(2026, 3, 10, tzinfo=dt.UTC)
DAY = "2026-03-07"


def _load_history(url: str) -> None:
    conn = psycopg2.connect(url)
    generate_history(conn, days=8, orders_per_day=60, seed=21, end=END)
    conn.close()


def _source_daily_revenue(url: str, day: str):
    conn = psycopg2.connect(url)
    with conn.cursor() as cur:
        cur.execute(
            """
            select count(*), count(distinct o.user_id), coalesce(sum(o.total), 0)
            from orders o join users u on u.id = o.user_id
            where o.status = 'completed' and o.deleted_at is null
              and (o.created_at at time zone 'UTC')::date = %s::date
            """,
            (day,),
        )
        row = cur.fetchone()
    conn.close()
    return row


def test_one_partition_end_to_end_equals_the_source_aggregate(platform_env):
    from analytics_assets.definitions import build_definitions

    _load_history(platform_env.source_url)
    defs = build_definitions()
    instance = dg.DagsterInstance.ephemeral()
    job = defs.get_implicit_global_asset_job_def()
    unpartitioned = dg.AssetSelection.from_string("not tag:daily")
    result = job.get_subset(asset_selection=set(unpartitioned.resolve(defs.resolve_asset_graph())))
    assert result.execute_in_process(instance=instance).success
    daily = dg.AssetSelection.from_string("tag:daily").resolve(defs.resolve_asset_graph())
    run = job.get_subset(asset_selection=set(daily)).execute_in_process(
        instance=instance, partition_key=DAY
    )
    assert run.success

    con = duckdb.connect(str(platform_env.warehouse_path), read_only=True)
    rows = con.execute(
        "select revenue_date, order_count, unique_customers, total_revenue from marts.daily_revenue"
    ).fetchall()
    con.close()
    assert [r[0].isoformat() for r in rows] == [DAY], "only the requested partition is built"
    count, customers, total = _source_daily_revenue(platform_env.source_url, DAY)
    assert count > 0
    assert (rows[0][1], rows[0][2], Decimal(rows[0][3])) == (count, customers, total)


def test_partition_range_runs_dbt_once_for_five_days(platform_env, tmp_path):
    _load_history(platform_env.source_url)
    env = dict(os.environ, DAGSTER_HOME=str(tmp_path / "home"))
    os.makedirs(env["DAGSTER_HOME"])
    dagster = os.path.join(os.path.dirname(sys.executable), "dagster")
    base = [dagster, "asset", "materialize", "-m", "analytics_assets.definitions"]
    for extra in (
        ["--select", "not tag:daily"],
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
