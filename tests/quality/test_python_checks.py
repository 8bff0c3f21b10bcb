"""The Python checks against the embedded Postgres and a DuckDB warehouse built once for the
module (10 daily partitions in one run), each check run alone (a check-only run, as the CLI does)
to pass and to fail. Tests that change the source, raw or the mart put them back; the tests that
drop the slot come last.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from graph_runs import run_graph
from quality_platform import DAY

from analytics_assets.settings import get_settings

FIRST, LAST = "2026-02-28", "2026-03-09"
EVERYTHING = "not kind:postgres"
REVENUE = "marts/daily_revenue"
RAW_TABLES = ("users", "products", "orders", "order_items")


def _meta(evaluation, key):
    value = evaluation.metadata[key]
    return getattr(value, "value", value)


@pytest.fixture(scope="module")
def built(platform):
    run = run_graph(platform.defs, platform.instance, EVERYTHING, partition_range=(FIRST, LAST))
    assert run.success, run.step_failures()
    return run


@pytest.fixture
def quality_env(monkeypatch):
    """`quality_env(NAME=value, ...)` for one test: settings are cached, so they are read again."""

    def setenv(**values: str) -> None:
        for name, value in values.items():
            monkeypatch.setenv(name, value)
        get_settings.cache_clear()

    yield setenv
    monkeypatch.undo()
    get_settings.cache_clear()


def check(platform, checks: str, partition: str | None = None):
    return run_graph(platform.defs, platform.instance, "", checks_only=checks, partition=partition)


def test_every_python_check_passes_on_a_consistent_warehouse(built):
    for table in RAW_TABLES:
        assert built.evaluation("schema_drift", f"raw/{table}").passed
        slot = built.evaluation("slot_health", f"raw/{table}")
        assert slot.passed, slot.description
        assert _meta(slot, "wal_status") in ("reserved", "extended")
    reconciled = built.evaluations("source_reconciliation", REVENUE)
    assert {e.partition for e in reconciled} == {FIRST} | {f"2026-03-0{d}" for d in range(1, 10)}
    assert all(e.passed for e in reconciled), [e.description for e in reconciled if not e.passed]
    assert all(_meta(e, "source_orders") > 0 for e in reconciled)
    volume = {e.partition: e for e in built.evaluations("volume_anomaly", REVENUE)}
    settled = [e for day, e in volume.items() if day <= DAY]
    assert all(e.passed for e in settled), [e.description for e in settled if not e.passed]
    assert "no verdict" in volume[FIRST].description
    assert _meta(volume[DAY], "history_days") == 7
    # Most orders of the last day are not completed yet at the end of the history: a real drop,
    # reported as a WARN, and the run still succeeded.
    assert not volume[LAST].passed and volume[LAST].severity.value == "WARN"
    assert "below the 7-day median" in volume[LAST].description
    assert built.success


# -- reconciliation --------------------------------------------------------------------------------


def _completed_in_source(platform, day: str) -> tuple[int, str]:
    return platform.source(
        "select count(*), coalesce(sum(total), 0)::text from orders where status = 'completed' "
        "and deleted_at is null and (created_at at time zone 'UTC')::date = %s",
        (day,),
    )[0]


def test_reconciliation_ignores_live_traffic_not_yet_captured(platform, built):
    """Orders of the day change in the source after the last ingest: completed, refunded, hard
    deleted, a new completed one. The source now differs from the mart, yet nothing is wrong."""
    before = _completed_in_source(platform, DAY)
    day_orders = f"(created_at at time zone 'UTC')::date = '{DAY}'"
    platform.source(
        f"update orders set status = 'completed', updated_at = now() where id = (select min(id) "  # noqa: S608
        f"from orders where status in ('pending', 'paid') and deleted_at is null and {day_orders})"
    )
    platform.source(
        f"update orders set status = 'refunded', updated_at = now() where id = (select min(id) "  # noqa: S608
        f"from orders where status = 'completed' and deleted_at is null and {day_orders})"
    )
    platform.source(
        f"delete from orders where id = (select max(id) from orders where status = 'completed' "  # noqa: S608
        f"and deleted_at is null and {day_orders})"
    )
    platform.source(
        "insert into orders (user_id, total, status, created_at, paid_at) values "
        "((select min(id) from users), 99.00, 'completed', %s, %s)",
        (f"{DAY} 12:00+00", f"{DAY} 12:05+00"),
    )
    assert _completed_in_source(platform, DAY) != before, "the traffic changed the day"
    run = check(platform, f"{REVENUE}:source_reconciliation", partition=DAY)
    evaluation = run.evaluation("source_reconciliation", REVENUE)
    assert run.success and evaluation.passed, evaluation.description
    assert evaluation.partition == DAY
    assert _meta(evaluation, "in_flux_orders") >= 4
    assert _meta(evaluation, "orders_difference") == 0


def test_reconciliation_fails_blocking_when_the_mart_disagrees(platform, built):
    platform.warehouse(
        "update marts.daily_revenue set order_count = order_count + 1, "
        "total_revenue = total_revenue + 10 where revenue_date = ?",
        [DAY],
    )
    try:
        run = check(platform, f"{REVENUE}:source_reconciliation", partition=DAY)
    finally:
        platform.warehouse(
            "update marts.daily_revenue set order_count = order_count - 1, "
            "total_revenue = total_revenue - 10 where revenue_date = ?",
            [DAY],
        )
    evaluation = run.evaluation("source_reconciliation", REVENUE)
    assert not evaluation.passed and evaluation.severity.value == "ERROR"
    assert _meta(evaluation, "orders_difference") == 1
    assert _meta(evaluation, "revenue_difference") == 10.0
    assert f"{DAY} does not reconcile" in evaluation.description
    assert not run.success
    message = run.step_failures()["source_reconciliation"]
    assert f"{REVENUE} source_reconciliation [{DAY}]: ERROR: {DAY} does not reconcile" in message


def test_reconciliation_after_an_ingest_without_rebuild_only_warns(platform, built):
    """Raw took the day's new changes but the partition was not rebuilt: stale, not wrong."""
    ingest = run_graph(platform.defs, platform.instance, "group:raw")
    assert ingest.success, ingest.step_failures()
    run = check(platform, f"{REVENUE}:source_reconciliation", partition=DAY)
    evaluation = run.evaluation("source_reconciliation", REVENUE)
    assert run.success
    assert not evaluation.passed and evaluation.severity.value == "WARN"
    assert "rebuild the partition" in evaluation.description
    assert _meta(evaluation, "stale") is True


