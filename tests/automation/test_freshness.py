"""Freshness: the project's own policies, evaluated by Dagster's own freshness daemon.

The code location is loaded the way `dagster dev` loads it (from analytics_assets/definitions.py,
in process) into a real instance; materializations are reported as they would be by runs, and
the daemon's iteration runs under Dagster's `freeze_time`, so every state it records is the one a
deployed daemon would record at that moment. Dagster 1.13's cron evaluator has only PASS and FAIL
(no WARN), so the daily mart goes pass → fail → pass, the raw table pass → warn → fail.
"""

from __future__ import annotations

import datetime as dt
import json
from zoneinfo import ZoneInfo

import dagster as dg
import pytest
from dagster._core.definitions.freshness import FreshnessState as State
from dagster._core.event_api import EventRecordsFilter
from dagster._core.events import DagsterEventType
from dagster._core.remote_origin import InProcessCodeLocationOrigin
from dagster._core.test_utils import freeze_time, instance_for_test
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget
from dagster._daemon.freshness import FreshnessDaemon

from analytics_assets import settings

# Imported here, at collection, not under a test's patched environment: importing the module
# builds its module-level `defs`, which other tests read.
from analytics_assets.definitions import build_definitions
from analytics_assets.defs.freshness import (
    apply_freshness,
    describe_policy,
    policy_from_dbt_meta,
    raw_table_policy,
)
from analytics_assets.defs.notify.sensors import notify_on_freshness_fail
from analytics_assets.lib.partitions import daily_partitions

RAW_ORDERS = dg.AssetKey(["raw", "orders"])
DAILY_REVENUE = dg.AssetKey(["marts", "daily_revenue"])
NEW_YORK = ZoneInfo("America/New_York")


def _clear_caches():
    settings.get_settings.cache_clear()
    daily_partitions.cache_clear()


@pytest.fixture(autouse=True)
def _settings_read_again_after_each_test():
    """Tests here set FRESHNESS_* variables; the settings they cached must not outlive them."""
    yield
    _clear_caches()


class Platform:
    """The code location loaded into a workspace over a real instance, and a frozen clock."""

    def __init__(self, instance: dg.DagsterInstance, workspace: WorkspaceProcessContext):
        self.instance = instance
        self.workspace = workspace

    def materialize(self, key: dg.AssetKey, at: dt.datetime, partition: str | None = None):
        with freeze_time(at):
            self.instance.report_runless_asset_event(
                dg.AssetMaterialization(asset_key=key, partition=partition)
            )

    def evaluate(self, at: dt.datetime) -> None:
        """One iteration of the freshness daemon at `at`."""
        with freeze_time(at):
            list(FreshnessDaemon().run_iteration(self.workspace))

    def state(self, key: dg.AssetKey) -> State:
        return self.instance.get_freshness_state_records([key])[key].freshness_state

    def transitions(self, key: dg.AssetKey) -> list[tuple[str, str]]:
        records = self.instance.event_log_storage.get_event_records(
            EventRecordsFilter(event_type=DagsterEventType.FRESHNESS_STATE_CHANGE, asset_key=key),
            ascending=True,
        )
        changes = [
            r.event_log_entry.dagster_event.asset_freshness_state_change_data for r in records
        ]
        return [(c.previous_state.value, c.new_state.value) for c in changes]


@pytest.fixture
def platform(monkeypatch, tmp_path):
    monkeypatch.setenv("PARTITION_TIMEZONE", "America/New_York")
    monkeypatch.setenv("FRESHNESS_RAW_WARN_MINUTES", "10")
    monkeypatch.setenv("FRESHNESS_RAW_FAIL_MINUTES", "30")
    monkeypatch.setenv("NOTIFY_PATH", str(tmp_path / "notifications.jsonl"))
    _clear_caches()
    origin = InProcessCodeLocationOrigin(
        LoadableTargetOrigin(
            python_file=str(settings.PROJECT_ROOT / "analytics_assets" / "definitions.py"),
            attribute="defs",
            working_directory=str(settings.PROJECT_ROOT),
        ),
        location_name="analytics_assets",
    )
    with (
        instance_for_test() as instance,
        WorkspaceProcessContext(instance, InProcessWorkspaceLoadTarget(origin)) as workspace,
    ):
        yield Platform(instance, workspace)
    _clear_caches()


