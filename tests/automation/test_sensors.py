"""Sensors and the backstop schedule, ticked with real lag from the embedded source."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import time
from zoneinfo import ZoneInfo

import dagster as dg
import psycopg2
import pytest

from analytics_assets import settings
from analytics_assets.defs.automation import logic
from analytics_assets.defs.automation.sensors import (
    cdc_lag_sensor,
    daily_marts_backstop,
    late_data_sensor,
)
from analytics_assets.dev.traffic import generate_history
from analytics_assets.lib.feeds.base import TableLag
from analytics_assets.lib.partitions import daily_partitions

END = dt.datetime(2026, 3, 10, tzinfo=dt.UTC)
RAW = ["users", "products", "orders", "order_items"]
# the daily marts and their restatement log: every asset tagged daily
DAILY = ["daily_revenue", "daily_product_sales", "daily_customer_mix", "daily_mart_reports"]


@pytest.fixture
def platform(platform_env, monkeypatch, request):
    """The platform on history up to END; PARTITION_TIMEZONE is UTC unless the test passes a
    zone (`@pytest.mark.parametrize("platform", [zone], indirect=True)`)."""
    monkeypatch.setenv("PARTITION_TIMEZONE", getattr(request, "param", "UTC"))
    monkeypatch.setenv("CDC_LAG_MAX_PENDING", "20")
    monkeypatch.setenv("CDC_LAG_MAX_SECONDS", "3600")
    monkeypatch.setenv("CDC_MAX_IDLE_MINUTES", "600")
    settings.get_settings.cache_clear()
    daily_partitions.cache_clear()
    conn = psycopg2.connect(platform_env.source.url)
    generate_history(conn, days=6, orders_per_day=20, seed=4, end=END)
    conn.close()
    from analytics_assets.definitions import build_definitions

    defs = build_definitions()
    with dg.instance_for_test() as instance:
        yield defs, instance, platform_env
    daily_partitions.cache_clear()


def _ingest(defs, instance):
    cdc = defs.get_assets_def(dg.AssetKey(["raw", "orders"]))
    assert dg.materialize([cdc], instance=instance).success


def _tick(sensor, defs, instance, cursor=None):
    context = dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs)
    return sensor.evaluate_tick(context)


def _built(instance, marts, days) -> None:
    """Record the marts' partitions of `days` as built."""
    for name in marts:
        for day in days:
            instance.report_runless_asset_event(
                dg.AssetMaterialization(asset_key=["marts", name], partition=day)
            )


def _sql(url, statement, params=None):
    conn = psycopg2.connect(url)
    with conn.cursor() as cur:
        cur.execute(statement, params)
    conn.commit()
    conn.close()


def _observed(result, group: str) -> dict[str, dict]:
    return {
        e.asset_key.path[1]: e.metadata for e in result.asset_events if e.asset_key.path[0] == group
    }


def _requested_raw_tables(result) -> set[str]:
    (request,) = result.run_requests
    return {
        k.path[1] for k in request.asset_selection if k.path[0] == "raw" and "_" not in k.path[1]
    } | {k.path[1] for k in request.asset_selection if k.path[:2] == ["raw", "order_items"]}


def test_no_lag_means_no_run_and_lag_is_recorded_on_each_raw_table(platform):
    defs, instance, _ = platform
    _ingest(defs, instance)
    result = _tick(cdc_lag_sensor, defs, instance)
    assert result.run_requests == []
    assert "no table lags" in result.skip_message
    observed = _observed(result, "raw")
    assert set(observed) == set(RAW)
    assert observed["orders"]["lag_pending_changes"].value == 0


def _source_now(url, table) -> tuple[int, dt.datetime]:
    conn = psycopg2.connect(url)
    with conn.cursor() as cur:
        cur.execute(f"select count(*), max(updated_at) from {table}")  # noqa: S608 - fixed names
        row = cur.fetchone()
    conn.close()
    return row


