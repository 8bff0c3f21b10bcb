"""The platform runs itself: lag-driven ingest, late-data reruns of exactly the touched daily
partitions, partition completeness from the CDC watermark, and declarative automation."""

from __future__ import annotations

import datetime as dt
import json

import dagster as dg

from analytics_assets.defs.automation.cadence import CLOSE_RUN, DAILY, FAST_PATH
from analytics_assets.defs.automation.logic import (
    contiguous_ranges,
    ingest_holds_back_the_next,
    ingest_run_key,
    lagging_tables,
    partition_closed,
    quiet_tables,
    settled,
    watermark_from_lag,
)
from analytics_assets.defs.cdc.assets import changes_key, raw_key
from analytics_assets.defs.dbt.selection import FAST_PATH_TAG
from analytics_assets.lib.feeds.base import PENDING_SAMPLED_LABEL, greatest
from analytics_assets.lib.partitions import daily_partitions, last_ended_day
from analytics_assets.settings import get_settings

INGEST_TAG = "analytics/ingest"
INGEST_STEP = "cdc_ingest"  # the step key of the CDC ingest asset (defs/cdc/assets.py)
BUSINESS_TABLES = ("orders", "order_items")
IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def read_lag():
    """Lag of every captured table, in one round trip to the source."""
    from analytics_assets.lib import cdc

    feed = cdc.make_feed()
    try:
        return feed.lag(None)
    finally:
        feed.close()


def _ingest_in_flight(instance: dg.DagsterInstance) -> str | None:
    """The id of an ingest run in flight that holds back the next request (see
    `ingest_holds_back_the_next`), else None."""
    records = instance.get_run_records(
        dg.RunsFilter(tags={INGEST_TAG: "true"}, statuses=IN_FLIGHT), limit=2
    )
    for record in records:
        run = record.dagster_run
        done = run.status == dg.DagsterRunStatus.STARTED and any(
            stat.step_key == INGEST_STEP and stat.end_time is not None
            for stat in instance.get_run_step_stats(run.run_id, step_keys=[INGEST_STEP])
        )
        if ingest_holds_back_the_next(run.status.value, done):
            return run.run_id
    return None


def _newest_ingest(instance: dg.DagsterInstance) -> dg.RunRecord | None:
    records = instance.get_run_records(dg.RunsFilter(tags={INGEST_TAG: "true"}), limit=1)
    return records[0] if records else None


def _ingested_since(newest: dg.RunRecord | None, at: float | None) -> bool:
    """Whether the newest ingest run was created at or after `at` (the tick that requested it)
    and succeeded: it then read everything committed before it started."""
    return (
        newest is not None
        and at is not None
        and newest.dagster_run.status == dg.DagsterRunStatus.SUCCESS
        and newest.create_timestamp.timestamp() >= at
    )


def _failed(newest: dg.RunRecord | None) -> str | None:
    """The newest ingest run's id if it failed or was canceled, else None."""
    failed = (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED)
    run = newest.dagster_run if newest is not None else None
    return run.run_id if run is not None and run.status in failed else None


def _keys(selection: dg.AssetSelection, context) -> list[dg.AssetKey]:
    return sorted(selection.resolve(context.repository_def.asset_graph))


def lag_observations(lag) -> list[dg.AssetObservation]:
    """Lag as numeric metadata on each raw table, so the UI plots it over time."""
    events = []
    for table, item in sorted(lag.items()):
        metadata = {
            "lag_pending_changes": dg.MetadataValue.int(item.pending_changes or 0),
            "lag_position_bytes": dg.MetadataValue.int(item.position_lag_bytes or 0),
        }
        if item.seconds_known:  # else a gap in the plot, not a false 0
            metadata["lag_seconds"] = dg.MetadataValue.float(float(item.seconds_behind))
        if item.pending_sampled:  # a bounded read of a large backlog: say what was counted
            metadata["lag_pending_changes_counted"] = dg.MetadataValue.text(PENDING_SAMPLED_LABEL)
        events.append(dg.AssetObservation(asset_key=raw_key(table), metadata=metadata))
    return events


