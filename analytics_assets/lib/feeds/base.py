"""The feed contract: what every change feed (logical replication slot, Debezium on Kafka) hands
to the warehouse, and what the warehouse hands back.

Positions
---------
Every change carries a `Position(lsn, seq)`, totally ordered per table:

- `lsn`: the commit position of the change's transaction (slot: the commit LSN from Begin;
  Kafka: a position derived from the topic offset). All changes of one transaction share it.
- `seq`: the change's place inside its transaction (slot: 2 x the ordinal of the change message;
  the delete of the old key that a primary-key update emits takes the odd number before it).

Snapshot rows carry `lsn = consistent point - 1` and `seq` = their ordinal: older than every
streamed change (those commit at or after the consistent point) and unique per table.

The warehouse keeps, per table, the position it has applied through; changes at or before it are
skipped, so a replay after a crash applies nothing twice. Feeds also hand out an opaque
per-table `checkpoint` (slot: the end LSN of the last transaction wholly read; Kafka: committed
offsets as JSON), stored with the position in the same warehouse transaction and given back to
`Feed.ack` after that transaction commits.

Dead letters: a record the feed cannot take (Kafka: not JSON, truncated, unknown op, missing
image, another table's record; both feeds: a value the platform cannot hold, such as text that is
not UTF-8 from a SQL_ASCII database) is not applied; it travels in `ChangeBatch.dead_letters` and
the warehouse writes it to `raw._dead_letters` in the batch's transaction, once per record, while
the table's position moves past it. Values a typed column cannot hold but the platform can
(±infinity, BC, NaN...) are no dead letters: they follow `analytics_assets.lib.values`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, runtime_checkable

if TYPE_CHECKING:
    import pyarrow as pa


# Metadata columns every row image carries (besides the source columns).
LSN = "_lsn"
SEQ = "_seq"
OP = "_op"  # 'c' insert, 'u' update, 'd' delete, 'r' snapshot read ('t' only in the change log)
IS_DELETED = "_is_deleted"
COMMIT_TS = "_commit_ts"
UNCHANGED = "_unchanged_cols"  # columns this change does not carry (unchanged TOAST, key-only)
LOADED_AT = "_loaded_at"  # set by the warehouse
# Kafka feed only (the slot feed's rows have no such column; the warehouse stores NULL): the
# Debezium event's `source.lsn`. A connector that restarts re-sends the events after its last
# committed source offset at new Kafka offsets, so the feed's offset-derived positions cannot
# tell them apart; (key, `_source_lsn`, `_op`) can, and the warehouse drops such a re-sent event
# (neither raw nor the change log sees it twice).
SOURCE_LSN = "_source_lsn"
META_COLUMNS = (LSN, SEQ, OP, IS_DELETED, COMMIT_TS, UNCHANGED, SOURCE_LSN)

OPS = ("c", "u", "d", "t", "r")


def meta_schema_fields() -> list[pa.Field]:
    import pyarrow as pa  # here, not at import: the code location loads without pyarrow

    return [
        pa.field(LSN, pa.int64(), nullable=False),
        pa.field(SEQ, pa.int64(), nullable=False),
        pa.field(OP, pa.string(), nullable=False),
        pa.field(IS_DELETED, pa.bool_(), nullable=False),
        pa.field(COMMIT_TS, pa.timestamp("us", tz="UTC")),
        pa.field(UNCHANGED, pa.list_(pa.string())),
    ]


class Position(NamedTuple):
    lsn: int
    seq: int

    def __str__(self) -> str:
        return f"{format_lsn(self.lsn)}#{self.seq}"


def format_lsn(lsn: int) -> str:
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def parse_lsn(text: str) -> int:
    hi, lo = text.split("/")
    return (int(hi, 16) << 32) | int(lo, 16)


@dataclass
class TableChanges:
    """One table's changes in a batch.

    `rows` holds source columns + META_COLUMNS in position order; a table may appear with no
    rows (the feed read through `end` and found nothing for it) so its position still advances.
    """

    table: str
    rows: pa.Table
    key: tuple[str, ...]
    end: Position  # the feed has read this table through here
    checkpoint: str  # opaque, for Feed.ack once applied
    truncates: list[Position] = field(default_factory=list)
    # Kafka feed: each truncate's `source.lsn` (see SOURCE_LSN), so a re-sent one is dropped
    truncate_source_lsns: dict[Position, int] = field(default_factory=dict)

    @classmethod
    def none(cls, table: str, key: tuple[str, ...], end: Position, checkpoint: str) -> TableChanges:
        """The table read through `end` with nothing found for it: no rows, its position moves."""
        import pyarrow as pa  # as in meta_schema_fields: the code location loads without it

        return cls(table, pa.schema(meta_schema_fields()).empty_table(), key, end, checkpoint)

    @property
    def num_changes(self) -> int:
        return self.rows.num_rows + len(self.truncates)

    def joined(self, later: TableChanges) -> TableChanges | None:
        """These changes and `later`'s (read right after them) as one, or None when their rows
        differ in columns. A side with no rows takes none of its columns along."""
        import pyarrow as pa  # as in none()

        if not later.rows.num_rows:
            rows = self.rows
        elif not self.rows.num_rows:
            rows = later.rows
        elif self.rows.schema.equals(later.rows.schema):
            rows = pa.concat_tables([self.rows, later.rows])
        else:
            return None
        return TableChanges(
            self.table,
            rows,
            later.key or self.key,
            later.end,
            later.checkpoint,
            self.truncates + later.truncates,
            {**self.truncate_source_lsns, **later.truncate_source_lsns},
        )

    def counts_by_op(self) -> dict[str, int]:
        counts = {op: 0 for op in OPS}
        if self.rows.num_rows:
            vc = self.rows.column(OP).value_counts()
            for item in vc.to_pylist():
                counts[item["values"]] += item["counts"]
        counts["t"] += len(self.truncates)
        return counts


def least(a, b):
    """The smaller of `a` and `b` that is set (None when neither is), as SQL's least()."""
    return b if a is None else a if b is None else min(a, b)