def test_a_partition_rebuilt_from_an_older_fct_orders_is_stale_not_wrong(platform, built):
    """fct_orders refreshes on its own cadence: a daily partition rebuilt after an ingest, before
    fct_orders took the ingest, holds fct_orders' older data. A WARN (rebuild), not an ERROR."""
    platform.source(
        "update orders set status = 'refunded', updated_at = now() where id = (select min(id) "
        "from orders where status = 'completed' and deleted_at is null "
        "and (created_at at time zone 'UTC')::date = %s)",
        (DAY,),
    )
    ingest = run_graph(platform.defs, platform.instance, "group:raw")
    assert ingest.success, ingest.step_failures()
    rebuilt = run_graph(platform.defs, platform.instance, f'key:"{REVENUE}"', partition=DAY)
    evaluation = rebuilt.evaluation("source_reconciliation", REVENUE)
    assert rebuilt.success, rebuilt.step_failures()
    assert not evaluation.passed and evaluation.severity.value == "WARN", evaluation.description
    assert _meta(evaluation, "stale") is True


# -- volume ----------------------------------------------------------------------------------------


def test_volume_anomaly_warns_beyond_the_band_and_does_not_block(platform, built):
    platform.warehouse(
        "update marts.daily_revenue set order_count = order_count * 3, "
        "total_revenue = total_revenue * 3 where revenue_date = ?",
        [DAY],
    )
    try:
        run = check(platform, f"{REVENUE}:volume_anomaly", partition=DAY)
    finally:
        platform.warehouse(
            "update marts.daily_revenue set order_count = order_count / 3, "
            "total_revenue = total_revenue / 3 where revenue_date = ?",
            [DAY],
        )
    evaluation = run.evaluation("volume_anomaly", REVENUE)
    assert run.success
    assert not evaluation.passed and evaluation.severity.value == "WARN"
    assert "order count" in evaluation.description and "above the 7-day median" in (
        evaluation.description
    )
    assert _meta(evaluation, "order_count_deviation") > 0.5


def test_volume_band_is_configurable(platform, built, quality_env):
    quality_env(QUALITY_VOLUME_BAND="0.0001")
    evaluation = check(platform, f"{REVENUE}:volume_anomaly", partition=DAY).evaluation(
        "volume_anomaly", REVENUE
    )
    assert not evaluation.passed and evaluation.severity.value == "WARN"
    assert _meta(evaluation, "band") == 0.0001