@dg.sensor(
    name="cdc_lag_sensor",
    # a tick costs one lag query, bounded by CDC_LAG_MAX_BYTES; the sensor daemon's loop is 5 s
    minimum_interval_seconds=5,
    default_status=dg.DefaultSensorStatus.RUNNING,
    target=dg.AssetSelection.groups("raw") | FAST_PATH,
    description="Reads CDC lag for every captured table in one round trip, records it on the raw "
    "tables and, when a table's lag crosses the thresholds (or nothing was ingested for "
    "CDC_MAX_IDLE_MINUTES), starts an ingest run of every captured table (so the replication "
    "slot advances) plus the near-real-time models (revenue_minutely and its upstream models).",
)
def cdc_lag_sensor(context: dg.SensorEvaluationContext):
    settings = get_settings()
    lag = read_lag()
    now = dt.datetime.now(dt.UTC)
    run_requests: list[dg.RunRequest] = []
    skip = None
    watermark = watermark_from_lag(lag, now)
    previous = json.loads(context.cursor) if context.cursor else {}
    requested = previous.get("requested") or {}
    newest = _newest_ingest(context.instance)
    cursor = {"watermark": watermark.isoformat() if watermark else None, "requested": requested}

    quiet = (
        quiet_tables(lag, requested.get("activity") or {})
        if _ingested_since(newest, requested.get("at"))
        else set()
    )
    tables = lagging_tables(
        lag,
        max_pending=settings.cdc.lag_max_pending,
        max_seconds=settings.cdc.lag_max_seconds,
        max_bytes=settings.cdc.lag_max_bytes,
        quiet=quiet,
    )
    why = "lag above threshold"
    if not tables:
        idle_for = _minutes_since_last_ingest(context.instance, settings.source.tables, now)
        if idle_for is None or idle_for >= settings.cdc.max_idle_minutes:
            tables, why = list(settings.source.tables), "idle heartbeat"
    running = _ingest_in_flight(context.instance) if tables else None
    if not tables:
        skip = dg.SkipReason("no table lags: nothing to ingest")
    elif running:
        skip = dg.SkipReason(f"ingest run {running} is still in flight")
    else:
        run_key = ingest_run_key(
            lag,
            tables,
            now,
            heartbeat=why == "idle heartbeat",
            max_bytes=settings.cdc.lag_max_bytes,
            last_failed=_failed(newest),
        )
        # Every captured table, not only the lagging ones: the slot is acknowledged up to the
        # smallest checkpoint over all tables with state (lib/cdc.py), so a table left out would
        # hold the slot back and every later ingest would re-read the WAL since its checkpoint.
        # Each raw/<table> materialization still reports exactly the changes it applied.
        captured = list(settings.source.tables)
        selection = [k for t in captured for k in (raw_key(t), changes_key(t))]
        selection += _keys(FAST_PATH, context)
        context.log.info(f"requesting ingest of {captured} ({why}: {', '.join(tables)})")
        cursor["requested"] = {
            "at": now.timestamp(),
            "activity": {t: item.activity for t, item in lag.items() if item.activity},
        }
        run_requests.append(
            dg.RunRequest(
                run_key=run_key,
                asset_selection=selection,
                tags={
                    INGEST_TAG: "true",
                    FAST_PATH_TAG: "true",
                    "analytics/reason": why,
                    "analytics/lagging": ",".join(tables),
                },
            )
        )
    seen = settled(lag, quiet)  # what the UI plots: a quiet table is not "unknown"
    return dg.SensorResult(
        run_requests=run_requests,
        skip_reason=skip,
        asset_events=[*lag_observations(seen), *_source_observations(context, seen)],
        cursor=json.dumps(cursor),
    )


def _source_observations(context, lag) -> list[dg.AssetObservation]:
    """app_db/<table> on every tick, with the lag just read; a failure costs the tick only these
    (the lag and the ingest decision stand), and says why."""
    from analytics_assets.defs.sources.observe import observation_failure, source_observations

    try:
        return source_observations(get_settings().source.tables, lag)
    except Exception as exc:  # noqa: BLE001 - any source error must not stop the lag sensor
        context.log.warning(observation_failure(exc))
        return []


def _minutes_since_last_ingest(instance, tables, now) -> float | None:
    latest = None
    # one storage query for all tables (one per table cost ~70 ms a tick with 50 tables)
    events = instance.get_latest_materialization_events([raw_key(t) for t in tables])
    for event in events.values():
        if event is not None:
            ts = dt.datetime.fromtimestamp(event.timestamp, dt.UTC)
            latest = greatest(latest, ts)
    return None if latest is None else (now - latest).total_seconds() / 60


def _materialization_records(instance, key: dg.AssetKey, after: int | None):
    return instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, after_storage_id=after), limit=1000, ascending=True
    ).records