def test_raw_table_goes_pass_warn_fail_and_recovers_on_the_next_ingest(platform):
    t0 = dt.datetime(2026, 3, 10, 12, 0, tzinfo=dt.UTC)
    minutes = lambda m: t0 + dt.timedelta(minutes=m)  # noqa: E731

    platform.evaluate(minutes(-1))
    assert platform.state(RAW_ORDERS) == State.UNKNOWN  # never ingested

    platform.materialize(RAW_ORDERS, t0)
    platform.evaluate(minutes(9))
    assert platform.state(RAW_ORDERS) == State.PASS
    platform.evaluate(minutes(10))  # FRESHNESS_RAW_WARN_MINUTES=10
    assert platform.state(RAW_ORDERS) == State.WARN
    platform.evaluate(minutes(29))
    assert platform.state(RAW_ORDERS) == State.WARN
    platform.evaluate(minutes(30))  # FRESHNESS_RAW_FAIL_MINUTES=30
    assert platform.state(RAW_ORDERS) == State.FAIL

    platform.materialize(RAW_ORDERS, minutes(40))
    platform.evaluate(minutes(41))
    assert platform.state(RAW_ORDERS) == State.PASS

    # One state-change event per transition, none for the evaluations that changed nothing.
    assert platform.transitions(RAW_ORDERS) == [
        ("UNKNOWN", "UNKNOWN"),
        ("UNKNOWN", "PASS"),
        ("PASS", "WARN"),
        ("WARN", "FAIL"),
        ("FAIL", "PASS"),
    ]


def test_daily_mart_must_land_by_six_in_the_partition_timezone(platform):
    local = lambda *args: dt.datetime(*args, tzinfo=NEW_YORK)  # noqa: E731

    # Monday's partition lands at 05:30 New York time on Tuesday, before the 06:00 deadline.
    platform.materialize(DAILY_REVENUE, local(2026, 3, 10, 5, 30), partition="2026-03-09")
    platform.evaluate(local(2026, 3, 10, 5, 45))
    assert platform.state(DAILY_REVENUE) == State.PASS

    # 06:30 UTC on Wednesday is 02:30 in New York: a UTC deadline would already have failed.
    platform.evaluate(dt.datetime(2026, 3, 11, 6, 30, tzinfo=dt.UTC))
    assert platform.state(DAILY_REVENUE) == State.PASS
    platform.evaluate(local(2026, 3, 11, 5, 59))
    assert platform.state(DAILY_REVENUE) == State.PASS

    # Tuesday's partition has not landed by 06:00 Wednesday: FAIL, with no WARN before it.
    platform.evaluate(local(2026, 3, 11, 6, 0))
    assert platform.state(DAILY_REVENUE) == State.FAIL

    # It lands late, at 07:10: fresh again until Thursday 06:00.
    platform.materialize(DAILY_REVENUE, local(2026, 3, 11, 7, 10), partition="2026-03-10")
    platform.evaluate(local(2026, 3, 11, 7, 15))
    assert platform.state(DAILY_REVENUE) == State.PASS

    assert platform.transitions(DAILY_REVENUE) == [
        ("UNKNOWN", "PASS"),
        ("PASS", "FAIL"),
        ("FAIL", "PASS"),
    ]


def test_freshness_fail_is_announced_once(platform, tmp_path):
    """The daemon's FAIL transition reaches the dev sink through notify_on_freshness_fail, once."""
    defs = build_definitions()  # under this test's environment, like the loaded workspace
    sink = tmp_path / "notifications.jsonl"

    def tick(cursor):
        context = dg.build_sensor_context(
            instance=platform.instance,
            cursor=cursor,
            definitions=defs,
            resources={"notifier": defs.resources["notifier"]},  # the dev sink, NOTIFY_PATH
        )
        notify_on_freshness_fail(context)
        return context.cursor

    t0 = dt.datetime(2026, 3, 10, 12, 0, tzinfo=dt.UTC)
    platform.materialize(RAW_ORDERS, t0)
    platform.evaluate(t0 + dt.timedelta(minutes=5))
    cursor = tick(None)  # starts watching here
    platform.evaluate(t0 + dt.timedelta(minutes=15))  # WARN: not announced
    cursor = tick(cursor)
    assert not sink.exists()

    platform.evaluate(t0 + dt.timedelta(minutes=31))  # FAIL
    cursor = tick(cursor)
    platform.evaluate(t0 + dt.timedelta(minutes=45))  # still FAIL: no new event
    cursor = tick(cursor)

    lines = [json.loads(line) for line in sink.read_text().splitlines()]
    assert [line["kind"] for line in lines] == ["freshness_fail"]
    assert lines[0]["fields"]["asset"] == "raw/orders"
    assert lines[0]["fields"]["policy"] == "time window: warn after 10m, fail after 30m"
    assert lines[0]["fields"]["last_materialized_at"] == "2026-03-10 12:00 UTC"
    assert "raw/orders" in lines[0]["text"]


