"""The warehouse contract: apply a `ChangeBatch` to `raw.<table>` + `raw.<table>_changes` and
record the feed position, all in one warehouse transaction.

Semantics every implementation keeps (DuckDB and BigQuery):

- `raw.<table>`: one row per primary key with the newest image: source columns + `_lsn, _seq,
  _op, _is_deleted, _commit_ts, _loaded_at`. A change is applied only if its (lsn, seq) is newer
  than the row's; deletes keep the row with `_is_deleted = true`; a truncate marks every row older
  than it deleted; a column listed in `_unchanged_cols` keeps its previous value.
- `raw.<table>_changes`: every change (op, position, commit time, image), once: changes at or
  before the table's stored position are skipped, so replays add nothing.
- `raw._cdc_state`: per table, the position applied through and the feed's checkpoint, written
  in the same transaction. After a restart it is the truth the feed resumes from.
- `raw._dead_letters`: the batch's records the feed could not decode (`ChangeBatch.dead_letters`:
  topic, partition, offset, table, reason, bounded value and key, first-seen time), written in
  the same transaction and at most once per (topic, partition, offset), so a replay adds none.

One algorithm (`Warehouse.apply`) runs every statement of `statements.py`; an adapter is an
executor: how it loads a batch's Arrow rows, runs a statement in the open transaction, binds
parameters and commits (`duckdb.py`: registered views, one DuckDB transaction; `bigquery.py`:
load jobs, one transaction script).
"""

from __future__ import annotations

import datetime as dt
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from analytics_assets.lib.feeds.base import (
    COMMIT_TS,
    LSN,
    META_COLUMNS,
    OP,
    SEQ,
    SOURCE_LSN,
    UNCHANGED,
    ChangeBatch,
    DeadLetter,
    Position,
    TableChanges,
    TableState,
    greatest,
    least,
)
from analytics_assets.lib.partitions import BUCKET_US, business_dates
from analytics_assets.lib.warehouse import statements as sql
from analytics_assets.lib.warehouse.names import DEAD_LETTERS, RAW_SUFFIX
from analytics_assets.lib.warehouse.statements import BATCH, DEAD, ROW_ID, STAGE
from analytics_assets.settings import validate_identifier

# The dead-letter columns (besides `first_seen_at`, set by the warehouse), as Arrow types.
DEAD_LETTER_SCHEMA = pa.schema(
    [
        pa.field("topic", pa.string(), nullable=False),
        pa.field("kafka_partition", pa.int64(), nullable=False),
        pa.field("kafka_offset", pa.int64(), nullable=False),
        pa.field("table_name", pa.string()),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("record_key", pa.binary()),
        pa.field("record_value", pa.binary()),
        pa.field("value_bytes", pa.int64(), nullable=False),
    ]
)

# Columns whose business date (lib/partitions.py) names the daily partition a change touches;
# the automation re-runs exactly those partitions.
DEFAULT_BUSINESS_DATE_COLUMNS: Mapping[str, str] = {
    "orders": "created_at",
    "order_items": "created_at",
}


@dataclass
class TableApplyResult:
    table: str
    changes_by_op: dict[str, int] = field(default_factory=dict)
    skipped: int = 0  # at or before the stored position (replays)
    first: Position | None = None
    last: Position | None = None
    business_dates: set[dt.date] = field(default_factory=set)

    @property
    def applied(self) -> int:
        return sum(self.changes_by_op.values())


@dataclass
class ApplyResult:
    tables: dict[str, TableApplyResult]
    seconds: float = 0.0
    committed: bool = True

    @property
    def applied(self) -> int:
        return sum(t.applied for t in self.tables.values())