@dg.sensor(
    name="late_data_sensor",
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    target=DAILY,
    description="When ingested changes touch business dates whose daily partitions were already "
    "built (late payment, refund, soft delete), re-runs exactly those partitions, one "
    "single-run range per contiguous stretch, once fct_orders includes the changes.",
)
def late_data_sensor(context: dg.SensorEvaluationContext):
    state = json.loads(context.cursor) if context.cursor else {}
    after = state.get("after")
    # business date -> storage id of the newest raw materialization that touched it
    pending: dict[str, int] = state.get("pending") or {}
    if isinstance(pending, list):  # cursor written before the per-date ids
        pending = dict.fromkeys(pending, state.get("newest", 0))
    last_seen = after or 0
    if not context.cursor:
        # First tick: start from now; history before the sensor ran is not "late".
        for table in BUSINESS_TABLES:
            latest = context.instance.fetch_materializations(
                raw_key(table), limit=1, ascending=False
            ).records
            last_seen = max([last_seen, *(r.storage_id for r in latest)])
        return dg.SensorResult(
            skip_reason=dg.SkipReason("started: watching raw changes from now on"),
            cursor=json.dumps({"after": last_seen or None, "pending": {}}),
        )
    for table in BUSINESS_TABLES:
        for record in _materialization_records(context.instance, raw_key(table), after):
            last_seen = max(last_seen, record.storage_id)
            meta = record.asset_materialization.metadata.get("business_dates")
            for day in meta.value if meta is not None and meta.value else []:
                pending[day] = max(pending.get(day, 0), record.storage_id)
    after = last_seen or None

    requests = []
    if pending:
        fct = context.instance.fetch_materializations(
            dg.AssetKey(["marts", "fct_orders"]), limit=1, ascending=False
        ).records
        fct_id = fct[0].storage_id if fct else 0
        # ingests go on while fct_orders is rebuilt: a date whose changes it already includes is
        # rerun now; one touched again since waits for the next build
        ready = {day for day, storage_id in pending.items() if storage_id < fct_id}
        if ready:
            daily_keys = _keys(DAILY, context)
            built = set()
            for key in daily_keys:
                built |= set(context.instance.get_materialized_partitions(key))
            touched = sorted(ready & built)
            for first, last in contiguous_ranges(touched):
                requests.append(
                    dg.RunRequest(
                        run_key=f"late-{first}-{last}-{fct_id}",
                        asset_selection=daily_keys,
                        tags={
                            "dagster/asset_partition_range_start": first,
                            "dagster/asset_partition_range_end": last,
                            "analytics/reason": "late data",
                        },
                    )
                )
            pending = {day: sid for day, sid in pending.items() if day not in ready}
    cursor = json.dumps({"after": after, "pending": dict(sorted(pending.items()))})
    if not requests:
        return dg.SensorResult(
            skip_reason=dg.SkipReason(
                f"waiting for fct_orders to include changes to {sorted(pending)}"
                if pending
                else "no late changes to already-built partitions"
            ),
            cursor=cursor,
        )
    return dg.SensorResult(run_requests=requests, cursor=cursor)


def close_decision(now: dt.datetime, lag) -> tuple[str, bool, str]:
    """Yesterday's partition (in PARTITION_TIMEZONE) at `now`, and whether it is closed."""
    settings = get_settings()
    key = last_ended_day(now, settings.partitions.timezone).isoformat()
    closed, why = partition_closed(
        key,
        watermark_from_lag(lag, now),
        grace_minutes=settings.partitions.grace_minutes,
        timezone=settings.partitions.timezone,
    )
    return key, closed, why


@dg.sensor(
    name="partition_close_sensor",
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    target=CLOSE_RUN,
    description="Builds yesterday's daily partitions as soon as the CDC watermark passes the "
    "end of the day plus PARTITION_GRACE_MINUTES, after the unpartitioned models (which "
    "otherwise refresh every MODELS_REFRESH_MINUTES) in the same run.",
)
def partition_close_sensor(context: dg.SensorEvaluationContext):
    key, closed, why = close_decision(dt.datetime.now(dt.UTC), read_lag())
    if not closed:
        return dg.SkipReason(why)
    done = context.instance.get_materialized_partitions(dg.AssetKey(["marts", "daily_revenue"]))
    if key in done:
        return dg.SkipReason(f"partition {key} already built")
    return dg.RunRequest(
        run_key=f"close-{key}",
        partition_key=key,
        asset_selection=_keys(CLOSE_RUN, context),
        tags={"analytics/reason": why},
    )


def daily_marts_backstop() -> dg.ScheduleDefinition:
    """The 01:00 backstop, at 01:00 in PARTITION_TIMEZONE (built with the definitions, so the
    zone is the setting's when they load)."""

    @dg.schedule(
        name="daily_marts_backstop",
        cron_schedule="0 1 * * *",
        execution_timezone=get_settings().partitions.timezone,
        target=CLOSE_RUN,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Backstop at 01:00 in PARTITION_TIMEZONE: builds yesterday's daily "
        "partitions (after the unpartitioned models) if they are closed, and skips "
        "saying why if the CDC watermark has not passed the day yet.",
    )
    def backstop(context: dg.ScheduleEvaluationContext):
        now = context.scheduled_execution_time or dt.datetime.now(dt.UTC)
        key, closed, why = close_decision(now, read_lag())
        if not closed:
            return dg.SkipReason(why)
        return dg.RunRequest(
            run_key=f"backstop-{key}",
            partition_key=key,
            asset_selection=_keys(CLOSE_RUN, context),
            tags={"analytics/reason": why},
        )

    return backstop


def build_automation_defs() -> dg.Definitions:
    # partitions_def resolved here (not at import) so settings changes in tests apply.
    daily_partitions()
    return dg.Definitions(
        sensors=[
            cdc_lag_sensor,
            late_data_sensor,
            partition_close_sensor,
            dg.AutomationConditionSensorDefinition(
                "automation_sensor",
                target=dg.AssetSelection.all(),
                default_status=dg.DefaultSensorStatus.RUNNING,
                minimum_interval_seconds=30,
            ),
        ],
        schedules=[daily_marts_backstop()],
    )
