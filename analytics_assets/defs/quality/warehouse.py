"""What the checks read from the warehouse: raw columns, the CDC watermark, mart rows, dbt audit
tables, through `connect(settings)` (lib/warehouse/reader.py): a DuckDB connection in dev, a
read-only `BigQueryReader` in prod (dataset `RAW_SCHEMA` for raw, `<BIGQUERY_DATASET>_<layer>` for
the dbt layers).

One SQL text serves both warehouses where the common subset allows (values as `?` parameters,
names from `relation()`, the catalog through `catalog_rows()`); where the dialects differ (type
names) both variants sit side by side in the function, switched on `dialect(con)`.

DuckDB lets one process write a file. The checks run in the run's own process after dbt (a
subprocess) has exited, so they open the file normally; a lock held by another process (a run
started elsewhere) is waited for briefly, then reported (WarehouseBusy, a WarehouseUnavailable).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from analytics_assets.lib.errors import WarehouseUnavailable
from analytics_assets.lib.feeds.base import COMMIT_TS, LOADED_AT, LSN, META_COLUMNS, parse_lsn
from analytics_assets.lib.warehouse.names import STATE_TABLE
from analytics_assets.lib.warehouse.reader import (
    catalog_rows,
    connect,
    dialect,
    fetch_dicts,
    relation,
    relation_exists,
)

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["WarehouseUnavailable", "connect", "fetch_dicts", "relation", "relation_exists"]

RAW_SCHEMA = "raw"
CDC_COLUMNS = frozenset({*META_COLUMNS, LOADED_AT})


def raw_columns(con, table: str) -> dict[str, str] | None:
    """Source columns of `raw.<table>` (CDC metadata left out) and their warehouse types, or None
    when the table does not exist."""
    rows = catalog_rows(
        con, RAW_SCHEMA, "columns", "column_name, data_type", table, "ordinal_position"
    )
    if not rows:
        return None
    return {name: type_ for name, type_ in rows if name not in CDC_COLUMNS}


def column_type(con, arrow_type: pa.DataType) -> str:
    """The raw column type CDC creates for an Arrow type, spelled as `raw_columns` reads it back:
    BigQuery's INFORMATION_SCHEMA gives the adapter's names (INT64, NUMERIC, ...); DuckDB's own
    spelling comes from DuckDB (`TIMESTAMPTZ` -> `TIMESTAMP WITH TIME ZONE`)."""
    if dialect(con) == "bigquery":
        from analytics_assets.lib.warehouse.bigquery import column_type as bigquery_type

        return bigquery_type(arrow_type)
    from analytics_assets.lib.warehouse.statements import column_type as duckdb_type

    type_sql = duckdb_type(arrow_type)
    return con.execute(f"select typeof(cast(null as {type_sql}))").fetchone()[0]  # noqa: S608 - a type name the project derives


@dataclass(frozen=True)
class Watermark:
    """The source commit time up to which every captured table has been applied to raw."""

    commit_ts: dt.datetime | None
    applied_through_lsn: int | None  # every change committed before this position is applied
    missing_tables: tuple[str, ...]  # captured tables CDC has not applied yet
    last_confirmed: dict[str, dt.datetime]  # per table: when CDC last stored its position

    @property
    def known(self) -> bool:
        return self.commit_ts is not None and not self.missing_tables


def _through(position_lsn: int, checkpoint: str) -> int:
    """The feed position before which this table has every change: the slot checkpoint (end LSN
    of the last transaction read completely), else just past the applied position."""
    try:
        return parse_lsn(checkpoint)
    except (ValueError, AttributeError):
        return position_lsn + 1


def cdc_state(con) -> dict[str, tuple]:
    """`raw._cdc_state` by table: (table, position_lsn, checkpoint, updated_at)."""
    if not relation_exists(con, RAW_SCHEMA, STATE_TABLE):
        return {}
    rows = con.execute(
        "select table_name, position_lsn, checkpoint, updated_at "  # noqa: S608 - quoted names
        f"from {relation(con, RAW_SCHEMA, STATE_TABLE)}"
    ).fetchall()
    return {r[0]: r for r in rows}


def last_confirmed(con, tables: Sequence[str]) -> dict[str, dt.datetime]:
    """Per table: when CDC last stored its position (every ingest does, heartbeat included)."""
    return {t: r[3] for t, r in cdc_state(con).items() if t in tables}


def warehouse_watermark(con, tables: Sequence[str]) -> Watermark:
    """The CDC watermark as the warehouse holds it (what the checks judge against), read from
    `raw._cdc_state` and the change logs' `_commit_ts`; `automation.logic.watermark_from_lag` is
    the sensors' estimate of it from the source's lag instead.

    Every table is applied through its checkpoint, so every change with a commit position below
    the smallest checkpoint is applied everywhere; the newest commit time among those changes is
    the watermark. (A table that has not changed for days does not hold it back: its checkpoint
    moves with every ingest.)
    """
    state = {t: r for t, r in cdc_state(con).items() if t in tables}
    missing = tuple(t for t in tables if t not in state)
    confirmed = {t: r[3] for t, r in state.items()}
    if missing or not state:
        return Watermark(None, None, missing, confirmed)
    through = min(_through(r[1], r[2]) for r in state.values())
    newest = None
    for table in tables:
        log = f"{table}_changes"
        if not relation_exists(con, RAW_SCHEMA, log):
            continue
        value = con.execute(
            f"select max({COMMIT_TS}) from {relation(con, RAW_SCHEMA, log)} where {LSN} < ?",  # noqa: S608 - quoted identifiers
            [through],
        ).fetchone()[0]
        if value is not None and (newest is None or value > newest):
            newest = value
    return Watermark(newest, through, (), confirmed)