class Warehouse(ABC):
    """The apply algorithm; subclasses supply the executor methods (the abstract ones below)."""

    def __init__(
        self,
        schema: str,
        *,
        business_date_columns: Mapping[str, str] | None,
        timezone: str,
        feed_kind: str,
    ):
        self.schema = schema
        self.business_date_columns = dict(
            DEFAULT_BUSINESS_DATE_COLUMNS
            if business_date_columns is None
            else business_date_columns
        )
        self.timezone = timezone
        self.feed_kind = feed_kind
        self._in_txn = False
        self._state: dict[str, TableState] | None = None
        self._pending_state: dict[str, TableState] = {}
        self._columns: dict[str, list[str]] = {}
        self._touched: set[str] = set()  # tables written in the open transaction
        self._truncated: set[tuple[str, int | None]] = set()  # (table, source lsn), this txn
        self._bound: dict[str, pa.Table] = {}

    # -- the executor ---------------------------------------------------------------------------

    @abstractmethod
    def _begin(self) -> None: ...

    @abstractmethod
    def _commit_transaction(self) -> None: ...

    @abstractmethod
    def _rollback_transaction(self) -> None: ...

    @abstractmethod
    def _ddl(self, statement: str, cluster_by: Sequence[str] = ()) -> None:
        """Create or alter a table (`cluster_by`: the columns its reads select on)."""

    @abstractmethod
    def _execute(self, statement: str, params: Mapping[str, Any]) -> None:
        """Run a statement in the open transaction."""

    @abstractmethod
    def _query(self, statement: str, params: Mapping[str, Any]) -> list[tuple]:
        """Rows of a query, now (what the open transaction has not run yet may be unseen)."""

    @abstractmethod
    def _register(self, name: str, rows: pa.Table, table: str) -> None:
        """Make `rows` readable as the placeholder relation `name` (BATCH, DEAD) for `table`."""

    @abstractmethod
    def _release(self, name: str) -> None:
        """Done with the relation `name` (a registered one, or STAGE)."""

    @abstractmethod
    def _read_columns(self, table: str) -> list[str]:
        """The table's column names ([] when it does not exist)."""

    @abstractmethod
    def close(self) -> None: ...

    def _column_name(self, name: str) -> str:
        """A source column name, refused if this warehouse cannot hold it."""
        return name

    def _before_images(self, table: str, statement: str, timestamp: bool) -> Future:
        """`before_sql`'s values, read before the MERGE rewrites the rows: 15-minute buckets
        (an int64 array) for a timestamp column, else a set of dates."""
        done: Future = Future()
        found = [r[0] for r in self._query(statement, {}) if r[0] is not None]
        done.set_result(np.array(found, np.int64) if timestamp else set(found))
        return done

    def _bind(self, name: str, rows: pa.Table, table: str) -> None:
        if self._bound.get(name) is not rows:
            self._register(name, rows, table)
            self._bound[name] = rows

    def _unbind(self, name: str) -> None:
        if self._bound.pop(name, None) is not None:
            self._release(name)

    # -- tables and positions -------------------------------------------------------------------

    def _existing_columns(self, table: str) -> list[str]:
        if table not in self._columns:
            found = self._read_columns(table)
            if not found:
                return []
            self._columns[table] = found
        return self._columns[table]

    def ensure_tables(self, table: str, schema: pa.Schema, key: Sequence[str]) -> None:
        """Create `raw.<table>` and `raw.<table>_changes`, or add the columns the source added."""
        validate_identifier(table, "table")
        source = [
            (self._column_name(f.name), sql.column_type(f.type))
            for f in schema
            if f.name not in META_COLUMNS
        ]
        existing = self._existing_columns(table)
        if not existing:
            self._ddl(sql.create_table_sql(self.schema, table, [*source, *sql.RAW_META]), key)
            changes = [*source, *sql.CHANGES_META]
            self._ddl(sql.create_table_sql(self.schema, f"{table}_changes", changes), (LSN, SEQ))
        else:
            added = [(c, t) for c, t in source if c not in existing]
            if SOURCE_LSN not in existing:  # a warehouse from before SOURCE_LSN was stored
                added.append((SOURCE_LSN, "BIGINT"))
            if not added:
                return
            for c, t in added:
                self._ddl(sql.add_column_sql(self.schema, table, c, t))
                self._ddl(sql.add_column_sql(self.schema, table + "_changes", c, t))
        self._touched.add(table)
        self._columns.pop(table, None)
        self._columns.pop(table + "_changes", None)

    def state(self) -> dict[str, TableState]:
        """The stored per-table positions (the committed truth; cached: this adapter is the
        only writer of them)."""
        if self._state is None:
            rows = self._query(sql.read_state_sql(self.schema), {})
            self._state = {
                r[0]: TableState(r[0], Position(int(r[1]), int(r[2])), r[3], r[4]) for r in rows
            }
        return dict(self._state)

    # -- the transaction ------------------------------------------------------------------------

    def commit(self) -> None:
        if not self._in_txn:
            return
        stored = dict(self._pending_state)
        if stored:
            params: dict[str, Any] = {"feed": self.feed_kind}
            for i, st in enumerate(stored.values()):
                params |= {f"table_name_{i}": st.table, f"checkpoint_{i}": st.checkpoint}
                params |= {f"position_lsn_{i}": int(st.position.lsn)}
                params |= {f"position_seq_{i}": int(st.position.seq)}
                params |= {f"updated_at_{i}": st.updated_at}
            self._execute(sql.store_state_sql(self.schema, len(stored)), params)
        self._commit_transaction()
        self._in_txn = False
        self._forget_transaction()
        if self._state is not None:
            self._state.update(stored)

    def rollback(self) -> None:
        self._forget_transaction()
        if self._in_txn:
            self._in_txn = False
            self._rollback_transaction()

    def _forget_transaction(self) -> None:
        self._pending_state.clear()
        self._touched.clear()
        self._truncated.clear()
        self._bound.clear()

    # -- apply ----------------------------------------------------------------------------------

    def apply(
        self,
        batch: ChangeBatch,
        *,
        commit: bool = True,
        before_commit: Callable[[], None] | None = None,
    ) -> ApplyResult:
        """Apply the batch in one transaction. With `commit=False` the transaction stays open
        and the next `apply` continues it (a table's snapshot is applied all or nothing)."""
        t0 = time.perf_counter()
        now = dt.datetime.now(dt.UTC)
        if not self._in_txn:
            self._begin()
            self._in_txn = True
        try:
            state = self.state()
            state.update(self._pending_state)
            results = {}
            for table, tc in batch.tables.items():
                results[table] = self._apply_table(tc, state.get(table), now)
            if batch.dead_letters:
                self._store_dead_letters(batch.dead_letters, now)
            if before_commit is not None:
                before_commit()
            if commit:
                self.commit()
        except BaseException:
            self.rollback()
            raise
        return ApplyResult(results, time.perf_counter() - t0, committed=commit)

    def _apply_table(
        self, tc: TableChanges, stored: TableState | None, now: dt.datetime
    ) -> TableApplyResult:
        table = validate_identifier(tc.table, "table")
        result = TableApplyResult(table)
        stored_pos = Position(*stored.position) if stored else None
        if stored_pos is not None and tc.end <= stored_pos:
            result.skipped = tc.num_changes
            return result
        rows = self._without_idle_companions(table, tc.rows)
        columns = [f.name for f in rows.schema if f.name not in META_COLUMNS]
        if columns:
            self.ensure_tables(table, rows.schema, tc.key)
        if rows.num_rows and columns:
            if not tc.key:
                raise ValueError(f"table {table} has no primary key: it cannot be merged")
            try:
                fresh = rows_after(rows, stored_pos)
                if fresh.num_rows and SOURCE_LSN in fresh.column_names:
                    fresh = self._without_resent(table, fresh, tc.key)
                result.skipped = rows.num_rows - fresh.num_rows
                if fresh.num_rows:
                    self._merge_rows(table, fresh, columns, tc.key, result, now)
            finally:
                self._unbind(BATCH)
        for pos in tc.truncates:
            if stored_pos is not None and pos <= stored_pos:
                result.skipped += 1
            elif self._existing_columns(table):  # else nothing was ever loaded for it
                self._truncate(tc, pos, result, now)
        self._pending_state[table] = TableState(table, tc.end, tc.checkpoint, now)
        return result

    def _without_idle_companions(self, table: str, rows: pa.Table) -> pa.Table:
        """`rows` less the `<column>__raw` companions (lib/values.py) that hold no value in this
        batch and that the table does not have yet: a companion column is created with the
        first value that needs it, so a table whose values all fit their types carries none.
        Once the table has it, it stays in every batch (an update must clear it)."""
        names = rows.column_names
        idle = [
            c
            for c in names
            if c.endswith(RAW_SUFFIX)
            and c[: -len(RAW_SUFFIX)] in names
            and rows.column(c).null_count == rows.num_rows
        ]
        if idle:
            existing = set(self._existing_columns(table))
            idle = [c for c in idle if c not in existing]
        return rows.drop_columns(idle) if idle else rows

    def _without_resent(self, table: str, rows: pa.Table, key: Sequence[str]) -> pa.Table:
        """The rows (numbered) without the events applied before (`resent_rows_sql`), bound
        as BATCH."""
        rows = numbered(rows)
        self._bind(BATCH, rows, table)
        if not self._existing_columns(table + "_changes"):
            return rows
        since = pc.min(rows.column(COMMIT_TS)).as_py()
        found = self._query(
            sql.resent_rows_sql(self.schema, table, key, since is not None),
            {"since": since} if since is not None else {},
        )
        if not found:
            return rows
        rows = without_rows(rows, [int(r[0]) for r in found])
        if rows.num_rows:
            self._bind(BATCH, rows, table)
        return rows

    def _merge_rows(self, table, rows, columns, key, result, now) -> None:
        if SOURCE_LSN in rows.column_names:  # stored like a column (raw and change log)
            columns = [*columns, SOURCE_LSN]
        lsn = rows.column(LSN).to_numpy()
        seq = rows.column(SEQ).to_numpy()
        lo, hi = int(np.argmin(lsn)), int(np.argmax(lsn))
        first_lsn, last_lsn = int(lsn[lo]), int(lsn[hi])
        result.first = Position(first_lsn, int(seq[lsn == first_lsn].min()))
        result.last = Position(last_lsn, int(seq[lsn == last_lsn].max()))
        for item in rows.column(OP).value_counts().to_pylist():
            result.changes_by_op[item["values"]] = item["counts"]
        unchanged = [c for c in unchanged_columns(rows) if c in columns]
        self._bind(BATCH, rows, table)
        date_col = self.business_date_columns.get(table)
        before = None
        is_ts = date_col in columns and pa.types.is_timestamp(rows.schema.field(date_col).type)
        if is_ts or (date_col in columns and pa.types.is_date(rows.schema.field(date_col).type)):
            statement = sql.before_sql(self.schema, table, date_col, key, is_ts)
            before = self._before_images(table, statement, is_ts)
        shape = sql.TableChangesShape(self.schema, table, columns, key, unchanged)
        source = BATCH
        if unchanged:  # values to carry forward: materialize the staged rows once
            self._execute(sql.stage_sql(shape), {})
            source = STAGE
        try:
            self._execute(
                sql.changes_insert_sql(shape, source), {"loaded_at": now, "first_lsn": first_lsn}
            )
            unique = len(key) == 1 and pc.count_distinct(rows.column(key[0])).as_py() == len(rows)
            self._execute(sql.merge_sql(shape, source, unique), {"loaded_at": now})
            self._touched.add(table)
            if before is not None:
                result.business_dates = self._business_dates(rows.column(date_col), before)
        finally:
            if unchanged:
                self._release(STAGE)

    def _business_dates(self, after: pa.ChunkedArray, before: Future) -> set[dt.date]:
        """Dates of the after images (from Arrow) and of the rows they replace (`before`).
        Timestamps are bucketed by 15 minutes and only the few distinct buckets are converted
        to dates (lib/partitions.py)."""
        if pa.types.is_date(after.type):
            return {d for d in pc.unique(after).to_pylist() if d is not None} | before.result()
        buckets = np.unique(np.concatenate([after_buckets(after), before.result()]))
        return business_dates(buckets * BUCKET_US, self.timezone)

    def _truncate(self, tc: TableChanges, pos: Position, result, now: dt.datetime) -> None:
        table, source_lsn = tc.table, tc.truncate_source_lsns.get(pos)
        params = {"lsn": int(pos.lsn), "seq": int(pos.seq), "loaded_at": now}
        params["commit_ts"] = truncate_commit_ts(tc, pos)
        resent = sql.truncate_resent_sql(self.schema, table)
        if source_lsn is not None and (
            (table, source_lsn) in self._truncated
            or self._query(resent, {"source_lsn": source_lsn})[0][0]
        ):
            result.skipped += 1  # re-sent by a restarted Debezium connector
            return
        self._truncated.add((table, source_lsn))
        self._execute(sql.truncate_sql(self.schema, table), params)
        self._execute(
            sql.truncate_change_sql(self.schema, table), {**params, "source_lsn": source_lsn}
        )
        self._touched.add(table)
        result.changes_by_op["t"] = result.changes_by_op.get("t", 0) + 1
        result.first = least(result.first, pos)
        result.last = greatest(result.last, pos)

    def _store_dead_letters(self, dead: Sequence[DeadLetter], now: dt.datetime) -> None:
        if DEAD_LETTERS not in self._columns:
            self._ddl(sql.create_dead_letters_sql(self.schema))
            self._columns[DEAD_LETTERS] = [*DEAD_LETTER_SCHEMA.names, "first_seen_at"]
        self._bind(DEAD, dead_letter_rows(dead), DEAD_LETTERS)
        try:
            self._execute(sql.dead_letters_insert_sql(self.schema), {"loaded_at": now})
        finally:
            self._unbind(DEAD)


