"""The logical replication slot feed: a publication + a `pgoutput` slot the project owns.

Transport: `COPY (SELECT data FROM pg_logical_slot_peek_binary_changes(...)) TO STDOUT (FORMAT
binary)` hands pgoutput bytes to Python several times faster than the streaming replication
protocol, whose walsender sends and flushes every message on its own (BENCHMARKS.md). Peeking
never consumes: the slot moves only with
`pg_replication_slot_advance`, which `ack` calls after the warehouse committed.

A read session covers the backlog up to the WAL position at its start. A small backlog is one
peek of the slot; a larger one is peeked as consecutive LSN ranges from temporary copies of the
slot, so the server decodes the next range while the client applies the previous one (a single
peek is materialized whole before its first row is sent). A reader thread per session streams
the rows into a bounded queue in chunks of `max_changes` messages, so memory stays bounded by the
batch size even inside one huge transaction, and the server's work overlaps the client's
decoding and applying. Acks during a session are remembered and applied to the project's slot
as soon as the session ends (the slot cannot be advanced while a peek uses it, and advancing it
decodes the WAL again, so once per session is enough); they are never applied before the
warehouse commit they follow.

Positions: each change is (commit LSN of its transaction, 2 x ordinal in it); the per-table
checkpoint is the end LSN of the last transaction read completely. The slot is advanced to the
smallest checkpoint over the captured tables that have warehouse state, so ingesting a subset of
tables never makes the slot forget the others' changes.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import psycopg2
import pyarrow as pa

from analytics_assets.lib import pg
from analytics_assets.lib.errors import BinaryValueUnsupported, FeedError, IngestBusy
from analytics_assets.lib.feeds import slot_admin as admin
from analytics_assets.lib.feeds import slot_reader
from analytics_assets.lib.feeds.base import (
    ChangeBatch,
    DeadLetter,
    Position,
    TableChanges,
    TableLag,
    TableState,
    format_lsn,
    parse_lsn,
)
from analytics_assets.lib.feeds.slot_lag import LAG_WINDOW_BYTES, read_lag
from analytics_assets.lib.feeds.slot_snapshot import (
    export_snapshot,
    snapshot_batches,
    split_rejected,
)
from analytics_assets.lib.pgoutput import PgOutputDecoder
from analytics_assets.lib.pgoutput_binary import BINARY_TYPES
from analytics_assets.lib.pgoutput_wire import frame_copy_rows
from analytics_assets.settings import validate_identifier

log = logging.getLogger(__name__)

HEARTBEAT_PREFIX = "analytics_assets.heartbeat"


def _source_errors(method):
    """Driver errors of a SlotFeed method as the feed's own (`pg.source_errors`): a lost
    connection becomes one-line `SourceUnavailable`, a slot held by another session
    `IngestBusy`; other errors pass."""

    if inspect.isgeneratorfunction(method):

        @functools.wraps(method)
        def generator(self, *args, **kwargs):
            with pg.source_errors(self.url, self._busy):
                yield from method(self, *args, **kwargs)

        return generator

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with pg.source_errors(self.url, self._busy):
            return method(self, *args, **kwargs)

    return wrapper


class SlotFeed:
    """The slot feed. `url` is the source database as the CDC role (REPLICATION, SELECT on the
    captured tables); `owner_url`, if another role, creates the publication and grants that
    SELECT; `tables` are the captured tables."""

    kind = "slot"

    def __init__(
        self,
        url: str,
        *,
        slot: str,
        publication: str,
        tables: Sequence[str],
        heartbeat: bool = True,
        owner_url: str | None = None,
        lag_window_bytes: int = LAG_WINDOW_BYTES,
    ):
        self.url = url  # the CDC role: replication and reading the captured tables
        self.owner_url = owner_url or url  # the tables' owner: publication and grants
        self.slot = validate_identifier(slot, "slot")
        self.publication = validate_identifier(publication, "publication")
        self.captured_tables = tuple(validate_identifier(t, "captured table") for t in tables)
        self.heartbeat_enabled = heartbeat
        self.lag_window_bytes = lag_window_bytes
        self.statements = 0  # sent to the source through `_query` and session setups
        self._conn = None
        self._reader: slot_reader.PeekReader | None = None
        self._decoder: PgOutputDecoder | None = None
        self._tables: tuple[str, ...] = ()
        self._state: dict[str, TableState] = {}
        self._delivered: Position | None = None
        self._read_through: str | None = None  # end LSN of the session's last complete transaction
        self._pending_ack: int | None = None
        self._text_only = False  # a binary value came that only the text path reads
        self.value_format: str | None = None  # the last read session's: "binary" or "text"
        self._caught_up = False
        self._keys: dict[str, tuple[str, ...]] = {}
        self._claimed = None  # the connection that holds the ingest lock

    # -- connection and catalog ---------------------------------------------------------------

    @property
    def conn(self):
        if self._conn is None or self._conn.closed:
            self._conn = pg.session(self.url)
            self.statements += 1  # the session settings
        return self._conn

    def _claim(self) -> None:
        """One ingest per slot: a session advisory lock on the feed's connection, held until
        close() (or until the connection ends, so a crashed ingest never keeps it)."""
        if self._claimed is not None and self._claimed is self._conn and not self._conn.closed:
            return
        admin.take_ingest_lock(self._query, self.slot)
        self._claimed = self._conn

    def _busy(self, holder: Exception | int) -> IngestBusy:
        return admin.slot_busy(self._query, self.slot, holder)

    def _query(self, query, params=None) -> list[tuple]:
        with self.conn.cursor() as cur:
            self.statements += 1
            cur.execute(query, params)
            return cur.fetchall() if cur.description else []

    def primary_keys(self) -> dict[str, tuple[str, ...]]:
        return admin.primary_keys(self._query, self.captured_tables)

    def _columns(self, table: str) -> list[tuple[str, int, int]]:
        return admin.table_columns(self._query, table)

    def ensure_publication(self) -> None:
        """Create the publication, or add captured tables it lacks (never drops any), and let the
        CDC role read the captured tables (`slot_admin.ensure_publication`)."""
        owner = self.owner_url if self.owner_url != self.url else None
        admin.ensure_publication(
            self._query, self.conn, self.publication, self.captured_tables, owner
        )

    def _slot_row(self) -> dict[str, Any] | None:
        return admin.slot_row(self._query, self.slot)

    @_source_errors
    def slot_status(self) -> dict[str, Any]:
        row = self._slot_row()
        if row is None:
            return {"slot": self.slot, "exists": False}
        return {"slot": self.slot, "exists": True, **row}

    # -- session ------------------------------------------------------------------------------

    @_source_errors
    def needs_snapshot(self, tables: Sequence[str], state: Mapping[str, TableState]) -> list[str]:
        self._claim()
        row = self._slot_row()
        if row is None or row["wal_status"] == "lost":
            return list(tables)  # no stream to resume from: (re)snapshot everything asked for
        confirmed = parse_lsn(row["confirmed_flush_lsn"])
        # a checkpoint behind the slot means the slot was recreated (or the table was not
        # captured for a while): the changes in between are gone, so resynchronize it
        return [t for t in tables if t not in state or parse_lsn(state[t].checkpoint) < confirmed]

    @_source_errors
    def open(self, tables: Sequence[str], state: Mapping[str, TableState]) -> None:
        unknown = [t for t in tables if t not in self.captured_tables]
        if unknown:
            raise FeedError(f"tables {unknown} are not captured (CAPTURED_TABLES)")
        self.close_reader()
        self._claim()
        self._tables = tuple(tables)
        self._state = dict(state)
        self._keys = self.primary_keys()
        self.ensure_publication()
        row = self._slot_row()
        if row is not None and row["plugin"] != "pgoutput":
            raise FeedError(f"replication slot {self.slot!r} exists but uses {row['plugin']}")
        self.ack(state)  # the warehouse may be ahead after a crash between commit and ack
        positions = [state[t].position for t in tables if t in state]
        self._delivered = Position(*min(positions)) if positions else None
        self._read_through = None
        self._decoder = None
        self._caught_up = False

    def close_reader(self) -> None:
        reader, self._reader = self._reader, None
        self._decoder = None
        if reader is not None:
            reader.stop()
            try:
                self._wait_slot_released(reader.backend_pid)
            except (psycopg2.Error, FeedError) as exc:  # the source went away, and so did the
                log.debug("slot release not confirmed: %s", pg.first_line(exc))  # reader session

    def close(self) -> None:
        self.close_reader()
        if self._pending_ack is not None:
            with contextlib.suppress(Exception):
                self._advance(self._pending_ack)
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None
        self._claimed = None

    def _wait_slot_released(self, pid: int | None) -> None:
        admin.wait_slot_released(self._query, self.slot, pid)

    # -- snapshot -----------------------------------------------------------------------------

    @_source_errors
    def snapshot(
        self, tables: Sequence[str], max_rows: int, resync: Sequence[str] = ()
    ) -> Iterator[ChangeBatch]:
        """COPY `tables` under a snapshot exported by CREATE_REPLICATION_SLOT: the project's slot
        when it does not exist yet (or was lost), else a temporary slot. Rows get position
        (consistent point - 1, ordinal), older than every change the slot streams after it."""
        if not tables:
            return
        self.close_reader()
        self._claim()
        self.ensure_publication()
        row = self._slot_row()
        if row is not None and row["wal_status"] == "lost":
            self._query("select pg_drop_replication_slot(%s)", (self.slot,))
            row = None
        create_main = row is None
        slot_name = self.slot if create_main else f"{self.slot}_snap_{os.getpid()}"
        keys = self.primary_keys()
        snap = export_snapshot(self.url, slot_name, not create_main, tables, self._columns)
        cp = snap.consistent_point
        confirmed = self._slot_row()
        checkpoint = format_lsn(cp) if create_main else confirmed["confirmed_flush_lsn"]
        try:
            for table in tables:
                first = True
                for batch in snapshot_batches(
                    table,
                    snap.files[table],
                    snap.columns[table],
                    keys.get(table, ()),
                    cp,
                    snap.taken_at,
                    checkpoint,
                    max_rows,
                    check_utf8=self._check_utf8,
                    quarantine=self._rejected,
                ):
                    if first and table in resync:
                        batch.tables[table].truncates.append(Position(cp - 1, 0))
                    first = False
                    yield batch
        finally:
            snap.spool.cleanup()

    # -- streaming ----------------------------------------------------------------------------

    def _start_reader(self, max_changes: int) -> None:
        self._apply_pending_ack()
        upto = parse_lsn(self._query("select pg_current_wal_insert_lsn()::text")[0][0])
        row = self._slot_row()
        if row["active"] and row["active_pid"]:  # another session streams it: not ours to read
            raise self._busy(row["active_pid"])
        start = parse_lsn(row["confirmed_flush_lsn"])
        ranges = slot_reader.peek_ranges(
            start,
            upto,
            slot_reader.PEEK_RANGE_FIRST,
            slot_reader.PEEK_RANGE_GROWTH,
            slot_reader.PEEK_RANGE_MAX,
        )
        if len(ranges) == 1 or admin.free_slots(self._query) < 2:
            ranges = [(None, upto)]  # one peek of the project's slot itself
        self._decoder = PgOutputDecoder(set(self._tables), self._keys)
        self._decoder.check_utf8 = self._check_utf8
        binary = self._binary_values()
        self.value_format = "binary" if binary else "text"
        self._reader = slot_reader.PeekReader(
            self.url,
            self.slot,
            self.publication,
            ranges,
            max_changes,
            self._decode,
            ChangeBatch.joined,
            binary=binary,
        )
        self._reader.start()

    def _binary_values(self) -> bool:
        """Ask pgoutput for binary values: the source server then skips the types' output
        functions (docs/production.md). Only where the binary path reads every published
        column's type, and the database is UTF-8 (a text value's bytes are then what the text
        path gets, and never rejected)."""
        if self._text_only or self._check_utf8:
            return False
        return admin.binary_ready(self._query, self.publication, BINARY_TYPES)

    def _decode(self, rows: list[bytes]) -> ChangeBatch | None:
        """Runs on the reader thread, in stream order (it alone touches the decoder and
        `_delivered` and `_read_through` while a session's peek runs)."""
        t0 = time.perf_counter()
        buf, starts = frame_copy_rows(rows)
        rows.clear()
        decoded = self._decoder.decode(buf, starts, skip_through=self._delivered)
        batch = self._to_batch(decoded)
        if batch is not None:
            batch.decode_seconds = time.perf_counter() - t0
        return batch

    @_source_errors
    def read_batch(self, max_changes: int) -> ChangeBatch | None:
        """The next batch of the session's peek, which covers the WAL up to where it was when
        the session's first read started (so a session ends even under constant writes; the
        next ingest picks up the rest)."""
        if not self._tables:
            raise FeedError("open() the feed before reading")
        while True:
            if self._reader is None:
                if self._caught_up:
                    return None
                if self._slot_row() is None:
                    raise FeedError(
                        f"replication slot {self.slot!r} does not exist: snapshot first"
                    )
                self._start_reader(max_changes)
            try:
                item = self._reader.next_chunk()
            except BinaryValueUnsupported as exc:
                # a column's type within the backlog differs from the catalog's (altered since):
                # the rest of the session is read as text, after what was handed on
                log.info("reading the slot's values as text from here on: %s", exc)
                self.close_reader()
                self._text_only = True
                continue
            if item is slot_reader.DONE:
                done, self._reader = self._reader, None
                done.join(timeout=30)
                self._wait_slot_released(done.backend_pid)
                self._caught_up = True
                self._apply_pending_ack()
                return None
            return item

    def _to_batch(self, decoded) -> ChangeBatch | None:
        checkpoint_lsn = decoded.checkpoint_lsn
        ends = [p for p in (decoded.last,) if p is not None]
        if checkpoint_lsn is not None:
            ends.append(Position(checkpoint_lsn, 0))
        if not ends:
            return None
        end = max(ends)
        if self._delivered is not None and end <= self._delivered:
            return None
        self._delivered = end
        if checkpoint_lsn is not None:
            self._read_through = format_lsn(checkpoint_lsn)
        # a chunk inside one transaction completes none: the last one completed is in an
        # earlier chunk, applied before this one
        checkpoint = self._read_through
        tables = {}
        dead: list[DeadLetter] = []
        for t in self._tables:
            dt_ = decoded.tables.get(t)
            prev = self._state.get(t)
            cp = checkpoint or (prev.checkpoint if prev else None) or format_lsn(0)
            if dt_ is None:
                tables[t] = TableChanges.none(t, self._keys.get(t, ()), end, cp)
            else:
                rows, rejected = self._rejected(t, dt_.rows)
                dead += rejected
                tables[t] = TableChanges(
                    t, rows, dt_.key or self._keys.get(t, ()), end, cp, dt_.truncates
                )
        return ChangeBatch(
            tables,
            decoded.first,
            end,
            decoded.min_commit_ts,
            decoded.max_commit_ts,
            dead_letters=dead,
        )

    def _rejected(self, table: str, rows: pa.Table) -> tuple[pa.Table, list[DeadLetter]]:
        return split_rejected(self.slot, table, rows)

    @functools.cached_property
    def _check_utf8(self) -> bool:
        """Text values need checking only when the database does not guarantee UTF-8."""
        return self._query("show server_encoding")[0][0].upper() not in ("UTF8", "UTF-8")

    # -- acknowledging ------------------------------------------------------------------------

    @_source_errors
    def ack(self, state: Mapping[str, TableState]) -> None:
        self._state.update(state)
        lsns = [
            parse_lsn(s.checkpoint) for t, s in self._state.items() if t in self.captured_tables
        ]
        if not lsns:
            return
        target = min(lsns)
        if self._reader is not None:  # the slot is in use by the running peek: after it
            self._pending_ack = max(target, self._pending_ack or 0)
            return
        self._advance(target)

    def _apply_pending_ack(self) -> None:
        if self._pending_ack is not None and self._reader is None:
            target, self._pending_ack = self._pending_ack, None
            self._advance(target)

    def _advance(self, target: int) -> None:
        row = self._slot_row()
        if row is None or target <= parse_lsn(row["confirmed_flush_lsn"]):
            return
        self._query(
            "select pg_replication_slot_advance(%s, %s::pg_lsn)", (self.slot, format_lsn(target))
        )

    def heartbeat(self) -> None:
        if not self.heartbeat_enabled:
            return
        try:
            self._query(
                "select pg_logical_emit_message(true, %s, now()::text)", (HEARTBEAT_PREFIX,)
            )
        except psycopg2.Error as exc:  # e.g. not permitted for this role: lag still works
            log.warning("CDC heartbeat failed: %s", str(exc).strip())

    # -- lag ----------------------------------------------------------------------------------

    @_source_errors
    def lag(self, state: Mapping[str, TableState] | None = None) -> dict[str, TableLag]:
        """Per captured table: WAL bytes behind, and the changes pending after its applied
        position with the seconds since the oldest pending commit, read from at most the first
        `lag_window_bytes` of pending WAL (`slot_lag`). One statement, whatever the backlog."""
        return read_lag(
            self._query,
            slot=self.slot,
            publication=self.publication,
            tables=self.captured_tables,
            state=dict(state or self._state),
            window=self.lag_window_bytes,
            lock_held=admin.INGEST_LOCK_HELD,
            lock_params=admin.ingest_lock_params(self.slot),
        )


__all__ = ["HEARTBEAT_PREFIX", "SlotFeed"]
