"""What the checks read from the warehouse: raw columns, the CDC watermark, mart rows, dbt audit
tables. DuckDB (dev) only for now; the SQL is plain enough to port to BigQuery with its adapter.

DuckDB lets one process write a file. The checks run in the run's own process after dbt (a
subprocess) has exited, so they open the file normally; a lock held by another process (a run
started elsewhere) is waited for briefly, then reported.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from analytics_assets.lib.feeds.base import COMMIT_TS, LOADED_AT, LSN, META_COLUMNS, parse_lsn
from analytics_assets.lib.warehouse.names import STATE_TABLE, q
from analytics_assets.settings import ConfigError, Settings

RAW_SCHEMA = "raw"
CDC_COLUMNS = frozenset({*META_COLUMNS, LOADED_AT})


class WarehouseUnavailable(RuntimeError):
    """The warehouse cannot be read right now (missing, locked); the message says why."""


@contextlib.contextmanager
def connect(settings: Settings, *, wait_seconds: float = 30.0) -> Iterator[Any]:
    if settings.is_prod:
        raise ConfigError(
            "The quality checks read the DuckDB warehouse; their BigQuery reader is not written "
            "yet (it comes with the BigQuery warehouse adapter)."
        )
    import duckdb

    path = Path(settings.warehouse_path)
    if not path.exists():
        raise WarehouseUnavailable(f"warehouse {path} does not exist yet: run the CDC ingest first")
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            con = duckdb.connect(str(path))
            break
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                raise WarehouseUnavailable(f"warehouse {path} cannot be opened: {exc}") from None
            time.sleep(0.5)
    try:
        yield con
    finally:
        con.close()


def relation_exists(con, schema: str, table: str) -> bool:
    return bool(
        con.execute(
            "select count(*) from information_schema.tables "
            "where table_schema = ? and table_name = ?",
            [schema, table],
        ).fetchone()[0]
    )


def raw_columns(con, table: str) -> dict[str, str] | None:
    """Source columns of `raw.<table>` (CDC metadata left out) and their DuckDB types, or None
    when the table does not exist."""
    rows = con.execute(
        "select column_name, data_type from information_schema.columns "
        "where table_schema = ? and table_name = ? order by ordinal_position",
        [RAW_SCHEMA, table],
    ).fetchall()
    if not rows:
        return None
    return {name: type_ for name, type_ in rows if name not in CDC_COLUMNS}


def normalize_type(con, type_sql: str) -> str:
    """DuckDB's own spelling of a type (`TIMESTAMPTZ` -> `TIMESTAMP WITH TIME ZONE`)."""
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
        f"select table_name, position_lsn, checkpoint, updated_at "  # noqa: S608 - fixed names
        f"from {q(RAW_SCHEMA)}.{q(STATE_TABLE)}"
    ).fetchall()
    return {r[0]: r for r in rows}


def last_confirmed(con, tables: Sequence[str]) -> dict[str, dt.datetime]:
    """Per table: when CDC last stored its position (every ingest does, heartbeat included)."""
    return {t: r[3] for t, r in cdc_state(con).items() if t in tables}


def cdc_watermark(con, tables: Sequence[str]) -> Watermark:
    """Read from `raw._cdc_state` and the change logs' `_commit_ts`.

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
            f"select max({COMMIT_TS}) from {q(RAW_SCHEMA)}.{q(log)} where {LSN} < ?",  # noqa: S608 - quoted identifiers
            [through],
        ).fetchone()[0]
        if value is not None and (newest is None or value > newest):
            newest = value
    return Watermark(newest, through, (), confirmed)


def fetch_dicts(con, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
    cur = con.execute(sql, list(params))
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
