"""The prod Dagster graph end to end against the BigQuery API emulator: source rows on the
embedded Postgres, CDC through the slot into BigQuery raw tables (BigQueryWarehouse through
prod's resource seam), dbt-bigquery (target `emulator`) for one daily partition, the asset
checks reading BigQuery, all in one in-process run.

The run selects every raw table (the reconciliation check reads the CDC watermark of all of them)
and daily_revenue with everything it reads, not the whole graph: every other dbt node's run on the
emulator is test_dbt_emulator.py's, and the path from the slot through Dagster and dbt-bigquery to a
mart is the same for each mart."""

from __future__ import annotations

import datetime as dt
import json

import dagster as dg
import psycopg2
from graph_runs import load_history, platform_environment, run_graph, scratch_source_database

END = dt.datetime(2026, 3, 10, tzinfo=dt.UTC)
SELECTION = 'group:raw or +key:"marts/daily_revenue"'
DAY = "2026-03-08"
# The day's completed live orders straight from the source, to compare the mart with.
SOURCE_DAY = """
select count(*), sum(total) from orders
where status = 'completed' and deleted_at is null
  and (created_at at time zone 'UTC')::date = %s::date
"""


def test_prod_graph_materializes_one_daily_partition_on_the_emulator(
    pg_stack, tmp_path, emulated_bigquery, dbt_target_path
):
    raw = emulated_bigquery.dataset("raw")
    prefix = emulated_bigquery.dataset("analytics_e2e")
    with scratch_source_database(pg_stack.url("postgres")) as url:
        load_history(url, days=3, orders_per_day=15, seed=5, end=END)
        with platform_environment(
            url,
            tmp_path,
            ANALYTICS_ENV="prod",
            GCP_PROJECT="test-project",
            BIGQUERY_DATASET=prefix,
            RAW_SCHEMA=raw,
            DBT_TARGET="emulator",
            BIGQUERY_API_ENDPOINT=emulated_bigquery.endpoint,
            DBT_TARGET_PATH=str(tmp_path / "dbt_target"),
        ):
            from analytics_assets.definitions import build_definitions
            from analytics_assets.defs.dbt.project import get_dbt_project

            get_dbt_project.cache_clear()
            try:
                defs = build_definitions()
                with dg.instance_for_test() as instance:
                    run = run_graph(defs, instance, SELECTION, partition=DAY)
            finally:
                get_dbt_project.cache_clear()
            with psycopg2.connect(url) as con, con.cursor() as cur:
                cur.execute(SOURCE_DAY, (DAY,))
                source_day = cur.fetchone()
    failures = [str(run.step_failures())]
    for results in (tmp_path / "dbt_target").glob("*/run_results.json"):
        for node in json.loads(results.read_text())["results"]:
            if node["status"] not in ("success", "pass"):
                failures.append(f"{node['unique_id']}: {node['status']}: {node['message']}")
    assert run.success, failures
    assert run.failed_checks() == set()
    checked = {
        e.asset_check_evaluation_data.asset_key.to_user_string()
        for e in run.result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    }
    assert {"raw/orders", "marts/fct_orders", "marts/daily_revenue"} <= checked
    assert {
        "raw/orders",
        "raw/users",
        "marts/daily_revenue",
        "marts/fct_orders",
    } <= run.materialized()
    client = emulated_bigquery.client()
    [mart_day] = [
        tuple(r.values())
        for r in client.query(
            "select order_count, total_revenue "  # noqa: S608
            f"from `{prefix}_marts`.`daily_revenue` where revenue_date = '{DAY}'"
        ).result()
    ]
    assert mart_day == source_day and mart_day[0] > 0
    assert {t.table_id for t in client.list_tables(raw)} >= {"orders", "users", "_cdc_state"}