def _writers_gone(url) -> None:
    """A backend hands its table statistics over as it exits, before it leaves
    pg_stat_activity: once no other client backend is listed, the row estimates are complete."""
    conn = psycopg2.connect(url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            for _ in range(600):
                cur.execute(
                    "select count(*) from pg_stat_activity where datname = current_database() "
                    "and pid <> pg_backend_pid() and backend_type = 'client backend'"
                )
                if cur.fetchone()[0] == 0:
                    return
                time.sleep(0.05)
    finally:
        conn.close()
    raise AssertionError("another client stayed connected to the source")


def test_every_tick_observes_each_source_table_rows_newest_change_and_lag(platform):
    defs, instance, env = platform
    _ingest(defs, instance)
    _sql(env.source.url, "update orders set status = 'paid', updated_at = now() where id = 1")
    _writers_gone(env.source.url)
    result = _tick(cdc_lag_sensor, defs, instance)
    observed = _observed(result, "app_db")
    assert set(observed) == set(RAW)
    for table in RAW:
        rows, newest = _source_now(env.source.url, table)
        meta = observed[table]
        assert meta["row_count_estimate"].value == rows, table
        assert meta["newest_change"].value == newest.timestamp(), table
        assert meta["newest_change_age_seconds"].value >= 0
    assert observed["orders"]["lag_pending_changes"].value == 1
    assert observed["users"]["lag_pending_changes"].value == 0
    # stored on the instance as the UI reads them: one observation per table per tick
    for event in result.asset_events:
        instance.report_runless_asset_event(event)
    latest = instance.fetch_observations(dg.AssetKey(["app_db", "orders"]), limit=1).records
    assert latest and latest[0].asset_observation.metadata["lag_pending_changes"].value == 1


def test_an_ingest_observes_the_source_tables_it_applied(platform):
    defs, instance, env = platform
    _writers_gone(env.source.url)
    _ingest(defs, instance)
    records = instance.fetch_observations(dg.AssetKey(["app_db", "orders"]), limit=5).records
    assert len(records) == 1
    meta = records[0].asset_observation.metadata
    assert meta["lag_pending_changes"].value == 0
    assert meta["row_count_estimate"].value == _source_now(env.source.url, "orders")[0]


def _slot_confirmed_lsn(env) -> str:
    conn = psycopg2.connect(env.source.url)
    with conn.cursor() as cur:
        cur.execute(
            "select confirmed_flush_lsn::text from pg_replication_slots where slot_name = %s",
            (env.cdc.slot,),
        )
        (lsn,) = cur.fetchone()
    conn.close()
    return lsn


def _lsn(text: str) -> int:
    high, low = text.split("/")
    return (int(high, 16) << 32) + int(low, 16)


def test_lag_above_threshold_ingests_every_captured_table(platform):
    defs, instance, env = platform
    _ingest(defs, instance)
    _sql(env.source.url, "update users set full_name = full_name || '!'")  # 20 users: at threshold
    _sql(env.source.url, "update products set name = name where id = 1")  # 1 change: below
    result = _tick(cdc_lag_sensor, defs, instance)
    (request,) = result.run_requests
    raw = sorted(k.to_user_string() for k in request.asset_selection if k.path[0] == "raw")
    assert raw == sorted(f"raw/{t}{s}" for t in RAW for s in ("", "_changes")), (
        "every captured table, lagging or not: one left out would hold the slot back"
    )
    assert request.tags["analytics/ingest"] == "true"
    assert request.tags["analytics/lagging"] == "users"
    models = sorted(k.to_user_string() for k in request.asset_selection if k.path[0] != "raw")
    assert models == ["marts/revenue_minutely", "staging/stg_app__orders"], (
        "the fast path: revenue_minutely and its upstream models, nothing else"
    )
    assert request.tags["analytics/fast_path"] == "true"
    observed = _observed(result, "raw")
    assert observed["users"]["lag_pending_changes"].value == 20
    assert observed["products"]["lag_pending_changes"].value == 1

    again = _tick(cdc_lag_sensor, defs, instance, cursor=result.cursor)
    assert [r.run_key for r in again.run_requests] == [request.run_key], (
        "the same pending state gives the same run key, so the daemon starts no second run"
    )
    assert len(json.loads(result.cursor)) <= 2, "the cursor stays small"


def test_a_sensor_requested_ingest_advances_the_slot_for_every_table(platform):
    """Regression: the sensor used to ingest only the lagging tables; the slot is acknowledged up
    to the smallest checkpoint over all tables, so the others held it back and the changes of the
    lagging ones stayed pending (re-read by every ingest, WAL growing)."""
    defs, instance, env = platform
    _ingest(defs, instance)
    _sql(env.source.url, "update orders set updated_at = now() where id <= 25")  # lags
    _sql(env.source.url, "update products set name = name where id = 1")  # does not
    before = _slot_confirmed_lsn(env)
    request = _tick(cdc_lag_sensor, defs, instance).run_requests[0]
    assert request.tags["analytics/lagging"] == "orders"
    raw = [k for k in request.asset_selection if k.path[0] == "raw"]
    cdc = defs.get_assets_def(dg.AssetKey(["raw", "orders"]))
    assert dg.materialize([cdc], instance=instance, selection=raw).success

    assert _lsn(_slot_confirmed_lsn(env)) > _lsn(before), "the slot's confirmed position moved"
    after = _tick(cdc_lag_sensor, defs, instance)
    observed = _observed(after, "raw")
    assert {t: observed[t]["lag_pending_changes"].value for t in RAW} == dict.fromkeys(RAW, 0)
    assert after.run_requests == []
    products = instance.get_latest_materialization_event(dg.AssetKey(["raw", "products"]))
    assert products.asset_materialization.metadata["changes"].value == 1


def _small_window_and_wal_noise(platform, monkeypatch) -> str:
    """An 8 KiB lag window, the tables ingested, then WAL of a table CDC does not capture
    (hundreds of KiB, past the window); returns the statement that writes more of it."""
    defs, instance, env = platform
    monkeypatch.setenv("CDC_LAG_MAX_BYTES", "8192")
    settings.get_settings.cache_clear()
    _ingest(defs, instance)
    noise = "insert into wal_noise select g, repeat('x', 200) from generate_series(1, 2000) g"
    _sql(env.source.url, "create table wal_noise (id int, pad text)")
    _sql(env.source.url, noise)
    return noise


def test_a_backlog_past_the_lag_window_is_asked_again_after_each_ingest(platform, monkeypatch):
    """Regression (the freshness bench): on the dev stack Dagster's own storage writes WAL in the
    source's cluster, so the window often holds none of the captured tables' changes. Such a
    reading looked the same after every ingest (0 pending in the window), got the key of the run
    that had just completed, and no ingest ran for up to a minute while traffic piled up."""
    defs, instance, env = platform
    noise = _small_window_and_wal_noise(platform, monkeypatch)
    first = _tick(cdc_lag_sensor, defs, instance)
    (request,) = first.run_requests
    assert _observed(first, "raw")["orders"]["lag_pending_changes"].value == 0  # in the window
    _ingest(defs, instance)
    _sql(env.source.url, noise)
    (again,) = _tick(cdc_lag_sensor, defs, instance).run_requests
    assert again.run_key != request.run_key, "a new reading: the ingest moved the slot"


def test_wal_of_other_tables_alone_starts_no_ingest_but_a_change_past_the_window_does(
    platform, monkeypatch
):
    """On the dev stack Dagster's storage shares the source's server, so WAL piles up behind the
    slot with no change of a captured table in it: every table read as lagging by bytes and an
    idle stack started a no-op ingest (and fast-path dbt build) every ~30 s. Now a table whose
    write counters have not moved since the last ingest is not lagging for WAL alone; a change
    to it, even past the window, still starts one."""
    defs, instance, env = platform
    noise = _small_window_and_wal_noise(platform, monkeypatch)
    first = _tick(cdc_lag_sensor, defs, instance)
    (request,) = first.run_requests  # WAL behind, counters never recorded: ingest
    raw = {k for k in request.asset_selection if k.path[0] == "raw"}
    job = defs.get_implicit_global_asset_job_def().get_subset(asset_selection=raw)
    assert job.execute_in_process(instance=instance, tags=request.tags).success

    _sql(env.source.url, noise)
    quiet = _tick(cdc_lag_sensor, defs, instance, cursor=first.cursor)
    assert quiet.run_requests == [], "only other tables' WAL behind the slot"
    assert "no table lags" in quiet.skip_message
    # and the UI reads them as up to date, not as an unknown lower bound
    observed = _observed(quiet, "raw")["orders"]
    assert observed["lag_seconds"].value == 0 and "lag_pending_changes_counted" not in observed

    _sql(env.source.url, noise)
    _sql(env.source.url, "update orders set updated_at = now() where id = 1")  # past the window
    changed = _tick(cdc_lag_sensor, defs, instance, cursor=quiet.cursor)
    assert _observed(changed, "raw")["orders"]["lag_pending_changes"].value == 0  # not seen
    assert "lag_seconds" not in _observed(changed, "raw")["orders"]  # how old: unknown
    (again,) = changed.run_requests
    assert "orders" in again.tags["analytics/lagging"].split(",")


def test_the_ingest_run_key_tells_readings_apart_by_where_they_start():
    now = dt.datetime(2026, 3, 2, 12, 0, 30, tzinfo=dt.UTC)
    window = 1 << 20

    def reading(start: str, pending: int = 0, sampled: bool = True):
        return {"orders": TableLag(pending, 2 * window, 0.0, None, sampled, start)}

    def key(lag, at=now, failed=None):
        return logic.ingest_run_key(
            lag, ["orders"], at, heartbeat=False, max_bytes=window, last_failed=failed
        )

    assert key(reading("0/1000")) == key(reading("0/1000")), "the same reading: no second run"
    assert key(reading("0/1000")) != key(reading("0/2000")), "an ingest moved the slot"
    later = now + dt.timedelta(minutes=1)
    assert key(reading("0/1000")) != key(reading("0/1000"), at=later), (
        "lagging by bytes, it is asked again each minute even if the slot cannot move"
    )
    exact = reading("0/1000", pending=30, sampled=False)
    exact["orders"] = dataclasses.replace(exact["orders"], position_lag_bytes=100)
    assert key(exact) == key(exact, at=later), "an exact count is its own key"
    assert key(exact) != key(exact, failed="run-1"), "after a failed ingest: asked again"


def test_an_ingest_run_in_flight_holds_back_the_next_request(platform):
    defs, instance, env = platform
    _ingest(defs, instance)
    _sql(env.source.url, "update users set full_name = full_name || '?'")
    instance.add_run(
        dg.DagsterRun(
            job_name="__ASSET_JOB",
            run_id="in-flight-run",
            tags={"analytics/ingest": "true"},
            status=dg.DagsterRunStatus.STARTED,
        )
    )
    result = _tick(cdc_lag_sensor, defs, instance)
    assert result.run_requests == []
    assert "in-flight-run" in result.skip_message


def test_late_change_requests_exactly_the_touched_built_partitions(platform):
    defs, instance, env = platform
    _ingest(defs, instance)
    _built(instance, DAILY, ("2026-03-05", "2026-03-06", "2026-03-07", "2026-03-08"))
    tick = _tick(late_data_sensor, defs, instance)
    assert tick.run_requests == []
    # An order created on 03-05 and one on 03-07 are completed late; one on 03-04 (never built).
    for day in ("2026-03-05", "2026-03-07", "2026-03-04"):
        _sql(
            env.source.url,
            "update orders set status = 'refunded', updated_at = now() where id = ("
            "select min(id) from orders where (created_at at time zone 'UTC')::date = %s)",
            (day,),
        )
    _ingest(defs, instance)
    waiting = _tick(late_data_sensor, defs, instance, cursor=tick.cursor)
    assert waiting.run_requests == [] and "waiting for fct_orders" in waiting.skip_message
    instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=["marts", "fct_orders"]))
    result = _tick(late_data_sensor, defs, instance, cursor=waiting.cursor)
    ranges = sorted(
        (r.tags["dagster/asset_partition_range_start"], r.tags["dagster/asset_partition_range_end"])
        for r in result.run_requests
    )
    assert ranges == [("2026-03-05", "2026-03-05"), ("2026-03-07", "2026-03-07")]
    for request in result.run_requests:
        assert {k.path[1] for k in request.asset_selection} == set(DAILY)
    quiet = _tick(late_data_sensor, defs, instance, cursor=result.cursor)
    assert quiet.run_requests == []


