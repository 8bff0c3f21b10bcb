"""The raw CDC asset in a real Dagster run while the source is down: the step fails with the one
clear line, Dagster's retry policy runs it again once the source is back, and the run ends with
raw == source."""

from __future__ import annotations

import threading
import time

import dagster as dg
from graph_runs import platform_environment
from reliability_helpers import load_backlog, logged_changes

from analytics_assets.lib import stack


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
        outage = 3.0
        restarter = threading.Timer(outage, lambda: stack.up(quiet=True))
        restarter.start()
        t0 = time.monotonic()
        try:
            with dg.instance_for_test() as instance:
                result = dg.materialize([raw], instance=instance, raise_on_error=False)
        finally:
            restarter.join()
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
        f"\n[retry] source down {outage:.0f}s: {len(retries)} retry, run succeeded after "
        f"{seconds:.1f}s; first attempt: {error.message.strip()} (backlog {backlog})"
    )
