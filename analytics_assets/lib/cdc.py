"""The one CDC entry point the assets, CLI and sensors call: `ingest(...)`.

It snapshots tables that have no warehouse state yet, then drains the feed in bounded batches:
read -> apply + commit (one warehouse transaction, which also stores the position) -> ack.
The feed is acknowledged only after the commit, and the warehouse's stored positions are the
truth on restart, so a crash at any stage loses nothing and applies nothing twice.

Subset ingest: positions are kept per table. `ingest(["orders"])` applies only orders' changes
and stores only orders' position; the slot is acknowledged up to the smallest checkpoint over all
captured tables with state, so the other tables' changes stay in the slot until they are ingested
(a Kafka feed commits per-topic offsets the same way). Every raw/<table> materialization thus
reports exactly the changes (and business dates) it applied. The price: a table nobody ingests
holds WAL; the lag sensor and slot health checks watch for that.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from analytics_assets.lib.errors import ConfigError
from analytics_assets.lib.feeds.base import Feed, Position, TableLag, greatest, least
from analytics_assets.lib.warehouse.base import ApplyResult, Warehouse
from analytics_assets.settings import Settings, get_settings

OP_NAMES = {"c": "inserted", "u": "updated", "d": "deleted", "t": "truncated", "r": "snapshot"}
STAGES = ("snapshot", "decoded", "applied", "committed", "acked")


@dataclass
class TableIngestResult:
    table: str
    changes_by_op: dict[str, int] = field(default_factory=dict)
    skipped: int = 0
    first: Position | None = None
    last: Position | None = None
    business_dates: set[dt.date] = field(default_factory=set)
    lag_before: TableLag | None = None
    lag_after: TableLag | None = None
    snapshotted: bool = False

    @property
    def changes(self) -> int:
        return sum(self.changes_by_op.values())

    def metadata(self) -> dict[str, Any]:
        """Flat, numeric-where-possible metadata for a Dagster materialization."""
        md: dict[str, Any] = {
            f"changes_{OP_NAMES.get(op, op)}": n for op, n in sorted(self.changes_by_op.items())
        }
        md["changes"] = self.changes
        md["snapshot"] = self.snapshotted
        if self.first is not None:
            md["position_first_lsn"] = self.first.lsn
            md["position_last_lsn"] = self.last.lsn
            md["position_range"] = f"{self.first} .. {self.last}"
        if self.lag_before is not None:
            md.update(self.lag_before.as_metadata("lag_before"))
        if self.lag_after is not None:
            md.update(self.lag_after.as_metadata("lag_after"))
        md["business_dates"] = sorted(d.isoformat() for d in self.business_dates)
        return md


@dataclass
class IngestResult:
    tables: dict[str, TableIngestResult]
    batches: int
    seconds: float
    snapshot_tables: list[str]
    caught_up: bool

    @property
    def changes(self) -> int:
        return sum(t.changes for t in self.tables.values())


def _merge(into: TableIngestResult, res) -> None:
    for op, n in res.changes_by_op.items():
        into.changes_by_op[op] = into.changes_by_op.get(op, 0) + n
    into.skipped += res.skipped
    if res.first is not None:
        into.first = least(into.first, res.first)
        into.last = greatest(into.last, res.last)
    into.business_dates |= res.business_dates


def ingest(
    tables: Sequence[str] | None = None,
    *,
    feed: Feed,
    warehouse: Warehouse,
    max_batches: int | None = None,
    batch_size: int | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
    fault: Callable[[str], None] | None = None,
    measure_lag: bool = True,
    heartbeat: bool = True,
) -> IngestResult:
    """Bring `raw.<table>` for `tables` (default: all captured) up to date with the source.

    `fault(stage)` is called at each stage in STAGES (tests inject crashes there); `progress`
    receives a dict after each batch. `max_batches` bounds the stream part (not the snapshot).
    """
    t0 = time.perf_counter()
    tables = list(tables) if tables else list(feed.captured_tables)
    unknown = sorted(set(tables) - set(feed.captured_tables))
    if unknown:
        raise ConfigError(f"tables {unknown} are not captured; captured: {feed.captured_tables}")
    settings = get_settings()
    batch_size = batch_size or settings.cdc.batch_size
    fault = fault or (pause_at(settings.cdc.pause_at) if settings.cdc.pause_at else None)
    fault = fault or (lambda stage: None)
    results = {t: TableIngestResult(t) for t in tables}
    batches = 0
    caught_up = False

    def record(applied: ApplyResult) -> None:
        for t, res in applied.tables.items():
            if t in results:
                _merge(results[t], res)

    try:
        state = warehouse.state()
        if measure_lag:
            for t, lag in feed.lag(state).items():
                if t in results:
                    results[t].lag_before = lag

        # -- snapshot: each table all or nothing (one warehouse transaction per table)
        snap = feed.needs_snapshot(tables, state)
        current = None
        for batch in feed.snapshot(snap, batch_size, resync=[t for t in snap if t in state]):
            (table,) = batch.tables
            if current is not None and table != current:
                warehouse.commit()
            current = table
            record(warehouse.apply(batch, commit=False))
            fault("snapshot")
        if current is not None:
            warehouse.commit()
        for t in snap:
            results[t].snapshotted = True

        # -- stream
        feed.open(tables, warehouse.state())
        if heartbeat:
            feed.heartbeat()
        while max_batches is None or batches < max_batches:
            batch = feed.read_batch(batch_size)
            if batch is None:
                caught_up = True
                break
            batch = batch.only(tables)
            fault("decoded")
            applied = warehouse.apply(batch, before_commit=lambda: fault("applied"))
            fault("committed")
            feed.ack(warehouse.state())
            fault("acked")
            record(applied)
            batches += 1
            if progress is not None:
                progress(
                    {
                        "batch": batches,
                        "changes": applied.applied,
                        "position": str(batch.last) if batch.last else None,
                        "apply_seconds": round(applied.seconds, 3),
                        "decode_seconds": round(batch.decode_seconds, 3),
                    }
                )
    finally:
        warehouse.rollback()
        feed.close()

    if measure_lag:
        for t, lag in feed.lag(warehouse.state()).items():
            if t in results:
                results[t].lag_after = lag
        feed.close()
    return IngestResult(results, batches, time.perf_counter() - t0, list(snap), caught_up)


def pause_at(spec: str) -> Callable[[str], None]:
    """The fault hook of the kill tests (CDC_PAUSE_AT=`<stage>:<hit>:<dir>`): the `hit`-th time
    this process reaches `stage` it writes its PID to `<dir>/paused` and waits there, so the
    test's SIGKILL lands at exactly that point of the ingest. One pause per `<dir>`: a later
    process (the run after the kill) finds it taken and goes on."""
    stage, hit, directory = (spec.split(":", 2) + ["", ""])[:3]
    if stage not in STAGES or not hit.isdigit() or not directory:
        raise ConfigError(f"CDC_PAUSE_AT={spec!r}: expected <stage>:<hit>:<dir>, stage in {STAGES}")
    seen = 0

    def fault(reached: str) -> None:
        nonlocal seen
        if reached != stage:
            return
        seen += 1
        if seen != int(hit):
            return
        try:
            os.close(os.open(os.path.join(directory, "taken"), os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            return
        tmp = os.path.join(directory, "paused.tmp")
        with open(tmp, "w") as f:
            f.write(str(os.getpid()))
        os.replace(tmp, os.path.join(directory, "paused"))  # the test sees the whole PID
        while True:
            time.sleep(60)

    return fault


def make_feed(settings: Settings | None = None) -> Feed:
    """The change feed for this environment: the logical replication slot (default), or
    Debezium topics on Kafka with `CDC_FEED=kafka` (`CDC_TOPIC_PREFIX`, `KAFKA_*`)."""
    settings = settings or get_settings()
    if settings.cdc.feed == "kafka":
        from analytics_assets.lib.debezium_types import column_types_from_settings
        from analytics_assets.lib.feeds.kafka import KafkaFeed

        return KafkaFeed(
            dict(settings.cdc.kafka_config),
            topic_prefix=settings.cdc.topic_prefix,
            tables=settings.source.tables,
            column_types=column_types_from_settings(settings),
        )
    from analytics_assets.lib.feeds.slot import SlotFeed
    from analytics_assets.settings import require_source_url

    url = settings.source.url or require_source_url()
    return SlotFeed(
        settings.cdc.url or url,
        owner_url=url,
        slot=settings.cdc.slot,
        publication=settings.cdc.publication,
        tables=settings.source.tables,
        lag_window_bytes=settings.cdc.lag_max_bytes,
    )


def make_warehouse(settings: Settings | None = None) -> Warehouse:
    """DuckDB at settings.warehouse_path (dev); BigQuery dataset `RAW_SCHEMA` of `GCP_PROJECT`
    through dagster-gcp's BigQueryResource (prod, application default credentials)."""
    settings = settings or get_settings()
    if settings.is_prod:
        from analytics_assets.lib.warehouse.bigquery import BigQueryWarehouse, bigquery_resource

        return BigQueryWarehouse(
            resource=bigquery_resource(settings),
            dataset=settings.warehouse.raw_schema,
            timezone=settings.partitions.timezone,
            feed_kind=settings.cdc.feed,
        )
    from analytics_assets.lib.warehouse.duckdb import DuckDBWarehouse, ingest_memory_limit

    return DuckDBWarehouse(
        settings.warehouse.path,
        timezone=settings.partitions.timezone,
        feed_kind=settings.cdc.feed,
        memory_limit=ingest_memory_limit(settings.cdc.batch_size),
        lock_timeout=settings.warehouse.lock_timeout_seconds,
    )