@pytest.mark.parametrize("platform", ["America/New_York"], indirect=True)
def test_late_change_near_midnight_reruns_the_partition_of_its_local_date(platform):
    defs, instance, env = platform
    # 23:30 on 03-07 in New York is 04:30 UTC on 03-08: the order is New York's 03-07
    placed = dt.datetime(2026, 3, 7, 23, 30, tzinfo=ZoneInfo("America/New_York"))
    _sql(
        env.source.url,
        "insert into orders (user_id, total, status, created_at, updated_at) "
        "select min(id), 10, 'completed', %s, %s from users",
        (placed, placed),
    )
    _ingest(defs, instance)
    _built(instance, DAILY, ("2026-03-06", "2026-03-07", "2026-03-08", "2026-03-09"))
    tick = _tick(late_data_sensor, defs, instance)
    _sql(
        env.source.url,
        "update orders set status = 'refunded', updated_at = now() where created_at = %s",
        (placed,),
    )
    _ingest(defs, instance)
    raw = instance.get_latest_materialization_event(dg.AssetKey(["raw", "orders"]))
    assert raw.asset_materialization.metadata["business_dates"].value == ["2026-03-07"]
    instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=["marts", "fct_orders"]))
    result = _tick(late_data_sensor, defs, instance, cursor=tick.cursor)
    ranges = [
        (r.tags["dagster/asset_partition_range_start"], r.tags["dagster/asset_partition_range_end"])
        for r in result.run_requests
    ]
    assert ranges == [("2026-03-07", "2026-03-07")]


