"""A killed ingest run never blocks the next one. A real `dagster-daemon` serves the project's
dev instance (dagster.yaml: run monitoring, LocalRunLauncher, the `cdc_ingest` pool and the
one-run queue) on the embedded Postgres; two run workers are SIGKILLed in the middle of an
ingest (CDC_PAUSE_AT parks them at a read batch, see tests/kill_helpers.py):

1. a `dagster asset materialize --select group:raw` process, the issue's reproduction: no code
   server watches it, so only run monitoring's health check (lib/run_launcher.py) can mark its
   run failed; until then it holds the run queue's one place and the `cdc_ingest` pool;
2. the run the lag sensor then starts, launched by the daemon into the code server.

Each dead run is marked failed, gives back the queue and the pool (no slot is left claimed),
and the lag sensor's next run ingests everything: raw equals the source. Bound: each step within BOUND_POLLS run monitoring poll
intervals (the daemon's clock, not a tight wall-clock limit; measured figures are printed)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import dagster as dg
import pytest
from cdc_helpers import CdcEnv
from dagster import DagsterEventType
from kill_helpers import PausePoint

from analytics_assets import settings
from analytics_assets.defs.automation.sensors import INGEST_TAG
from analytics_assets.defs.cdc.assets import INGEST_POOL
from analytics_assets.lib import cdc as cdc_lib
from analytics_assets.lib.warehouse.duckdb import DuckDBWarehouse
from analytics_assets.settings import PROJECT_ROOT

LAG_SENSOR = "cdc_lag_sensor"
BOUND_POLLS = 24  # run monitoring polls allowed per step (detection, freeing, next run)
BACKLOG_USERS = 3000


def _bin(name: str) -> str:
    return os.path.join(os.path.dirname(sys.executable), name)


def stop_automation(instance) -> object:
    """Stop every sensor and schedule of the code location; returns the lag sensor."""
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import WorkspaceFileTarget

    target = WorkspaceFileTarget([str(PROJECT_ROOT / "workspace.yaml")])
    with WorkspaceProcessContext(instance, target) as context:
        (location,) = context.create_request_context().code_locations
        (repo,) = location.get_repositories().values()
        for sensor in repo.get_sensors():
            instance.stop_sensor(sensor.get_remote_origin_id(), sensor.selector_id, sensor)
        for schedule in repo.get_schedules():
            instance.stop_schedule(schedule.get_remote_origin_id(), schedule.selector_id, schedule)
        return repo.get_sensor(LAG_SENSOR)


def ingest_runs(instance) -> list[dg.DagsterRun]:
    """Every run, oldest first (automation is stopped: all of them are ingests)."""
    return list(reversed(instance.get_runs()))


def wait_for(what: str, condition, timeout: float, daemon_log) -> float:
    """Poll `condition` until true; returns the seconds it took."""
    t0 = time.monotonic()
    while not condition():
        if time.monotonic() - t0 > timeout:
            tail = "\n".join(daemon_log.read_text(errors="replace").splitlines()[-40:])
            pytest.fail(f"{what}: not within {timeout:.0f}s; daemon log:\n{tail}")
        time.sleep(0.2)
    return time.monotonic() - t0


def status(instance, run_id: str) -> dg.DagsterRunStatus:
    return instance.get_run_by_id(run_id).status


def test_a_killed_ingest_run_never_blocks_the_next(dagster_instance, platform_env, tmp_path):
    instance = dagster_instance
    cfg = settings.get_settings()
    poll = instance.run_monitoring_settings["poll_interval_seconds"]
    bound = BOUND_POLLS * poll
    lag_sensor = stop_automation(instance)
    env = CdcEnv(cfg.source.url, cfg.source.url.rsplit("/", 1)[1], tmp_path)
    feed, warehouse = cdc_lib.make_feed(cfg), cdc_lib.make_warehouse(cfg)
    try:
        cdc_lib.ingest(feed=feed, warehouse=warehouse, measure_lag=False)  # slot + snapshot
    finally:
        warehouse.close()
        feed.close()
    env.execute(
        "insert into users (email, country) select 'u' || g || '@example.com', 'DE' "
        "from generate_series(1, %s) g",
        params=(BACKLOG_USERS,),
    )
    env.execute("update users set country = 'FR' where id % 3 = 0")

    # the daemon's run workers pause once at their first read batch, the CLI's too
    sensor_pause = PausePoint(tmp_path / "sensor-run", "decoded")
    cli_pause = PausePoint(tmp_path / "cli-run", "decoded")
    daemon_log = tmp_path / "daemon.log"
    with open(daemon_log, "w") as log:
        daemon = subprocess.Popen(
            [_bin("dagster-daemon"), "run", "-w", "workspace.yaml"],
            cwd=PROJECT_ROOT,
            env={**os.environ, "CDC_PAUSE_AT": sensor_pause.spec},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    cli = None
    try:
        # 1. `dagster asset materialize` killed mid-ingest: its run stays STARTED...
        cli = subprocess.Popen(
            [_bin("dagster"), "asset", "materialize", "-m", "analytics_assets.definitions"]
            + ["--select", "group:raw"],
            cwd=PROJECT_ROOT,
            env={**os.environ, "CDC_PAUSE_AT": cli_pause.spec},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.kill(cli_pause.wait(alive=lambda: cli.poll() is None), signal.SIGKILL)
        cli.wait(timeout=60)
        (cli_run,) = ingest_runs(instance)
        assert status(instance, cli_run.run_id) == dg.DagsterRunStatus.STARTED

        # ...until run monitoring finds its worker gone and fails it
        found_dead = wait_for(
            "the killed CLI run marked failed",
            lambda: status(instance, cli_run.run_id) == dg.DagsterRunStatus.FAILURE,
            bound,
            daemon_log,
        )

        # 2. the lag sensor's run, killed mid-ingest in its daemon-launched worker
        instance.start_sensor(lag_sensor)
        sensor_pid = sensor_pause.wait(alive=lambda: daemon.poll() is None)
        (sensor_run,) = ingest_runs(instance)[1:]
        assert sensor_run.tags.get(INGEST_TAG) == "true"
        os.kill(sensor_pid, signal.SIGKILL)
        t_kill = time.monotonic()
        wait_for(
            "the killed sensor run marked failed",
            lambda: status(instance, sensor_run.run_id) == dg.DagsterRunStatus.FAILURE,
            bound,
            daemon_log,
        )

        # 3. the lag sensor's next run starts, gets the pool slot and ingests everything (its
        # dbt models are not waited for: the daemon stops before the warehouse is compared)
        def next_run() -> dg.DagsterRun | None:
            later = ingest_runs(instance)[2:]
            return later[0] if later else None

        def ingested() -> bool:
            run = next_run()
            return run is not None and bool(
                instance.get_records_for_run(
                    run.run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION, limit=1
                ).records
            )

        wait_for("the next ingest run to ingest", ingested, bound, daemon_log)
        next_done = time.monotonic() - t_kill
        assert next_run().tags.get(INGEST_TAG) == "true"
        holders = instance.event_log_storage.get_concurrency_info(INGEST_POOL).claimed_slots
        assert {slot.run_id for slot in holders} <= {next_run().run_id}  # none of the dead's
    finally:
        if cli is not None and cli.poll() is None:
            cli.kill()
        # the daemon, its code server and the run worker still building models
        try:
            os.killpg(daemon.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        daemon.wait()
    # a dbt step the last run worker had started runs in the warm dbt server's child
    # (lib/dbt_warm.py), which the server ends once it sees the killed command gone: wait for
    # that child to let go of the warehouse file
    DuckDBWarehouse(env.tmp / f"{env.db}.duckdb", lock_timeout=bound).close()
    env.assert_raw_equals_source()
    env.assert_change_log_has_no_duplicates()
    print(
        f"\n[dead worker] poll {poll}s: CLI run failed {found_dead:.1f}s after the kill; "
        f"sensor run killed -> next run ingested in {next_done:.1f}s (bound {bound}s per step)"
    )
