"""The raw CDC asset in a real Dagster run while the source is down: the step fails with the one
clear line, Dagster's retry policy runs it again once the source is back, and the run ends with
raw == source. The source comes back only after the first attempt has failed (the run's own
event says so), so the outage is never missed on a slow machine."""

from __future__ import annotations

import random
import threading
import time

import dagster as dg
import pytest
from graph_runs import platform_environment
from reliability_helpers import load_backlog, logged_changes

from analytics_assets import settings
from analytics_assets.dev import stack


@pytest.fixture
def own_stack(own_server_dir, monkeypatch):
    """conftest's own server, on a port no other embedded server takes while this one is down:
    they take the lowest free port from stack.DEFAULT_PORT, and the kernel hands out ports from
    32768 up to clients, so one from 20000-32767 stays ours (another server answering on it
    would make the outage a wrong database instead)."""
    ports = random.Random().sample(range(20000, 32768), 200)
    port = next(p for p in ports if stack._port_free(p))
    monkeypatch.setenv("ANALYTICS_DATA_DIR", str(own_server_dir / "data"))
    monkeypatch.setenv("ANALYTICS_PG_PORT", str(port))
    settings.get_settings.cache_clear()
    info = stack.up(quiet=True)
    yield info
    stack.down(quiet=True)
    settings.get_settings.cache_clear()


class SourceRestart(threading.Thread):
    """Brings the source back once the run has recorded its first failed attempt (the step is
    up for retry): the outage is certain to be seen, however slowly the run starts."""

    def __init__(self, instance: dg.DagsterInstance):
        super().__init__(daemon=True)
        self.instance = instance
        self.finished = threading.Event()
        self.seconds = 0.0

    def _failed_once(self) -> bool:
        retry = dg.EventRecordsFilter(event_type=dg.DagsterEventType.STEP_UP_FOR_RETRY)
        return bool(self.instance.event_log_storage.get_event_records(retry, limit=1))

    def run(self) -> None:
        while not self.finished.wait(0.05):
            if self._failed_once():
                break
        t0 = time.monotonic()
        stack.up(quiet=True)  # also when the run ended without a retry: the fixture needs it
        self.seconds = time.monotonic() - t0

    def stop(self) -> None:
        self.finished.set()
        self.join()


def test_raw_asset_retries_through_a_source_outage(own_cdc, tmp_path):
    cdc = own_cdc
    backlog = load_backlog(cdc, 2000, batch_size=500)
    warehouse = cdc.tmp / f"{cdc.db}.duckdb"
    with platform_environment(cdc.url, tmp_path, WAREHOUSE_PATH=str(warehouse)):
        from analytics_assets.definitions import build_definitions

        defs = build_definitions()
        raw = defs.get_assets_def(dg.AssetKey(["raw", "users"]))
        # the asset's slot is its own: snapshot once, then leave a backlog behind it
        with dg.instance_for_test() as instance:
            assert dg.materialize([raw], instance=instance).success
        before = logged_changes(cdc)
        cdc.execute("update users set country = 'PL' where id % 3 = 0")
        stack.down(quiet=True)
        with dg.instance_for_test() as instance:
            restart = SourceRestart(instance)
            restart.start()
            t0 = time.monotonic()
            try:
                result = dg.materialize([raw], instance=instance, raise_on_error=False)
            finally:
                restart.stop()
            seconds = time.monotonic() - t0
    retries = [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert result.success
    assert retries, "the first attempt failed while the source was down"
    error = retries[0].event_specific_data.error
    while error.cause is not None:
        error = error.cause
    assert "cannot connect to the source" in error.message, error.message
    assert "\n" not in error.message.strip()
    cdc.assert_raw_equals_source()
    cdc.assert_change_log_has_no_duplicates()
    updated = len(cdc.query("select 1 from users where id % 3 = 0"))
    assert logged_changes(cdc) - before == updated  # each update applied once, after the retry
    print(
        f"\n[retry] source restarted in {restart.seconds:.1f}s after the first attempt failed: "
        f"{len(retries)} retry, run succeeded after {seconds:.1f}s; first attempt: "
        f"{error.message.strip()} (backlog {backlog})"
    )