def test_late_changes_already_in_fct_orders_do_not_wait_for_newer_ones(platform):
    """Ingests go on while fct_orders is rebuilt: dates whose changes the last fct_orders build
    includes are rerun; a date touched after that build waits for the next."""
    defs, instance, env = platform
    _ingest(defs, instance)
    for day in ("2026-03-05", "2026-03-07"):
        instance.report_runless_asset_event(
            dg.AssetMaterialization(asset_key=["marts", "daily_revenue"], partition=day)
        )
    tick = _tick(late_data_sensor, defs, instance)
    late = (
        "update orders set status = 'refunded', updated_at = now() where id = ("
        "select min(id) from orders where (created_at at time zone 'UTC')::date = %s)"
    )
    _sql(env.source.url, late, ("2026-03-05",))
    _ingest(defs, instance)
    instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=["marts", "fct_orders"]))
    _sql(env.source.url, late, ("2026-03-07",))
    _ingest(defs, instance)  # after the fct_orders build: not in it yet
    result = _tick(late_data_sensor, defs, instance, cursor=tick.cursor)
    (request,) = result.run_requests
    assert request.tags["dagster/asset_partition_range_start"] == "2026-03-05"
    assert request.tags["dagster/asset_partition_range_end"] == "2026-03-05"
    waiting = _tick(late_data_sensor, defs, instance, cursor=result.cursor)
    assert waiting.run_requests == [] and "2026-03-07" in waiting.skip_message
    instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=["marts", "fct_orders"]))
    done = _tick(late_data_sensor, defs, instance, cursor=waiting.cursor)
    assert [r.tags["dagster/asset_partition_range_start"] for r in done.run_requests] == [
        "2026-03-07"
    ]