# -- schema drift ----------------------------------------------------------------------------------


def test_new_source_column_warns_naming_it(platform, built):
    platform.source("alter table users add column nickname text")
    try:
        run = check(platform, "raw/users:schema_drift")
    finally:
        platform.source("alter table users drop column nickname")
    evaluation = run.evaluation("schema_drift", "raw/users")
    assert run.success
    assert not evaluation.passed and evaluation.severity.value == "WARN"
    assert "new source column users.nickname (text)" in evaluation.description
    assert _meta(evaluation, "added") == ["nickname"]


def test_dropped_source_column_is_a_blocking_error(platform, built):
    platform.source("alter table products drop column category")
    try:
        run = check(platform, "raw/products:schema_drift")
    finally:
        platform.source("alter table products add column category text")
    evaluation = run.evaluation("schema_drift", "raw/products")
    assert not evaluation.passed and evaluation.severity.value == "ERROR"
    assert "products.category (VARCHAR in raw) was dropped" in evaluation.description
    assert not run.success
    assert "raw/products schema_drift" in run.step_failures()["schema_drift"]


def test_retyped_source_column_is_an_error(platform, built):
    platform.source("alter table products alter column price type numeric(14, 4)")
    try:
        run = check(platform, "raw/products:schema_drift")
    finally:
        platform.source("alter table products alter column price type numeric(12, 2)")
    evaluation = run.evaluation("schema_drift", "raw/products")
    assert not evaluation.passed and evaluation.severity.value == "ERROR"
    assert _meta(evaluation, "retyped") == [
        {
            "column": "price",
            "source": "numeric(14,4)",
            "expected": "DECIMAL(14,4)",
            "raw": "DECIMAL(12,2)",
        }
    ]


# -- slot health -----------------------------------------------------------------------------------


def test_stale_heartbeat_warns(platform, built, quality_env):
    quality_env(QUALITY_SLOT_HEARTBEAT_WARN_MINUTES="0")
    run = check(platform, "raw/orders:slot_health")
    evaluation = run.evaluation("slot_health", "raw/orders")
    assert run.success
    assert not evaluation.passed and evaluation.severity.value == "WARN"
    assert "CDC last read the slot for orders" in evaluation.description


def test_error_on_raw_stops_the_models_in_the_same_run(platform, built, quality_env):
    """Slot health over its WAL budget (thresholds at 0) and a retyped column: both ERROR on raw,
    so neither dbt op starts, and the run failure names every check and why."""
    quality_env(QUALITY_SLOT_WAL_WARN_FRACTION="0", QUALITY_SLOT_WAL_ERROR_FRACTION="0")
    platform.source("alter table products alter column price type numeric(14, 4)")
    before = platform.daily_revenue()
    try:
        run = run_graph(platform.defs, platform.instance, EVERYTHING, partition=DAY)
    finally:
        platform.source("alter table products alter column price type numeric(12, 2)")
    assert not run.success
    assert "cdc_ingest" in run.started_steps()
    assert not {"dbt_models", "dbt_daily_marts"} & run.started_steps()
    assert platform.daily_revenue() == before
    assert (
        "raw/products schema_drift: ERROR: column products.price changed type"
        in (run.step_failures()["schema_drift"])
    )
    slot_message = run.step_failures()["slot_health"]
    for table in RAW_TABLES:
        assert f"raw/{table} slot_health: ERROR: slot " in slot_message
    assert "of max_slot_wal_keep_size (error from 0%)" in slot_message


def test_dropped_slot_is_an_error_and_the_cli_exits_non_zero(platform, built, tmp_path):
    """Checks run alone from the command line: a passing one and, with the slot gone, the slot
    health of every raw table."""
    platform.source("select pg_drop_replication_slot(%s)", (platform.settings.cdc.slot,))
    proc = subprocess.run(
        [
            str(Path(sys.executable).parent / "analytics-assets"),
            "check",
            "run",
            "raw/orders:schema_drift",
            "slot_health",
        ],
        env={**os.environ, "DAGSTER_HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr[-2000:]
    assert "PASS  raw/orders:schema_drift: raw.orders has the source's columns" in proc.stdout
    for table in RAW_TABLES:
        assert f"ERROR raw/{table}:slot_health: ERROR: replication slot " in proc.stdout
    assert "does not exist" in proc.stdout