# --- where policies come from --------------------------------------------------------------------


def test_dbt_meta_gives_a_time_window_or_a_cron_deadline_in_the_partition_timezone():
    window = policy_from_dbt_meta(
        {"dagster": {"freshness": {"warn_minutes": 60, "fail_minutes": 180}}},
        model="fct_orders",
        timezone="UTC",
    )
    assert describe_policy(window) == "time window: warn after 1h, fail after 3h"
    cron = policy_from_dbt_meta(
        {"dagster": {"freshness": {"deadline_cron": "0 6 * * *", "lower_bound_minutes": 360}}},
        model="daily_revenue",
        timezone="Europe/Berlin",
    )
    assert describe_policy(cron) == (
        "cron deadline '0 6 * * *' (Europe/Berlin), materialized within 6h before it"
    )
    assert policy_from_dbt_meta({"dagster": {}}, model="stg", timezone="UTC") is None


@pytest.mark.parametrize(
    "freshness, complaint",
    [
        ({"fail_minute": 60}, "has keys ['fail_minute']"),
        ({"warn_minutes": 90, "fail_minutes": 60}, "must be earlier than fail"),
        ({"fail_minutes": "60"}, "must be a positive whole number"),
        ({"deadline_cron": "0 6 * *", "lower_bound_minutes": 60}, "is invalid"),
        (
            {"deadline_cron": "0 6 * * *", "lower_bound_minutes": 60, "timezone": "Mars/Base"},
            "is invalid",
        ),
        ({"deadline_cron": "0 6 * * *", "fail_minutes": 60}, "use {warn_minutes?, fail_minutes}"),
    ],
)
def test_a_wrong_dbt_freshness_meta_names_the_model(freshness, complaint):
    with pytest.raises(settings.ConfigError, match="dbt model 'daily_revenue'") as error:
        policy_from_dbt_meta(
            {"dagster": {"freshness": freshness}}, model="daily_revenue", timezone="UTC"
        )
    assert complaint in str(error.value)


def test_defaults_fill_gaps_and_never_replace_a_declared_policy(monkeypatch):
    monkeypatch.setenv("FRESHNESS_DEFAULT_WARN_MINUTES", "120")
    monkeypatch.setenv("FRESHNESS_DEFAULT_FAIL_MINUTES", "240")
    _clear_caches()
    declared = dg.FreshnessPolicy.time_window(fail_window=dt.timedelta(minutes=5))

    @dg.multi_asset(
        specs=[
            dg.AssetSpec(["raw", "events"]),
            dg.AssetSpec(["raw", "clicks"], freshness_policy=declared),
            dg.AssetSpec(["marts", "report"]),
        ]
    )
    def assets():
        pass

    defs = apply_freshness(dg.Definitions(assets=[assets, dg.AssetSpec(["app_db", "external"])]))
    graph = defs.resolve_asset_graph()
    policy = lambda *key: describe_policy(graph.get(dg.AssetKey(list(key))).freshness_policy)  # noqa: E731
    assert policy("raw", "events") == "time window: warn after 15m, fail after 1h"
    assert policy("raw", "clicks") == "time window: fail after 5m"
    assert policy("marts", "report") == "time window: warn after 2h, fail after 4h"
    assert policy("app_db", "external") is None  # not materializable: nothing to be late


def test_a_warn_window_not_before_the_fail_window_is_refused(monkeypatch):
    monkeypatch.setenv("FRESHNESS_RAW_WARN_MINUTES", "60")
    monkeypatch.setenv("FRESHNESS_RAW_FAIL_MINUTES", "60")
    _clear_caches()
    with pytest.raises(settings.ConfigError, match="FRESHNESS_RAW_WARN_MINUTES"):
        raw_table_policy()