def _backstop(defs, instance, at: dt.datetime):
    context = dg.build_schedule_context(
        instance=instance, scheduled_execution_time=at, repository_def=defs.get_repository_def()
    )
    return daily_marts_backstop().evaluate_tick(context)


def test_backstop_skips_a_partition_that_is_not_closed_and_says_why(platform):
    defs, instance, env = platform
    _ingest(defs, instance)
    _sql(env.source.url, "update orders set updated_at = now() where id = 1")
    # The pending change committed now holds the watermark back; a tick two days after it asks
    # for a day that ends after that commit, whatever the time of day.
    result = _backstop(defs, instance, dt.datetime.now(dt.UTC) + dt.timedelta(days=2))
    assert result.run_requests in (None, [])
    assert "not closed" in result.skip_message and "watermark" in result.skip_message


@pytest.mark.parametrize("platform", ["Asia/Seoul"], indirect=True)
def test_backstop_runs_at_one_in_the_partition_timezone_and_builds_its_yesterday(platform):
    defs, instance, env = platform
    _ingest(defs, instance)  # caught up: the watermark is the tick time
    schedule = daily_marts_backstop()
    assert (schedule.cron_schedule, schedule.execution_timezone) == ("0 1 * * *", "Asia/Seoul")
    seoul = ZoneInfo("Asia/Seoul")
    # 01:00 on 03-11 in Seoul is 16:00 UTC on 03-10: Seoul's yesterday is 03-10, UTC's 03-09
    (request,) = _backstop(defs, instance, dt.datetime(2026, 3, 11, 1, tzinfo=seoul)).run_requests
    assert request.partition_key == "2026-03-10"
    # 00:20 in Seoul: the day has ended, the 30 minutes' grace have not
    early = _backstop(defs, instance, dt.datetime(2026, 3, 11, 0, 20, tzinfo=seoul))
    assert early.run_requests in (None, [])
    assert "partition 2026-03-10 not closed" in early.skip_message
    assert "2026-03-11 00:30 KST" in early.skip_message


