"""`cdc_lag_sensor` at a backlog far larger than what one lag reading decodes
(CDC_LAG_MAX_BYTES): it still starts the ingest, and says its counts are lower bounds."""

from __future__ import annotations

import dagster as dg
import psycopg2
import pytest

from analytics_assets import settings
from analytics_assets.defs.automation.sensors import cdc_lag_sensor
from analytics_assets.lib.feeds.base import PENDING_SAMPLED_LABEL

WINDOW = 32 << 10


@pytest.fixture
def platform(platform_env, monkeypatch):
    # count and time thresholds the backlog does not reach: only the bytes behind can decide
    monkeypatch.setenv("CDC_LAG_MAX_PENDING", "1000000")
    monkeypatch.setenv("CDC_LAG_MAX_SECONDS", "86400")
    monkeypatch.setenv("CDC_LAG_MAX_BYTES", str(WINDOW))
    monkeypatch.setenv("CDC_MAX_IDLE_MINUTES", "600")
    settings.get_settings.cache_clear()
    from analytics_assets.definitions import build_definitions

    defs = build_definitions()
    with dg.instance_for_test() as instance:
        yield defs, instance, platform_env
    settings.get_settings.cache_clear()


def _tick(defs, instance):
    context = dg.build_sensor_context(instance=instance, definitions=defs)
    return cdc_lag_sensor.evaluate_tick(context)


def test_a_backlog_beyond_the_lag_window_starts_an_ingest_and_is_labelled_sampled(platform):
    defs, instance, env = platform
    cdc = defs.get_assets_def(dg.AssetKey(["raw", "orders"]))
    assert dg.materialize([cdc], instance=instance).success
    quiet = _tick(defs, instance)
    assert quiet.run_requests == [] and "no table lags" in quiet.skip_message

    conn = psycopg2.connect(env.source.url)
    with conn.cursor() as cur:  # one transaction of ~15 x the window: no commit inside it
        cur.execute(
            "insert into users (email, full_name) select 'u' || g || '@example.com', "
            "repeat('n', 40) from generate_series(1, 3000) g"
        )
    conn.commit()
    conn.close()

    result = _tick(defs, instance)
    (request,) = result.run_requests
    assert request.tags["analytics/lagging"].split(",") == sorted(
        settings.get_settings().source.tables
    )
    observed = {e.asset_key.path[1]: e.metadata for e in result.asset_events}
    users = observed["users"]
    assert users["lag_position_bytes"].value >= 10 * WINDOW
    assert users["lag_pending_changes"].value == 0  # the window holds no whole transaction
    assert users["lag_pending_changes_counted"].value == PENDING_SAMPLED_LABEL