def greatest(a, b):
    """The larger of `a` and `b` that is set (None when neither is), as SQL's greatest()."""
    return b if a is None else a if b is None else max(a, b)


DEAD_LETTER_VALUE_MAX = 16_384  # bytes of a dead letter's record value kept (its size is kept too)
DEAD_LETTER_KEY_MAX = 1_024
DEAD_LETTER_REASON_MAX = 300


@dataclass(frozen=True)
class DeadLetter:
    """A record that was read but could not be applied; its place in the feed identifies it."""

    topic: str
    partition: int
    offset: int
    table: str | None  # the captured table whose position moved past it
    reason: str  # short; names no values beyond what the record itself holds
    value: bytes | None  # the record value, at most DEAD_LETTER_VALUE_MAX bytes
    value_size: int  # the full value's length
    key: bytes | None = None  # at most DEAD_LETTER_KEY_MAX bytes

    @classmethod
    def of(
        cls,
        topic: str,
        partition: int,
        offset: int,
        table: str | None,
        reason: str,
        value: bytes | None,
        key: bytes | None = None,
    ) -> DeadLetter:
        """Bounded: the reason, value and key are cut to their maximum lengths."""
        return cls(
            topic,
            int(partition),
            int(offset),
            table,
            reason[:DEAD_LETTER_REASON_MAX],
            None if value is None else bytes(value[:DEAD_LETTER_VALUE_MAX]),
            0 if value is None else len(value),
            None if key is None else bytes(key[:DEAD_LETTER_KEY_MAX]),
        )


@dataclass
class ChangeBatch:
    tables: dict[str, TableChanges]
    first: Position | None  # first change position read in this batch (any table)
    last: Position | None  # last change position read
    min_commit_ts: dt.datetime | None
    max_commit_ts: dt.datetime | None
    snapshot: bool = False  # rows come from the initial snapshot
    decode_seconds: float = 0.0
    dead_letters: list[DeadLetter] = field(default_factory=list)

    @property
    def num_changes(self) -> int:
        return sum(t.num_changes for t in self.tables.values())

    def joined(self, later: ChangeBatch) -> ChangeBatch | None:
        """This batch and `later` (read right after it) as one batch, or None when they cannot
        be one: a table whose rows differ in columns between them (its relation changed), or a
        snapshot batch beside a streamed one."""
        if self.snapshot != later.snapshot:
            return None
        tables: dict[str, TableChanges] = {}
        for name in self.tables.keys() | later.tables.keys():
            a, b = self.tables.get(name), later.tables.get(name)
            if a is None or b is None:
                tables[name] = a or b
                continue
            joined = a.joined(b)
            if joined is None:
                return None
            tables[name] = joined
        return ChangeBatch(
            tables,
            least(self.first, later.first),
            greatest(self.last, later.last),
            least(self.min_commit_ts, later.min_commit_ts),
            greatest(self.max_commit_ts, later.max_commit_ts),
            self.snapshot,
            self.decode_seconds + later.decode_seconds,
            self.dead_letters + later.dead_letters,
        )

    def only(self, tables: Sequence[str]) -> ChangeBatch:
        keep = {t: c for t, c in self.tables.items() if t in set(tables)}
        return ChangeBatch(
            keep,
            self.first,
            self.last,
            self.min_commit_ts,
            self.max_commit_ts,
            self.snapshot,
            self.decode_seconds,
            [d for d in self.dead_letters if d.table in keep],
        )


