"""The read copy of the dev DuckDB warehouse: what readers open while the platform writes.

DuckDB lets one process open a file for writing and, while it does, no other process read it;
a run holds the warehouse through its ingest and its dbt step. So readers (a BI tool, a
notebook, the daily summary sensor) open a copy instead, which every writer of the platform
publishes right after its commit (the ingest step after its last batch, the dbt step once dbt
exits), before it reports the materializations: what Dagster shows as materialized is in the
copy.

Publishing: with the warehouse open for writing, CHECKPOINT (the file then holds every
committed change and the WAL is empty), copy the file beside the copy (through DuckDB's own
descriptor: closing another would drop its lock, `warehouse/turns.py`), fsync, and rename it
over the copy. The rename is atomic: a reader opens the previous copy or the new one, never a
half-written file, and a reader that has the previous one open keeps reading it (its inode
lives until closed); nothing ever waits for a reader. The copy keeps the warehouse's file name
in its own folder (`<dir>/read/<name>` unless WAREHOUSE_READ_PATH says otherwise) because
DuckDB names the catalog after the file and dbt's views refer to it by that name.

Production (BigQuery) has no such lock: readers read the warehouse itself.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from analytics_assets.lib.errors import WarehouseUnavailable

if TYPE_CHECKING:
    import duckdb

    from analytics_assets.settings import Settings


def read_copy_path(settings: Settings) -> Path:
    """Where readers find the warehouse (dev): WAREHOUSE_READ_PATH, else `<dir>/read/<name>`."""
    return settings.warehouse.read_path


def for_readers(settings: Settings) -> Settings:
    """`settings` as a reader outside a run uses them: the warehouse is the read copy (dev)."""
    if settings.is_prod:
        return settings
    return dataclasses.replace(
        settings, warehouse=dataclasses.replace(settings.warehouse, path=read_copy_path(settings))
    )


def publish_read_copy(settings: Settings, con: duckdb.DuckDBPyConnection | None = None) -> float:
    """Publish the read copy of the warehouse; returns the seconds it took (0 in prod).

    `con`: this process's open read-write connection to the warehouse, if it has one; without
    it the file is opened for writing here (waiting like an ingest does for another writer)."""
    if settings.is_prod:
        return 0.0
    from analytics_assets.lib.warehouse import turns
    from analytics_assets.lib.warehouse.duckdb import connect_waiting

    started = time.monotonic()
    source = Path(settings.warehouse.path)
    target = read_copy_path(settings)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.parent / f".{target.name}.{os.getpid()}.partial"
    own = con is None
    if own:
        con = connect_waiting(source, settings.warehouse.lock_timeout_seconds)
    try:
        con.execute("checkpoint")
        turns.copy_out(source, partial)
        os.replace(partial, target)
    finally:
        if own:
            con.close()
        partial.unlink(missing_ok=True)
    return time.monotonic() - started


def publish_or_warn(settings: Settings, log: Any, con: duckdb.DuckDBPyConnection | None = None):
    """Publish as a step does: the time goes to `log` (a Dagster logger); a failure is a warning,
    since the writer's commit stands and readers keep the previous copy until the next one."""
    from analytics_assets.lib.errors import WarehouseLocked

    try:
        seconds = publish_read_copy(settings, con)
    except (OSError, WarehouseLocked) as exc:
        log.warning(f"read copy not published: {exc}")
        return
    if seconds:
        log.info(f"read copy published in {seconds:.2f}s")


def connect_read_copy(settings: Settings) -> duckdb.DuckDBPyConnection:
    """A read-only connection to the read copy; it never waits for a writer."""
    import duckdb

    path = read_copy_path(settings)
    if not path.exists():
        raise WarehouseUnavailable(
            f"the warehouse's read copy {path} does not exist yet: it is published after the "
            "first ingest or dbt run"
        )
    return duckdb.connect(str(path), read_only=True)
