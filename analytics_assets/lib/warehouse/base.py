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
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import pyarrow as pa
import pyarrow.compute as pc

from analytics_assets.lib.feeds.base import (
    COMMIT_TS,
    LSN,
    SEQ,
    UNCHANGED,
    ChangeBatch,
    DeadLetter,
    Position,
    TableChanges,
    TableState,
)
from analytics_assets.lib.warehouse.names import DEAD_LETTERS  # noqa: F401 - re-exported

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
DEAD_LETTER_ID = ("topic", "kafka_partition", "kafka_offset")


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


# Columns whose calendar date (in the partition time zone) names the business partition a change
# touches; the automation re-runs exactly those daily partitions.
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


@runtime_checkable
class Warehouse(Protocol):
    def ensure_tables(self, table: str, schema: pa.Schema, key: Sequence[str]) -> None:
        """Create `raw.<table>` and `raw.<table>_changes`, or add the columns the source added."""

    def state(self) -> dict[str, TableState]:
        """The stored per-table positions (the committed truth)."""

    def apply(
        self,
        batch: ChangeBatch,
        *,
        commit: bool = True,
        before_commit: Callable[[], None] | None = None,
    ) -> ApplyResult:
        """Apply the batch in one transaction. With `commit=False` the transaction stays open
        and the next `apply` continues it (a table's snapshot is applied all or nothing)."""

    def commit(self) -> None: ...

    def rollback(self) -> None: ...

    def close(self) -> None: ...


# -- Arrow-side steps both adapters take before any SQL ------------------------------------------


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


ROW_ID = "_row"  # a batch's row numbers, added for the re-sent events query (see below)


def numbered(rows: pa.Table) -> pa.Table:
    """`rows` with ROW_ID 0..n-1, so a query over them can name rows to drop."""
    return rows.append_column(ROW_ID, pa.array(range(rows.num_rows), pa.int64()))


def resent_since(rows: pa.Table) -> dt.datetime | None:
    """The oldest commit time in the batch: a re-sent event repeats its commit time, so the
    change log is compared from there on."""
    return pc.min(rows.column(COMMIT_TS)).as_py()


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