@dataclass(frozen=True)
class TableState:
    """What the warehouse has applied for one table (stored in its `_cdc_state`)."""

    table: str
    position: Position
    checkpoint: str
    updated_at: dt.datetime | None = None


PENDING_SAMPLED_LABEL = "in the first part of the backlog only (a lower bound)"


@dataclass(frozen=True)
class TableLag:
    pending_changes: int | None  # None when the feed cannot count right now (e.g. slot busy)
    position_lag_bytes: int | None  # slot: WAL bytes; Kafka: offset lag
    seconds_behind: float  # now - commit time of the oldest unapplied change (0 if none)
    oldest_commit_ts: dt.datetime | None
    # True when the feed read only the first part of the backlog (slot: the lag window): the
    # count is then a lower bound, and a table with none found has none before that part's end
    pending_sampled: bool = False
    # where the reading starts (slot: the table's checkpoint, else the slot's confirmed LSN): an
    # ingest moves it, so two readings of the same count are told apart by it
    measured_from: str | None = None
    # the source table's write counters (slot: its statistics' inserts, updates, deletes, live
    # and dead rows): unchanged since the last ingest, a table whose window found nothing of it
    # has nothing past the window either (the WAL there is other tables' or other databases')
    activity: str | None = None

    @property
    def seconds_known(self) -> bool:
        """False when the reading cannot tell how old the oldest pending change is: the pending
        count is unknown, or a bounded reading found none of the table's commits in its window
        (a first transaction larger than the window, say); `seconds_behind` is then 0."""
        unseen = self.pending_sampled and self.oldest_commit_ts is None
        return self.pending_changes is not None and not unseen

    def as_metadata(self, prefix: str = "lag") -> dict[str, Any]:
        out = {
            f"{prefix}_pending_changes": self.pending_changes,
            f"{prefix}_position_bytes": self.position_lag_bytes,
        }
        if self.seconds_known:
            out[f"{prefix}_seconds"] = round(self.seconds_behind, 3)
        if self.pending_sampled:
            out[f"{prefix}_pending_changes_counted"] = PENDING_SAMPLED_LABEL
        return out


@runtime_checkable
class Feed(Protocol):
    """A source of ordered row changes. One reader at a time.

    Lifecycle: `open(tables, state)` -> [`snapshot(...)`] -> `read_batch()`... with `ack()` after
    each warehouse commit -> `close()`.
    """

    kind: str  # "slot", "kafka"
    captured_tables: tuple[str, ...]

    def open(self, tables: Sequence[str], state: Mapping[str, TableState]) -> None:
        """Start a read session for `tables`, resuming after the warehouse's `state`.

        The feed first acknowledges `state` (the warehouse may be ahead of the feed after a crash
        between commit and ack), then reads from there."""

    def needs_snapshot(self, tables: Sequence[str], state: Mapping[str, TableState]) -> list[str]:
        """Tables that have no applied state yet (or whose stream cannot resume)."""

    def snapshot(
        self, tables: Sequence[str], max_rows: int, resync: Sequence[str] = ()
    ) -> Iterator[ChangeBatch]:
        """Rows of `tables` as of one consistent point, op 'r', in bounded batches, one table
        after the other; every change streamed afterwards for those tables is newer than these
        rows. Tables in `resync` had state whose stream was lost: their first batch carries a
        truncate just before the snapshot, so rows deleted meanwhile end up deleted."""

    def read_batch(self, max_changes: int) -> ChangeBatch | None:
        """The next changes (about `max_changes`, in commit order, possibly part of one large
        transaction) for the open tables, or None when caught up."""

    def ack(self, state: Mapping[str, TableState]) -> None:
        """The warehouse committed `state`: the feed may forget everything up to it. Idempotent
        and never moves backwards."""

    def lag(self, state: Mapping[str, TableState] | None = None) -> dict[str, TableLag]:
        """Lag of every captured table, in one round trip to the source."""

    def slot_status(self) -> dict[str, Any]:
        """Health of the feed's server-side resource (slot, consumer group)."""

    def heartbeat(self) -> None:
        """Write a no-op change so an idle source still moves the feed position forward."""

    def close(self) -> None:
        """End the read session (stops a running read; applies acks it had to defer)."""
