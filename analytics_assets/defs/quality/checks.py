"""The Python asset checks.

| check | on | severity | blocking |
|---|---|---|---|
| `schema_drift` | each `raw/<table>` | WARN new source column, ERROR dropped/retyped | yes |
| `slot_health` | each `raw/<table>` | WARN / ERROR by thresholds (config.py) | yes |
| `dead_letters` | each `raw/<table>` | ERROR while records are quarantined | no |
| `source_reconciliation` | `marts/daily_revenue`, per daily partition | ERROR | yes |
| `volume_anomaly` | `marts/daily_revenue`, per daily partition | WARN | no |

A blocking check that fails with ERROR stops every asset downstream of its asset in the same run
(Dagster makes those steps wait on it), and the step failure lists each such check and why.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import warnings
from collections.abc import Iterator

import dagster as dg

from analytics_assets.defs.cdc.assets import raw_key
from analytics_assets.defs.quality import (
    dead_letters,
    reconciliation,
    schema_drift,
    slot_health,
    volume,
)
from analytics_assets.defs.quality.verdict import ERROR, FailedCheck, Verdict, raise_for_blocking
from analytics_assets.defs.quality.warehouse import (
    column_type,
    connect,
    last_confirmed,
    raw_columns,
    relation_exists,
    warehouse_watermark,
)
from analytics_assets.lib.errors import WarehouseUnavailable
from analytics_assets.lib.partitions import daily_partitions
from analytics_assets.settings import get_settings, require_source_url

DAILY_REVENUE = dg.AssetKey(["marts", "daily_revenue"])
FCT_ORDERS = dg.AssetKey(["marts", "fct_orders"])
SCHEMA_DRIFT = "schema_drift"
SLOT_HEALTH = "slot_health"
DEAD_LETTERS = "dead_letters"
RECONCILIATION = "source_reconciliation"
VOLUME = "volume_anomaly"


@contextlib.contextmanager
def source_connection() -> Iterator:
    from analytics_assets.lib.pg import connect as pg_connect

    conn = pg_connect(get_settings().source.url or require_source_url())
    try:
        conn.autocommit = True
        yield conn
    finally:
        conn.close()


def _selected_tables(context) -> list[tuple[dg.AssetCheckKey, str]]:
    return sorted(
        ((key, key.asset_key.path[-1]) for key in context.selected_asset_check_keys),
        key=lambda item: item[1],
    )


def _partition_keys(context) -> list[str]:
    if context.has_partition_key_range:
        return list(context.partition_keys)
    if context.has_partition_key:
        return [context.partition_key]
    raise dg.Failure("This check runs per daily partition: pass one (e.g. --partition 2026-03-07).")


def _emit(
    context, key: dg.AssetCheckKey, v: Verdict, *, blocking: bool, partition: str | None = None
):
    """A result Dagster ties to the step's partition and the asset's latest materialization, or,
    in a run over a partition range, an evaluation that names its partition itself."""
    if partition is not None and context.has_partition_key_range:
        return v.evaluation(key, blocking=blocking, partition=partition)
    return v.result(key)


def _failed(key: dg.AssetCheckKey, v: Verdict, partition: str | None = None) -> list[FailedCheck]:
    if v.passed or v.severity != ERROR:
        return []
    return [FailedCheck(key, v.description, partition)]


def build_quality_checks() -> list[dg.AssetChecksDefinition]:
    tables = get_settings().source.tables

    @dg.multi_asset_check(
        name=SCHEMA_DRIFT,
        specs=[
            dg.AssetCheckSpec(
                SCHEMA_DRIFT,
                asset=raw_key(t),
                blocking=True,
                description=(
                    f"The columns of source table {t} match raw.{t}: a new source column WARNs, "
                    "a dropped or retyped one is an ERROR that blocks the models."
                ),
            )
            for t in tables
        ],
        can_subset=True,
        description="Source table columns against the raw tables CDC writes.",
    )
    def schema_drift_check(context):
        selected = _selected_tables(context)
        with source_connection() as conn:
            source = schema_drift.read_source_columns(conn, [t for _, t in selected])
        failed = []
        with connect(get_settings()) as con:

            def warehouse_type(arrow_type) -> str:
                return column_type(con, arrow_type)

            for key, table in selected:
                expected = (
                    schema_drift.expected_columns(source[table], warehouse_type)
                    if table in source
                    else None
                )
                v = schema_drift.verdict(table, expected, raw_columns(con, table))
                failed += _failed(key, v)
                yield v.result(key)
        raise_for_blocking(failed)

    @dg.multi_asset_check(
        name=SLOT_HEALTH,
        specs=[
            dg.AssetCheckSpec(
                SLOT_HEALTH,
                asset=raw_key(t),
                blocking=True,
                description=(
                    "The CDC replication slot keeps its WAL (wal_status, retained WAL against "
                    f"max_slot_wal_keep_size) and was read recently for {t}; ERROR blocks the "
                    "models before changes can be lost."
                ),
            )
            for t in tables
        ],
        can_subset=True,
        description="Replication slot health and CDC heartbeat age.",
    )
    def slot_health_check(context):
        from analytics_assets.lib import cdc

        settings = get_settings()
        q = get_settings().quality
        feed = cdc.make_feed(settings)
        try:
            status = feed.slot_status()
        finally:
            feed.close()
        confirmed: dict[str, dt.datetime] = {}
        try:
            with connect(settings) as con:
                confirmed = last_confirmed(con, settings.source.tables)
        except WarehouseUnavailable as exc:
            context.log.warning(f"heartbeat age unknown: {exc}")
        failed = []
        for key, table in _selected_tables(context):
            v = slot_health.verdict(table, status, confirmed.get(table), q)
            failed += _failed(key, v)
            yield v.result(key)
        raise_for_blocking(failed)

    @dg.multi_asset_check(
        name=DEAD_LETTERS,
        specs=[
            dg.AssetCheckSpec(
                DEAD_LETTERS,
                asset=raw_key(t),
                blocking=False,
                description=(
                    f"Change records of {t} the feed could not take (Kafka: malformed, "
                    "truncated, unknown op, another table's; both feeds: a value the platform "
                    "cannot hold) are quarantined in raw._dead_letters and missing from the raw "
                    "table; ERROR with their count while any are there."
                ),
            )
            for t in tables
        ],
        can_subset=True,
        description="Quarantined change records (not applied) per raw table.",
        # not blocking: in a lag-driven run it goes after the models, not before them
        op_tags={"dagster/priority": "-1"},
    )
    def dead_letters_check(context):
        selected = _selected_tables(context)
        previous = _last_metadata(context.instance, [key for key, _ in selected])
        seen = {t: dead_letters.last_seen(previous.get(key)) for key, t in selected}
        try:
            with connect(get_settings()) as con:
                found = dead_letters.read(con, seen)
        except WarehouseUnavailable as exc:
            for key, _ in selected:
                v = Verdict()
                v.warn(f"quarantine not read: {exc}")
                yield v.result(key)
            return
        for key, table in selected:
            v = dead_letters.verdict(table, found[table], first_check=key not in previous)
            yield v.result(key)

    daily = daily_partitions()
    # Partitioned checks (one verdict per date in the UI) are a preview feature in Dagster 1.13.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.PreviewWarning)
        reconciliation_spec = dg.AssetCheckSpec(
            RECONCILIATION,
            asset=DAILY_REVENUE,
            blocking=True,
            partitions_def=daily,
            additional_deps=[raw_key("orders")],
            description=(
                "Completed orders and revenue of the date in the source app DB equal the "
                "mart's, compared at the CDC watermark (orders changing right now are left "
                "out on both sides, so live traffic never raises a false alarm)."
            ),
        )
        volume_spec = dg.AssetCheckSpec(
            VOLUME,
            asset=DAILY_REVENUE,
            blocking=False,
            partitions_def=daily,
            description=(
                "The date's completed-order count and revenue stay within the configured "
                "band (QUALITY_VOLUME_BAND) of the trailing 7-day median, once the date has "
                "settled (QUALITY_VOLUME_SETTLE_DAYS after it closes); WARN only."
            ),
        )

    @dg.multi_asset_check(
        name=RECONCILIATION,
        specs=[reconciliation_spec],
        can_subset=True,
        description="The daily revenue mart against the source, per date.",
    )
    def source_reconciliation_check(context):
        settings = get_settings()
        q = get_settings().quality
        key = dg.AssetCheckKey(DAILY_REVENUE, RECONCILIATION)
        failed = []
        with source_connection() as conn, connect(settings) as con:
            watermark = warehouse_watermark(con, settings.source.tables)
            built_mart = relation_exists(con, "marts", "daily_revenue")
            for pk in _partition_keys(context):
                day = dt.date.fromisoformat(pk)
                figures = None
                if not built_mart:
                    v = Verdict()
                    v.warn("marts.daily_revenue does not exist yet: nothing to reconcile")
                    yield _emit(context, key, v, blocking=True, partition=pk)
                    continue
                if watermark.known:
                    cutoff = watermark.commit_ts - dt.timedelta(seconds=q.reconcile_margin_seconds)
                    source = reconciliation.read_source_day(conn, day)
                    figures = reconciliation.compute(con, source, day, cutoff)
                v = reconciliation.verdict(
                    day,
                    watermark,
                    figures,
                    margin_seconds=q.reconcile_margin_seconds,
                    built_at=_built_at(context.instance, pk),
                )
                failed += _failed(key, v, pk)
                yield _emit(context, key, v, blocking=True, partition=pk)
        raise_for_blocking(failed)

    @dg.multi_asset_check(
        name=VOLUME,
        specs=[volume_spec],
        can_subset=True,
        description="Day-over-week volume anomaly of the daily revenue mart.",
    )
    def volume_anomaly_check(context):
        settings = get_settings()
        q = get_settings().quality
        key = dg.AssetCheckKey(DAILY_REVENUE, VOLUME)
        built = {
            dt.date.fromisoformat(p)
            for p in context.instance.get_materialized_partitions(DAILY_REVENUE)
        }
        with connect(settings) as con:
            built_mart = relation_exists(con, "marts", "daily_revenue")
            watermark = warehouse_watermark(con, settings.source.tables)
            for pk in _partition_keys(context):
                day = dt.date.fromisoformat(pk)
                ready, why = volume.settled(
                    day,
                    watermark.commit_ts if watermark.known else None,
                    grace_minutes=settings.partitions.grace_minutes,
                    settle_days=q.volume_settle_days,
                    timezone=settings.partitions.timezone,
                )
                v = volume.verdict(
                    day,
                    volume.read_window(con, day) if built_mart else {},
                    built if built_mart else set(),
                    band=q.volume_band,
                    min_days=volume.MIN_DAYS,
                    unsettled=None if ready else why,
                )
                yield _emit(context, key, v, blocking=False, partition=pk)

    return [
        schema_drift_check,
        slot_health_check,
        dead_letters_check,
        source_reconciliation_check,
        volume_anomaly_check,
    ]


def _built_at(instance: dg.DagsterInstance, partition: str) -> dt.datetime | None:
    """As of when this partition of the mart holds data: its last materialization, or that of
    fct_orders, the table it is built from, when older (fct_orders refreshes on its own
    cadence, so a partition rebuilt since holds fct_orders' older view of raw)."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=DAILY_REVENUE, asset_partitions=[partition]), limit=1
    ).records
    if not records:
        return None
    built = records[0].timestamp
    fct = instance.get_latest_materialization_event(FCT_ORDERS)
    if fct is not None:
        built = min(built, fct.timestamp)
    return dt.datetime.fromtimestamp(built, dt.UTC)


def _last_metadata(
    instance: dg.DagsterInstance, keys: list[dg.AssetCheckKey]
) -> dict[dg.AssetCheckKey, dict]:
    """The metadata of each check's last finished evaluation (the running one has not finished),
    for checks that report what changed since then."""
    from dagster._core.storage.asset_check_execution_record import (
        AssetCheckExecutionRecordStatus as Status,
    )

    out = {}
    for key in keys:
        done = instance.event_log_storage.get_asset_check_execution_history(
            key, limit=1, status={Status.SUCCEEDED, Status.FAILED}
        )
        event = done[0].event if done else None
        if event is not None and event.dagster_event is not None:
            evaluation = event.dagster_event.event_specific_data
            out[key] = {k: v.value for k, v in (evaluation.metadata or {}).items()}
    return out


def build_quality_defs() -> dg.Definitions:
    return dg.Definitions(asset_checks=build_quality_checks())