# -- Arrow-side steps before any SQL -------------------------------------------------------------


def rows_after(rows: pa.Table, pos: Position | None) -> pa.Table:
    """Rows strictly after `pos` (replays of applied changes are dropped before any SQL)."""
    if pos is None:
        return rows
    lsn, seq = rows.column(LSN), rows.column(SEQ)
    first = pc.min(lsn).as_py()
    if first is None or first > pos.lsn:
        return rows  # the usual case: nothing replayed, no filtered copy of every column
    mask = pc.or_(
        pc.greater(lsn, pos.lsn), pc.and_(pc.equal(lsn, pos.lsn), pc.greater(seq, pos.seq))
    )
    return rows.filter(mask)


def unchanged_columns(rows: pa.Table) -> list[str]:
    """Columns some change in `rows` does not carry (unchanged TOAST, key-only images)."""
    if UNCHANGED not in rows.column_names:
        return []
    col = rows.column(UNCHANGED)
    if col.null_count == len(col):
        return []
    return sorted(set(pc.unique(pc.list_flatten(col)).to_pylist()) - {None})


def numbered(rows: pa.Table) -> pa.Table:
    """`rows` with ROW_ID 0..n-1, so a query over them can name rows to drop."""
    return rows.append_column(ROW_ID, pa.array(range(rows.num_rows), pa.int64()))


