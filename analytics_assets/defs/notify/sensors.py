"""Sensors that tell people: a run failed, an ERROR check failed, an asset went stale (freshness
FAIL), and the day's revenue once `marts/daily_revenue` lands a new day.

Each sensor starts watching from the moment it first ticks (history is not replayed into Slack)
and keeps a small cursor. A message that cannot be delivered stops the tick with the cursor at the
last delivered message, so the next tick retries from there.
"""

from __future__ import annotations

import datetime as dt
import json

import dagster as dg
from dagster._core.definitions.freshness import FreshnessState
from dagster._core.event_api import EventRecordsFilter
from dagster._core.events import DagsterEventType
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

from analytics_assets.defs.dbt.restatements import read_restatements
from analytics_assets.defs.freshness import describe_policy
from analytics_assets.defs.notify.resources import NotificationError, Notifier, build_notifier
from analytics_assets.defs.notify.summary import (
    WarehouseNotReady,
    read_daily_revenue,
    summary_message,
)
from analytics_assets.lib.errors import WarehouseBusy
from analytics_assets.lib.read_copy import for_readers
from analytics_assets.settings import get_settings

DAILY_REVENUE_KEY = dg.AssetKey(["marts", "daily_revenue"])
MAX_ERROR_CHARS = 500
BATCH = 200


