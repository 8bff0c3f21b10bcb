"""`raw/<table>` and `raw/<table>_changes`: the warehouse copy of each captured table, kept equal
to the source by change data capture, and its append-only change log."""

import dagster as dg
from dagster import AssetExecutionContext
from dagster._core.errors import DagsterExecutionInterruptedError

from analytics_assets.lib.metadata import as_metadata
from analytics_assets.settings import get_settings

INGEST_POOL = "cdc_ingest"
INGEST_RETRIES = 2
INGEST_RETRY_SECONDS = 5


def raw_key(table: str) -> dg.AssetKey:
    """The warehouse copy of source table `table` (its change log is `changes_key`)."""
    return dg.AssetKey(["raw", table])


def changes_key(table: str) -> dg.AssetKey:
    return dg.AssetKey(["raw", f"{table}_changes"])


def selected_tables(keys: set[dg.AssetKey], tables: tuple[str, ...]) -> list[str]:
    return [t for t in tables if raw_key(t) in keys or changes_key(t) in keys]


def build_cdc_assets() -> list[dg.AssetsDefinition]:
    settings = get_settings()
    kind = "bigquery" if settings.is_prod else "duckdb"
    specs = []
    for table in settings.source.tables:
        current, changes = raw_key(table), changes_key(table)
        for key, description in (
            (current, f"Current state of app table {table}, one row per key, deletes flagged."),
            (changes, f"Every change to app table {table}: op, position and commit time."),
        ):
            specs.append(
                dg.AssetSpec(
                    key,
                    deps=[dg.AssetKey(["app_db", table])],
                    group_name="raw",
                    kinds={kind},
                    description=description,
                    skippable=True,
                )
            )

    @dg.multi_asset(
        name="cdc_ingest",
        specs=specs,
        can_subset=True,
        pool=INGEST_POOL,
    )
    def cdc_ingest(context: AssetExecutionContext):
        """Drain the CDC feed into the raw tables in bounded batches."""
        # Retries are requested here rather than by a RetryPolicy: Dagster's policy also retries
        # a step interrupted anywhere inside its boundary (also before this body runs), and a
        # run told to stop (SIGTERM, terminate in the UI) must stop, not start its ingest again.
        try:
            yield from _ingest(context, settings)
        except (KeyboardInterrupt, DagsterExecutionInterruptedError) as exc:
            raise dg.Failure(
                "the run was told to stop: the ingest ended before its next commit, nothing is "
                "half-applied and the next ingest goes on from the last committed batch",
                allow_retries=False,
            ) from exc
        except Exception as exc:
            # a lost source connection or a busy slot: the next attempt goes on from the last
            # committed batch
            raise dg.RetryRequested(
                max_retries=INGEST_RETRIES, seconds_to_wait=INGEST_RETRY_SECONDS
            ) from exc

    return [cdc_ingest]


def _ingest(context: AssetExecutionContext, settings):
    """One ingest of the selected tables, then a materialization per raw asset."""
    from analytics_assets.lib import cdc
    from analytics_assets.lib.read_copy import publish_or_warn

    tables = selected_tables(set(context.selected_asset_keys), settings.source.tables)
    feed = cdc.make_feed(settings)
    # waits up to WAREHOUSE_LOCK_TIMEOUT_SECONDS for another writer of the DuckDB file; a
    # lost source connection or a busy slot fails the attempt, and cdc_ingest requests another
    warehouse = cdc.make_warehouse(settings)
    try:
        result = cdc.ingest(
            tables,
            feed=feed,
            warehouse=warehouse,
            progress=lambda p: context.log.info(
                f"batch {p['batch']}: {p['changes']} changes applied, up to {p['position']}"
            ),
        )
        # readers' copy, before the materializations say the changes are in (lib/read_copy.py)
        publish_or_warn(settings, context.log, getattr(warehouse, "con", None))
    finally:
        warehouse.close()  # let go of the DuckDB file before the next step needs it
    context.log.info(
        f"{result.changes} changes applied in {result.batches} batches "
        f"({result.seconds:.1f}s); snapshot: {result.snapshot_tables or 'none'}"
    )
    _observe_sources(context, tables, {t: result.tables[t].lag_after for t in tables})
    for table in tables:
        metadata = as_metadata(result.tables[table].metadata())
        current, changes = raw_key(table), changes_key(table)
        if current in context.selected_asset_keys:
            yield dg.MaterializeResult(asset_key=current, metadata=metadata)
        if changes in context.selected_asset_keys:
            yield dg.MaterializeResult(
                asset_key=changes,
                metadata={k: v for k, v in metadata.items() if k.startswith("changes")},
            )


def _observe_sources(context, tables, lag) -> None:
    """app_db/<table> after every ingest, with the lag the ingest measured after applying."""
    from analytics_assets.defs.sources.observe import observation_failure, source_observations

    try:
        events = source_observations(tables, lag)
    except Exception as exc:  # noqa: BLE001 - the changes are applied; an observation is extra
        context.log.warning(observation_failure(exc))
        return
    for event in events:
        context.log_event(event)