def without_rows(rows: pa.Table, row_numbers: Sequence[int]) -> pa.Table:
    """`rows` less the rows at `row_numbers` (events applied before, re-sent by Debezium)."""
    if not len(row_numbers):
        return rows
    drop = pa.array(row_numbers, pa.int64())
    keep = pc.invert(pc.is_in(pa.array(range(rows.num_rows), pa.int64()), value_set=drop))
    return rows.filter(keep)


def truncate_commit_ts(tc: TableChanges, pos: Position) -> dt.datetime | None:
    """Commit time of a truncate: that of a row change of the same transaction, if any."""
    if tc.rows.num_rows == 0 or COMMIT_TS not in tc.rows.column_names:
        return None
    same = tc.rows.column(COMMIT_TS).filter(pc.equal(tc.rows.column(LSN), pos.lsn))
    return same[0].as_py() if len(same) else None


def after_buckets(col: pa.ChunkedArray) -> np.ndarray:
    """The distinct 15-minute buckets of a timestamp column's values (a naive one read as UTC)."""
    us = pc.cast(pc.cast(pc.drop_null(col), pa.timestamp("us", col.type.tz)), pa.int64())
    return np.unique(us.to_numpy() // BUCKET_US) if len(us) else np.zeros(0, np.int64)


def dead_letter_rows(dead: Sequence[DeadLetter]) -> pa.Table:
    """The dead letters as one Arrow table (one row per distinct record)."""
    seen: dict[tuple[str, int, int], DeadLetter] = {}
    for d in dead:
        seen.setdefault((d.topic, d.partition, d.offset), d)
    rows = list(seen.values())
    return pa.table(
        [
            [d.topic for d in rows],
            [d.partition for d in rows],
            [d.offset for d in rows],
            [d.table for d in rows],
            [d.reason for d in rows],
            [d.key for d in rows],
            [d.value for d in rows],
            [d.value_size for d in rows],
        ],
        schema=DEAD_LETTER_SCHEMA,
    )