def _when(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _short(text: str | None) -> str:
    text = (text or "").strip()
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"


# --- run failure -------------------------------------------------------------------------------


def _root_error(error) -> str:
    """The user's exception, not Dagster's wrapper around it ("Error occurred while executing")."""
    if error is None:
        return ""
    while error.cause is not None:
        error = error.cause
    return error.message


def run_failure_message(context: dg.RunFailureSensorContext) -> tuple[str, dict]:
    run = context.dagster_run
    steps = [
        (event.step_key, _root_error(event.event_specific_data.error))
        for event in context.get_step_failure_events()
    ]
    lines = [f":red_circle: Run failed: job `{run.job_name}`, run `{run.run_id}`"]
    partition = run.tags.get("dagster/partition")
    if partition:
        lines[0] += f", partition {partition}"
    for step_key, error in steps[:3]:
        lines.append(f"• step `{step_key}`: {_short(error)}")
    if not steps:
        lines.append(f"• {_short(context.failure_event.message)}")
    fields = {
        "job": run.job_name,
        "run_id": run.run_id,
        "partition": partition,
        "failed_steps": [s for s, _ in steps],
    }
    return "\n".join(lines), fields


@dg.run_failure_sensor(
    name="notify_on_run_failure",
    description="Posts every failed run (job, run id, failing steps and their errors).",
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def notify_on_run_failure(context: dg.RunFailureSensorContext, notifier: Notifier):
    text, fields = run_failure_message(context)
    notifier.notify("run_failure", text, fields)


# --- ERROR check failures ----------------------------------------------------------------------


@dg.sensor(
    name="notify_on_check_error",
    description="Posts each asset check evaluation that failed with severity ERROR.",
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
)
def notify_on_check_error(context: dg.SensorEvaluationContext, notifier: Notifier):
    """Reads the latest execution of every check in this code location in one query.

    The cursor maps a failing check to the execution already announced, so a check that keeps
    failing on the same run is announced once and a new failing execution is announced again.
    Works on every instance storage (the run-sharded SQLite default included).
    """
    check_keys = list(context.repository_def.asset_graph.asset_check_keys)
    latest = context.instance.event_log_storage.get_latest_asset_check_execution_by_key(check_keys)
    first_tick = context.cursor is None
    announced: dict[str, int] = json.loads(context.cursor) if context.cursor else {}
    still_failing: dict[str, int] = {}
    failures = []
    for key, record in sorted(latest.items(), key=lambda kv: kv[1].id):
        if record.status != AssetCheckExecutionRecordStatus.FAILED or record.event is None:
            continue
        evaluation = record.event.dagster_event.asset_check_evaluation_data
        if evaluation.severity != dg.AssetCheckSeverity.ERROR:
            continue
        name = key.to_user_string()
        if announced.get(name) == record.id or first_tick:
            still_failing[name] = record.id
        else:
            failures.append((name, record, evaluation))
    for name, record, evaluation in failures:
        text = (
            f":x: Check failed (ERROR): `{evaluation.asset_key.to_user_string()}` "
            f"`{evaluation.check_name}` in run `{record.run_id}` at {_when(record.event.timestamp)}"
        )
        if evaluation.description:
            text += f"\n{_short(evaluation.description)}"
        fields = {
            "asset": evaluation.asset_key.to_user_string(),
            "check": evaluation.check_name,
            "run_id": record.run_id,
        }
        try:
            notifier.notify("check_failure", text, fields)
        except NotificationError as exc:
            context.update_cursor(json.dumps(still_failing, sort_keys=True))
            context.log.error(f"check failure not delivered, retrying next tick: {exc}")
            return dg.SkipReason(f"delivery failed, retrying next tick: {exc}")
        still_failing[name] = record.id
    context.update_cursor(json.dumps(still_failing, sort_keys=True))
    if first_tick:
        return dg.SkipReason(f"started watching {len(check_keys)} checks")
    return dg.SkipReason(f"{len(failures)} ERROR check failure(s) posted")


# --- freshness FAIL ----------------------------------------------------------------------------


@dg.sensor(
    name="notify_on_freshness_fail",
    description="Posts each asset whose freshness state changes to FAIL.",
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
)
def notify_on_freshness_fail(context: dg.SensorEvaluationContext, notifier: Notifier):
    """Tails the FRESHNESS_STATE_CHANGE events the freshness daemon records; the cursor is the
    storage id of the last event handled. One message per transition into FAIL."""
    storage = context.instance.event_log_storage
    if context.cursor is None:
        context.update_cursor(str(storage.get_maximum_record_id() or 0))
        return dg.SkipReason("started watching freshness state changes")
    records = storage.get_event_records(
        EventRecordsFilter(
            event_type=DagsterEventType.FRESHNESS_STATE_CHANGE, after_cursor=int(context.cursor)
        ),
        limit=BATCH,
        ascending=True,
    )
    asset_graph = context.repository_def.asset_graph
    posted = 0
    for record in records:
        change = record.event_log_entry.dagster_event.asset_freshness_state_change_data
        if change.new_state == FreshnessState.FAIL:
            key = change.key
            node = asset_graph.get(key) if asset_graph.has(key) else None
            last = context.instance.get_latest_materialization_event(key)
            text = f":hourglass: Freshness FAIL: `{key.to_user_string()}`"
            text += (
                f", last materialized {_when(last.timestamp)}" if last else ", never materialized"
            )
            policy = describe_policy(node.freshness_policy) if node else None
            if policy:
                text += f"\npolicy: {policy}"
            fields = {
                "asset": key.to_user_string(),
                "previous_state": change.previous_state.value,
                "last_materialized_at": _when(last.timestamp) if last else None,
                "policy": policy,
            }
            try:
                notifier.notify("freshness_fail", text, fields)
            except NotificationError as exc:
                context.log.error(f"freshness alert not delivered, retrying next tick: {exc}")
                return dg.SkipReason(f"delivery failed, retrying next tick: {exc}")
            posted += 1
        context.update_cursor(str(record.storage_id))
    return dg.SkipReason(f"{posted} freshness FAIL alert(s) posted")


# --- daily revenue summary ---------------------------------------------------------------------


@dg.sensor(
    name="notify_daily_revenue_summary",
    description="Posts the day's revenue, orders and customers against the day before when "
    "marts/daily_revenue lands a new day.",
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=60,
)
def notify_daily_revenue_summary(context: dg.SensorEvaluationContext, notifier: Notifier):
    """Cursor: the last materialization handled and the last day summarised. Only a day later than
    the last one summarised is posted (re-materializing an old day for late data, or a backfill
    of many days, posts at most the newest day)."""
    state = json.loads(context.cursor) if context.cursor else None
    if state is None:
        newest = context.instance.fetch_materializations(DAILY_REVENUE_KEY, limit=1).records
        after = newest[0].storage_id if newest else 0
        context.update_cursor(json.dumps({"after": after, "last_date": None}))
        return dg.SkipReason("started watching marts/daily_revenue")

    result = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=DAILY_REVENUE_KEY, after_storage_id=state["after"]),
        limit=BATCH,
        ascending=True,
    )
    if not result.records:
        return dg.SkipReason("no new materialization of marts/daily_revenue")
    last_date = dt.date.fromisoformat(state["last_date"]) if state["last_date"] else None
    days = {
        dt.date.fromisoformat(r.partition_key)
        for r in result.records
        if r.partition_key
        and (last_date is None or dt.date.fromisoformat(r.partition_key) > last_date)
    }
    new_state = {**state, "after": result.records[-1].storage_id}
    if not days:
        context.update_cursor(json.dumps(new_state))
        return dg.SkipReason("only days already summarised were re-materialized")

    day = max(days)
    now = dt.datetime.now(dt.UTC)
    # restatements since the last summary (the day before the first one)
    since = state.get("posted_at") or (now - dt.timedelta(days=1)).isoformat()
    try:
        today, previous = read_daily_revenue(for_readers(get_settings()), day)
        restated = read_restatements(
            for_readers(get_settings()), since=dt.datetime.fromisoformat(since)
        )
    except (WarehouseBusy, WarehouseNotReady) as exc:
        # Cursor untouched: the same materializations are looked at again next tick.
        return dg.SkipReason(f"{exc}; retrying next tick")
    text, fields = summary_message(today, previous, restated)
    try:
        notifier.notify("daily_summary", text, fields)
    except NotificationError as exc:
        context.log.error(f"daily summary not delivered, retrying next tick: {exc}")
        return dg.SkipReason(f"delivery failed, retrying next tick: {exc}")
    context.update_cursor(
        json.dumps({**new_state, "last_date": day.isoformat(), "posted_at": now.isoformat()})
    )
    return dg.SkipReason(f"posted the summary of {day.isoformat()}")


def build_notify_defs() -> dg.Definitions:
    """The notify domain: its sensors and the `notifier` resource they share."""
    return dg.Definitions(
        sensors=[
            notify_on_run_failure,
            notify_on_check_error,
            notify_on_freshness_fail,
            notify_daily_revenue_summary,
        ],
        resources={"notifier": build_notifier()},
    )