def test_partition_closes_only_after_end_plus_grace():
    lag = {"orders": TableLag(0, 0, 0.0, None)}
    end = dt.datetime(2026, 3, 2, tzinfo=dt.UTC)
    closed, _ = logic.partition_closed(
        "2026-03-01",
        logic.watermark_from_lag(lag, end + dt.timedelta(minutes=29)),
        grace_minutes=30,
        timezone="UTC",
    )
    assert not closed
    closed, why = logic.partition_closed(
        "2026-03-01",
        logic.watermark_from_lag(lag, end + dt.timedelta(minutes=31)),
        grace_minutes=30,
        timezone="UTC",
    )
    assert closed and "closed" in why


def test_watermark_stops_at_the_oldest_unapplied_commit():
    now = dt.datetime(2026, 3, 2, 12, tzinfo=dt.UTC)
    old = now - dt.timedelta(hours=3)
    lag = {"orders": TableLag(5, 100, 10800.0, old), "users": TableLag(0, 0, 0.0, None)}
    assert logic.watermark_from_lag(lag, now) < old
    assert logic.watermark_from_lag({"x": TableLag(None, None, 0.0, None)}, now) is None


def test_contiguous_dates_become_single_ranges():
    keys = ["2026-03-07", "2026-03-05", "2026-03-06", "2026-03-09", "2026-03-06"]
    assert logic.contiguous_ranges(keys) == [
        ("2026-03-05", "2026-03-07"),
        ("2026-03-09", "2026-03-09"),
    ]


def test_the_next_ingest_is_requested_once_the_running_one_has_applied_its_changes():
    for status in ("QUEUED", "NOT_STARTED", "STARTING", "STARTED"):
        assert logic.ingest_holds_back_the_next(status, ingest_step_done=False), status
    assert not logic.ingest_holds_back_the_next("STARTED", ingest_step_done=True), (
        "its dbt step is running: what is pending now waits for a run of its own, queued"
    )
    assert logic.ingest_holds_back_the_next("CANCELING", ingest_step_done=True)


def test_a_close_run_builds_the_unpartitioned_models_then_the_day_in_one_run(platform):
    """In a new warehouse only the raw tables exist (the lag-driven runs build the fast path;
    the other models come on their cadence): the run that closes a day builds them first, so
    the marts read a current fct_orders and their tests find every view they read."""
    defs, instance, _ = platform
    _ingest(defs, instance)
    (request,) = _backstop(defs, instance, dt.datetime(2026, 3, 11, 1, tzinfo=dt.UTC)).run_requests
    selected = {k.to_user_string() for k in request.asset_selection}
    assert {"marts/fct_orders", "staging/stg_app__products", "marts/daily_revenue"} <= selected
    job = defs.get_implicit_global_asset_job_def().get_subset(
        asset_selection=set(request.asset_selection)
    )
    result = job.execute_in_process(
        instance=instance, partition_key=request.partition_key, raise_on_error=False
    )
    assert result.success
    assert instance.get_materialized_partitions(dg.AssetKey(["marts", "daily_revenue"])) == {
        "2026-03-10"
    }


def test_a_lag_driven_run_gates_the_models_on_the_blocking_checks_only(platform):
    """The run the lag sensor requests, executed as the daemon would (its selection, its tags):
    the blocking raw checks (schema_drift, slot_health) run before the models, the non-blocking
    dead_letters after them, so revenue_minutely does not wait for it."""
    defs, instance, env = platform
    _ingest(defs, instance)
    _sql(env.source.url, "update orders set updated_at = now() where id <= 25")
    (request,) = _tick(cdc_lag_sensor, defs, instance).run_requests
    job = defs.get_implicit_global_asset_job_def().get_subset(
        asset_selection=set(request.asset_selection)
    )
    result = job.execute_in_process(instance=instance, tags=request.tags, raise_on_error=False)
    assert result.success
    started = [
        e.step_key for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_START
    ]
    assert started.index("dbt_models") > max(
        started.index("schema_drift"), started.index("slot_health")
    )
    assert started.index("dead_letters") > started.index("dbt_models"), started
