"""The logical replication slot feed: a publication + a `pgoutput` slot the project owns.

Transport (measured, see bench/cdc_throughput.py): `COPY (SELECT data FROM
pg_logical_slot_peek_binary_changes(...)) TO STDOUT (FORMAT binary)` hands pgoutput bytes to
Python several times faster than the streaming replication protocol, whose walsender sends and
flushes every message on its own (~100k messages/s here, even to a client that only counts the
bytes). Peeking never consumes: the slot moves only with
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
import datetime as dt
import functools
import inspect
import itertools
import logging
import os
import queue
import re
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import psycopg2
import psycopg2.errors
import psycopg2.extras
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from psycopg2 import sql

from analytics_assets.lib.errors import FeedError, IngestBusy, SourceUnavailable
from analytics_assets.lib.feeds.base import (
    LSN,
    SEQ,
    ChangeBatch,
    DeadLetter,
    Position,
    TableChanges,
    TableLag,
    TableState,
    format_lsn,
    meta_schema_fields,
    parse_lsn,
)
from analytics_assets.lib.feeds.slot_lag import LAG_WINDOW_BYTES, read_lag
from analytics_assets.lib.pgoutput import PgOutputDecoder
from analytics_assets.lib.pgoutput_types import (
    REJECT_REASON,
    REJECT_VALUE,
    RelationColumn,
    columns_from_text,
)
from analytics_assets.lib.pgoutput_wire import COPY_HEADER, frame_copy_rows
from analytics_assets.settings import redact_url, validate_identifier

log = logging.getLogger(__name__)

SESSION_SETTINGS = (
    "set timezone = 'UTC'; set datestyle = 'ISO, YMD'; set intervalstyle = 'postgres'; "
    "set extra_float_digits = 3; set bytea_output = 'hex'"
)
HEARTBEAT_PREFIX = "analytics_assets.heartbeat"
_DONE = object()
FIRST_CHUNK_MESSAGES = 20_000
# A backlog of more than 1.5 x this many bytes of WAL is peeked in ranges (see _PeekReader)
PEEK_RANGE_FIRST = 8 << 20
# Each read decodes again from its copy's restart point, which moves only at the WAL's
# running-transactions records (every 15 s of activity, and at checkpoints): fewer, larger
# ranges decode less twice. Measured on one 500k-change backlog, 3 runs each: server CPU
# 1.24-1.56 s with 4 against 1.83-2.03 s with 2, and the ingest 2.3-2.8 s against 2.7-3.1 s.
PEEK_RANGE_GROWTH = 4
PEEK_RANGE_MAX = 256 << 20
# pg_try_advisory_lock(INGEST_LOCK_CLASS, crc32(slot)): one ingest per slot at a time
INGEST_LOCK_CLASS = 7263002
# the pg_locks rows (alias l) of that lock, granted, in this database
INGEST_LOCK_HELD = (
    "l.locktype = 'advisory' and l.granted and l.objsubid = 2 "
    "and l.classid = %(lock_class)s::oid and l.objid = %(lock_key)s::oid "
    "and l.database = (select oid from pg_database where datname = current_database())"
)
# a dead peer (network gone, server frozen) is noticed in ~60s instead of the kernel's hours
KEEPALIVES = {
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0].strip() if text else type(exc).__name__


def _connection_lost(exc: BaseException) -> bool:
    """The session is gone (as opposed to an error the server reported on a live session)."""
    if isinstance(exc, psycopg2.InterfaceError):
        return True
    code = getattr(exc, "pgcode", None) or ""
    if type(exc) in (psycopg2.OperationalError, psycopg2.DatabaseError) and not code:
        # libpq's own: "server closed the connection unexpectedly", or (a COPY cut off) "error
        # with status PGRES_COPY_OUT and no message from the libpq"
        return True
    return code.startswith(("08", "57P"))  # connection exception, admin/crash shutdown


def _reason(exc: BaseException) -> str:
    if type(exc) is psycopg2.DatabaseError:  # libpq had nothing to say: a COPY was cut off
        return "the connection broke while reading the slot"
    return _first_line(exc)


def _connect(url: str, **kwargs):
    try:
        conn = psycopg2.connect(url, connect_timeout=10, **KEEPALIVES, **kwargs)
    except psycopg2.OperationalError as exc:
        raise SourceUnavailable(
            f"cannot connect to the source {redact_url(url)}: {_first_line(exc)}"
        ) from None
    return conn


def _session(url: str):
    conn = _connect(url, application_name=f"analytics_assets_cdc pid {os.getpid()}")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(SESSION_SETTINGS)
    return conn


def peek_ranges(
    start: int, upto: int, first: int, growth: float, largest: int
) -> list[tuple[int, int]]:
    """LSN ranges [lo, hi) that cover [start, upto): the first `first` bytes of WAL, then each
    range `growth` times the one before (at most `largest`). The remainder (at most 1.5 times
    the next size) is split evenly into ranges of at most twice the one before: the server
    decodes the next range while the client works through the current one, and the client
    does so at roughly half the server's pace, so a last range far larger than the one before
    left the client waiting for it, then working alone (measured on a 500k-change backlog:
    8/32/112 MiB waited 0.2-0.25 s for the 112 MiB; 8/32/56/56 MiB, 1.56-1.74 s against
    1.72-1.83 s for the whole ingest)."""
    ranges: list[tuple[int, int]] = []
    lo, size, prev = start, first, 0
    while lo < upto:
        rest = upto - lo
        if rest > size * 3 // 2:
            ranges.append((lo, lo + size))
            lo, prev, size = lo + size, size, min(int(size * growth), largest)
            continue
        parts = max(1, -(-rest // (2 * prev))) if prev else 1
        bounds = [lo + rest * i // parts for i in range(parts + 1)]
        ranges += list(itertools.pairwise(bounds))
        break
    return ranges or [(start, upto)]


_READ_SLOTS = itertools.count(1)


class _PeekReader:
    """Reads the slot from `start` to `upto` as one or more peeks (binary COPY), decodes the
    rows in chunks (`transform`, in stream order) and hands the results on through a bounded
    queue. Decoding here, off the applying thread, overlaps it with the warehouse's work (numpy,
    Arrow and DuckDB release the GIL for their heavy parts).

    A peek is materialized whole on the server before its first row is sent, so one peek over a
    large backlog leaves the client idle while the server decodes all of it. A backlog that
    makes more than one range (over 1.5 x PEEK_RANGE_FIRST bytes of WAL) is therefore read,
    when the server has two replication slots to spare, as consecutive LSN ranges of growing
    size (`peek_ranges`) by two sessions taking turns, each on a temporary copy of the slot
    (the project's slot is never held, and the copies go with their sessions): a session
    advances its copy over the other session's last range (fast-forward, no output), reads up
    to its range's end, consuming it from the copy, and waits for its turn to hand the rows
    on. So the server decodes range k+1 while the client decodes and applies range k; it starts
    on range k+1 only once range k is decoded, so the server never takes both cores from the
    client (measured: slightly faster than letting both sessions decode at once). Each read
    starts decoding at the copy's restart point (the last running-transactions record before
    its position), so some WAL is decoded twice; growing ranges keep the reads few (measured:
    1.3 to 2 times the server CPU of one peek, for backlogs written within seconds).

    Ranges are complementary: a peek up to L includes every transaction whose commit record
    starts before L, and a slot advanced to L skips exactly those. A record decoded twice at a
    boundary repeats positions, which the decoder skips (`skip_through`)."""

    def __init__(
        self,
        url: str,
        feed: SlotFeed,
        ranges: list[tuple[int | None, int]],
        chunk_messages: int,
        transform: Callable[[list[bytes]], Any],
        max_chunks: int = 2,
    ):
        """`ranges`: [(None, upto)] peeks the project's slot itself up to `upto`; several
        (lo, hi) ranges (`peek_ranges`) are read from temporary copies of it."""
        self.url = url
        self.chunk_messages = chunk_messages
        self.first_chunk_messages = max(1, min(chunk_messages, FIRST_CHUNK_MESSAGES))
        self.transform = transform
        self.queue: queue.Queue = queue.Queue(maxsize=max_chunks)
        self.stopping = threading.Event()
        self._turn = 0
        self._materialized = -1
        self._turn_changed = threading.Condition()
        self._first_chunk = True
        self.ranges = ranges
        if len(ranges) == 1:
            self.workers = [_RangeWorker(self, feed, None, [0])]
        else:
            session = next(_READ_SLOTS)
            self.workers = [
                _RangeWorker(
                    self,
                    feed,
                    f"{feed.slot[:32]}_rd{os.getpid()}_{session}_{i}",
                    list(range(i, len(self.ranges), 2)),
                )
                for i in range(min(2, len(self.ranges)))
            ]

    @property
    def backend_pid(self) -> int | None:
        """The session holding the project's slot (only when it is peeked directly)."""
        return self.workers[0].backend_pid if self.workers[0].copy_slot is None else None

    def start(self) -> None:
        for worker in self.workers:
            worker.start()

    def join(self, timeout: float | None = None) -> None:
        for worker in self.workers:
            worker.join(timeout=timeout)

    def _wait(self, done: Callable[[], bool]) -> None:
        with self._turn_changed:
            while not done():
                if self.stopping.is_set():
                    raise _Stopped
                self._turn_changed.wait(timeout=0.2)

    def wait_turn(self, index: int) -> None:
        """Until the rows of every range before `index` are handed on."""
        self._wait(lambda: self._turn == index)

    def wait_materialized(self, index: int) -> None:
        """Until range `index` is decoded on the server (its first row arrived): one session
        decodes at a time, so the server never takes both cores from the applying thread."""
        self._wait(lambda: self._materialized >= index)

    def materialized(self, index: int) -> None:
        with self._turn_changed:
            self._materialized = max(self._materialized, index)
            self._turn_changed.notify_all()

    def end_turn(self, index: int) -> None:
        with self._turn_changed:
            self._turn = index + 1
            self._turn_changed.notify_all()
        if self._turn == len(self.ranges):
            self.put(_DONE)

    def chunk_size(self) -> int:
        """Messages per chunk: the first chunk is smaller so the applying thread starts sooner
        (a full first chunk would be decoded while nothing else runs)."""
        return self.first_chunk_messages if self._first_chunk else self.chunk_messages

    def hand_over(self, rows: list[bytes]) -> None:
        if rows and rows[-1] == b"\xff\xff":
            rows.pop()  # the COPY trailer (a data row is never 2 bytes long)
        if rows:
            self._first_chunk = False
            item = self.transform(rows)
            if item is not None:
                self.put(item)

    def put(self, item) -> None:
        while True:
            if self.stopping.is_set():
                raise _Stopped
            try:
                self.queue.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def next_chunk(self):
        item = self.queue.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def stop(self) -> None:
        self.stopping.set()
        for worker in self.workers:
            if worker.conn is not None:
                with contextlib.suppress(Exception):
                    worker.conn.cancel()
        # drain so a blocked put() returns
        with contextlib.suppress(queue.Empty):
            while True:
                self.queue.get_nowait()
        self.join(timeout=30)


class _RangeWorker(threading.Thread):
    """One session of a `_PeekReader`: peeks its ranges (every other one) in order."""

    def __init__(
        self, reader: _PeekReader, feed: SlotFeed, copy_slot: str | None, indexes: list[int]
    ):
        super().__init__(daemon=True, name=f"cdc-peek-reader-{indexes[0]}")
        self.reader = reader
        self.feed = feed
        self.copy_slot = copy_slot  # None: peek the project's slot itself
        self.indexes = indexes
        self.conn = None
        self.backend_pid: int | None = None
        self._rows: list[bytes] = []
        self._header = True
        self._index = -1
        self._limit = reader.chunk_size()

    # psycopg2's copy_expert calls write() once per COPY row (= one pgoutput message), so it
    # does as little as it can: the chunk size is read only when a chunk is handed over
    def write(self, data: bytes) -> None:
        if self._header:  # the first row of each COPY comes after the PGCOPY header
            data = data[COPY_HEADER:]
            self._header = False
            self.reader.materialized(self._index)
            self.reader.wait_turn(self._index)  # the rows before ours are handed on first
            self._limit = self.reader.chunk_size()
        rows = self._rows
        rows.append(data)
        if len(rows) >= self._limit:
            self._rows = []
            self.reader.hand_over(rows)
            self._limit = self.reader.chunk_size()

    def run(self) -> None:
        reader = self.reader
        try:
            self.conn = _session(self.url)
            self.backend_pid = self.conn.get_backend_pid()
            with self.conn.cursor() as cur:
                slot = self.feed.slot
                if self.copy_slot is not None:
                    cur.execute(
                        "select pg_copy_logical_replication_slot(%s, %s, true)",
                        (self.feed.slot, self.copy_slot),
                    )
                    slot = self.copy_slot
                for index in self.indexes:
                    lo, hi = reader.ranges[index]
                    reader.wait_materialized(index - 1)
                    if lo is not None and index > 0:
                        # skip the ranges the other session reads. The copy has consumed its
                        # own earlier ranges, up to the end of the last record each read: that
                        # can lie past `lo` only when the ranges between are shorter than one
                        # record (the tests' tiny ranges), and then no record starts in between
                        cur.execute(
                            "select pg_replication_slot_advance(slot_name, "
                            "greatest(%s::pg_lsn, confirmed_flush_lsn)) "
                            "from pg_replication_slots where slot_name = %s",
                            (format_lsn(lo), slot),
                        )
                    self._index, self._header = index, True
                    # a copy consumes what it reads, so its next advance skips only the range
                    # between (a peek would leave it to fast-forward over its own range again)
                    consume = self.copy_slot is not None
                    cur.copy_expert(self.feed._copy_sql(slot, hi, consume), self)
                    if self._header:  # no row came (a COPY always sends its header)
                        reader.materialized(index)
                        reader.wait_turn(index)
                    rows, self._rows = self._rows, []
                    reader.hand_over(rows)  # a peek ends on a transaction boundary
                    reader.end_turn(index)
        except _Stopped:
            pass
        except BaseException as exc:  # noqa: BLE001 - handed to the reading thread
            if not reader.stopping.is_set():
                with contextlib.suppress(_Stopped):
                    reader.put(exc)
        finally:
            if self.conn is not None:
                with contextlib.suppress(Exception):
                    self.conn.close()

    @property
    def url(self) -> str:
        return self.reader.url


class _Stopped(Exception):
    pass


def _ingest_lock_key(slot: str) -> int:
    return zlib.crc32(slot.encode()) & 0x7FFFFFFF


def _holder(rows: list[tuple]) -> str:
    """Who holds the slot or the ingest lock, from pg_stat_activity rows."""
    if not rows:
        return "a session that has just ended; run the ingest again"
    pid, app, addr, started = rows[0]
    parts = [f"backend PID {pid}"]
    if app:
        parts.append(f"application {app!r}")  # ours carry the client's PID
    if addr:
        parts.append(f"from {addr}")
    if started is not None:
        parts.append(f"since {started:%Y-%m-%d %H:%M:%S %Z}".strip())
    return ", ".join(parts) + "; wait for it to finish (or end it), then run the ingest again"


def _source_errors(method):
    """Driver errors of a SlotFeed method as the feed's own: a lost connection becomes one-line
    `SourceUnavailable`, a slot held by another session `IngestBusy`; other errors pass."""

    def translate(self, exc: Exception) -> Exception | None:
        if isinstance(exc, psycopg2.errors.ObjectInUse):
            return self._busy(exc)
        if _connection_lost(exc):
            return SourceUnavailable(
                f"lost the connection to the source {redact_url(self.url)} ({_reason(exc)}); nothing after the last committed batch was applied: "
                "run the ingest again once the source is back"
            )
        return None

    @contextlib.contextmanager
    def translated(self):
        try:
            yield
        except psycopg2.Error as exc:
            mapped = translate(self, exc)
            if mapped is None:
                raise
            raise mapped from None

    if inspect.isgeneratorfunction(method):

        @functools.wraps(method)
        def generator(self, *args, **kwargs):
            with translated(self):
                yield from method(self, *args, **kwargs)

        return generator

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with translated(self):
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
        self._reader: _PeekReader | None = None
        self._decoder: PgOutputDecoder | None = None
        self._tables: tuple[str, ...] = ()
        self._state: dict[str, TableState] = {}
        self._delivered: Position | None = None
        self._pending_ack: int | None = None
        self._caught_up = False
        self._keys: dict[str, tuple[str, ...]] = {}
        self._claimed = None  # the connection that holds the ingest lock

    # -- connection and catalog ---------------------------------------------------------------

    @property
    def conn(self):
        if self._conn is None or self._conn.closed:
            self._conn = _session(self.url)
            self.statements += 1  # the session settings
        return self._conn

    def _claim(self) -> None:
        """One ingest per slot: a session advisory lock on the feed's connection, held until
        close() (or until the connection ends, so a crashed ingest never keeps it)."""
        if self._claimed is not None and self._claimed is self._conn and not self._conn.closed:
            return
        key = _ingest_lock_key(self.slot)
        got = self._query("select pg_try_advisory_lock(%s, %s)", (INGEST_LOCK_CLASS, key))[0][0]
        if got:
            self._claimed = self._conn
            return
        rows = self._query(
            "select a.pid, a.application_name, a.client_addr::text, a.backend_start "  # noqa: S608 - a fixed fragment
            f"from pg_locks l join pg_stat_activity a on a.pid = l.pid where {INGEST_LOCK_HELD}",
            {"lock_class": INGEST_LOCK_CLASS, "lock_key": key},
        )
        raise IngestBusy(f"another ingest is running on slot {self.slot!r}: {_holder(rows)}")

    def _busy(self, holder: Exception | int) -> IngestBusy:
        """IngestBusy naming the session that holds the slot: its PID, or an ObjectInUse error
        ("... is active for PID n")."""
        if isinstance(holder, int):
            pid = holder
        else:
            match = re.search(r"PID (\d+)", str(holder))
            pid = int(match.group(1)) if match else None
        rows = []
        if pid is not None:
            with contextlib.suppress(psycopg2.Error):
                rows = self._query(
                    "select pid, application_name, client_addr::text, backend_start "
                    "from pg_stat_activity where pid = %s",
                    (pid,),
                )
            rows = rows or [(pid, None, None, None)]
        return IngestBusy(
            f"another ingest is running: replication slot {self.slot!r} is in use by "
            f"{_holder(rows)}"
        )

    def _query(self, query, params=None) -> list[tuple]:
        with self.conn.cursor() as cur:
            self.statements += 1
            cur.execute(query, params)
            return cur.fetchall() if cur.description else []

    def primary_keys(self) -> dict[str, tuple[str, ...]]:
        rows = self._query(
            """
            select c.relname, array_agg(a.attname order by k.ord)
            from pg_index i
            join pg_class c on c.oid = i.indrelid
            join pg_namespace n on n.oid = c.relnamespace
            cross join lateral unnest(i.indkey) with ordinality as k(attnum, ord)
            join pg_attribute a on a.attrelid = c.oid and a.attnum = k.attnum
            where i.indisprimary and n.nspname = 'public' and c.relname = any(%s)
            group by c.relname
            """,
            (list(self.captured_tables),),
        )
        return {name: tuple(cols) for name, cols in rows}

    def _columns(self, table: str) -> list[tuple[str, int, int]]:
        rows = self._query(
            """
            select a.attname, a.atttypid::int8, a.atttypmod
            from pg_attribute a
            where a.attrelid = %s::regclass and a.attnum > 0 and not a.attisdropped
              and a.attgenerated = ''
            order by a.attnum
            """,
            (sql.Identifier(table).as_string(self.conn),),
        )
        if not rows:
            raise FeedError(f"captured table {table!r} does not exist in the source database")
        return [(r[0], int(r[1]), int(r[2])) for r in rows]

    def ensure_publication(self) -> None:
        """Create the publication, or add captured tables it lacks (never drops any), and let the
        CDC role read the captured tables. Checks run on the CDC connection; what changes
        something runs on the owner's (`owner_url`), only when needed."""
        missing = [
            t
            for t in self.captured_tables
            if not self._query("select to_regclass(%s)", (sql.Identifier(t).as_string(self.conn),))[
                0
            ][0]
        ]
        if missing:
            raise FeedError(
                f"captured tables {', '.join(missing)} do not exist in the source database; "
                "run the source migrations first or fix CAPTURED_TABLES"
            )
        statements = []
        exists = self._query("select 1 from pg_publication where pubname = %s", (self.publication,))
        if not exists:
            statements.append(
                sql.SQL("create publication {} for table {}").format(
                    sql.Identifier(self.publication),
                    sql.SQL(", ").join(map(sql.Identifier, self.captured_tables)),
                )
            )
        else:
            have = {
                r[0]
                for r in self._query(
                    "select tablename from pg_publication_tables "
                    "where pubname = %s and schemaname = 'public'",
                    (self.publication,),
                )
            }
            add = [t for t in self.captured_tables if t not in have]
            if add:
                statements.append(
                    sql.SQL("alter publication {} add table {}").format(
                        sql.Identifier(self.publication),
                        sql.SQL(", ").join(map(sql.Identifier, add)),
                    )
                )
        unreadable = [
            r[0]
            for r in self._query(
                "select t from unnest(%s::text[]) t "
                "where not has_table_privilege(quote_ident(t), 'select')",
                (list(self.captured_tables),),
            )
        ]
        if unreadable and self.owner_url != self.url:
            role = self._query("select current_user")[0][0]
            statements.append(
                sql.SQL("grant select on table {} to {}").format(
                    sql.SQL(", ").join(map(sql.Identifier, unreadable)), sql.Identifier(role)
                )
            )
        if not statements:
            return
        owner = _session(self.owner_url) if self.owner_url != self.url else self.conn
        try:
            with owner.cursor() as cur:
                for statement in statements:
                    cur.execute(statement)
        finally:
            if owner is not self.conn:
                owner.close()

    def _slot_row(self) -> dict[str, Any] | None:
        rows = self._query(
            """
            select active, active_pid, wal_status, confirmed_flush_lsn::text, restart_lsn::text,
                   pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::int8, safe_wal_size,
                   plugin, database = current_database()
            from pg_replication_slots where slot_name = %s
            """,
            (self.slot,),
        )
        if not rows:
            return None
        r = rows[0]
        return {
            "active": r[0],
            "active_pid": r[1],
            "wal_status": r[2],
            "confirmed_flush_lsn": r[3],
            "restart_lsn": r[4],
            "retained_bytes": r[5],
            "safe_wal_size": r[6],
            "plugin": r[7],
            "same_database": r[8],
        }

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
                log.debug("slot release not confirmed: %s", _first_line(exc))  # reader session

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

    def _wait_slot_released(self, pid: int | None, timeout: float = 30.0) -> None:
        if pid is None:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rows = self._query(
                "select active_pid from pg_replication_slots where slot_name = %s", (self.slot,)
            )
            if not rows or rows[0][0] != pid:
                return
            time.sleep(0.05)
        self._query("select pg_terminate_backend(%s)", (pid,))

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
        repl = _connect(self.url, connection_factory=psycopg2.extras.LogicalReplicationConnection)
        spool = tempfile.TemporaryDirectory(prefix="cdc_snapshot_")
        files: dict[str, str] = {}
        try:
            with repl.cursor() as rcur:
                rcur.execute(
                    f"CREATE_REPLICATION_SLOT {slot_name} "
                    f"{'TEMPORARY ' if not create_main else ''}LOGICAL pgoutput (SNAPSHOT 'export')"
                )
                _, consistent_point, snapshot_name, _ = rcur.fetchone()
            cp = parse_lsn(consistent_point)
            snap_conn = _session(self.url)
            try:
                snap_conn.autocommit = False
                with snap_conn.cursor() as cur:
                    cur.execute("begin isolation level repeatable read")
                    cur.execute("set transaction snapshot %s", (snapshot_name,))
                    snap_ts = _now(cur)
                    columns = {}
                    for table in tables:
                        cols = self._columns(table)
                        columns[table] = cols
                        path = os.path.join(spool.name, f"{table}.csv")
                        with open(path, "wb") as fh:
                            cur.copy_expert(
                                sql.SQL("copy (select {} from {}) to stdout with (format csv)")
                                .format(
                                    sql.SQL(", ").join(sql.Identifier(c[0]) for c in cols),
                                    sql.Identifier(table),
                                )
                                .as_string(cur),
                                fh,
                            )
                        files[table] = path
                    cur.execute("commit")
            finally:
                snap_conn.close()
        finally:
            repl.close()  # a temporary slot goes with it
        confirmed = self._slot_row()
        checkpoint = format_lsn(cp) if create_main else confirmed["confirmed_flush_lsn"]
        try:
            for table in tables:
                first = True
                for batch in self._snapshot_batches(
                    table,
                    files[table],
                    columns[table],
                    keys.get(table, ()),
                    cp,
                    snap_ts,
                    checkpoint,
                    max_rows,
                ):
                    if first and table in resync:
                        batch.tables[table].truncates.append(Position(cp - 1, 0))
                    first = False
                    yield batch
        finally:
            spool.cleanup()

    def _snapshot_batches(
        self, table, path, cols, key, cp, snap_ts, checkpoint, max_rows
    ) -> Iterator[ChangeBatch]:
        names = [c[0] for c in cols]
        end = Position(cp - 1, 0)
        ordinal = 0
        batches: list[pa.RecordBatch] = []
        pending = 0

        def emit(parts: list[pa.RecordBatch], ordinal: int) -> tuple[ChangeBatch, int]:
            raw = pa.Table.from_batches(parts)
            n = raw.num_rows
            converted = columns_from_text(
                [raw.column(i).combine_chunks() for i in range(len(cols))],
                [RelationColumn(name, oid, typmod, name in key) for name, oid, typmod in cols],
                check_utf8=self._check_utf8,
            )
            seq = np.arange(ordinal + 1, ordinal + n + 1, dtype=np.int64)
            ts_us = int(snap_ts.timestamp() * 1_000_000)
            meta = [
                pa.array(np.full(n, cp - 1, np.int64)),
                pa.array(seq),
                pa.array(np.full(n, "r", dtype=object), pa.string()),
                pa.array(np.zeros(n, bool)),
                pa.array(np.full(n, ts_us, np.int64)).cast(pa.timestamp("us", tz="UTC")),
                pa.nulls(n, pa.list_(pa.string())),
            ]
            fields = [
                pa.field(nm, arr.type)
                for nm, arr in zip(converted.names, converted.arrays, strict=True)
            ]
            rows = pa.Table.from_arrays(
                converted.arrays + meta, schema=pa.schema(fields + meta_schema_fields())
            )
            if converted.reasons is not None:
                rows = rows.append_column(REJECT_REASON, converted.reasons)
                rows = rows.append_column(REJECT_VALUE, converted.values)
            rows, dead = self._rejected(table, rows)
            pos = Position(cp - 1, ordinal + n)
            tc = TableChanges(table, rows, key, pos, checkpoint)
            return ChangeBatch(
                {table: tc},
                Position(cp - 1, ordinal + 1),
                pos,
                snap_ts,
                snap_ts,
                snapshot=True,
                dead_letters=dead,
            ), ordinal + n

        reader = (
            pacsv.open_csv(
                path,
                read_options=pacsv.ReadOptions(column_names=names, block_size=8 << 20),
                parse_options=pacsv.ParseOptions(newlines_in_values=True),
                convert_options=pacsv.ConvertOptions(
                    column_types={n: pa.string() for n in names},
                    check_utf8=False,  # columns_from_text checks it where it can fail
                    strings_can_be_null=True,
                    quoted_strings_can_be_null=False,
                    null_values=[""],
                ),
            )
            if os.path.getsize(path)
            else None
        )
        emitted = False
        if reader is not None:
            for rb in reader:
                while rb.num_rows:
                    take = min(rb.num_rows, max_rows - pending)
                    batches.append(rb.slice(0, take))
                    pending += take
                    rb = rb.slice(take)
                    if pending >= max_rows:
                        batch, ordinal = emit(batches, ordinal)
                        batches, pending = [], 0
                        emitted = True
                        yield batch
        if batches or not emitted:
            if not batches:
                empty = pa.schema([pa.field(n, pa.string()) for n in names]).empty_table()
                batches = empty.to_batches() or [
                    pa.RecordBatch.from_pylist([], schema=empty.schema)
                ]
            batch, ordinal = emit(batches, ordinal)
            if batch.tables[table].rows.num_rows == 0:
                batch.first = batch.last = end
                batch.tables[table].end = end
            yield batch

    # -- streaming ----------------------------------------------------------------------------

    def _copy_sql(self, slot: str, upto_lsn: int, consume: bool = False) -> str:
        """COPY of the slot's changes up to `upto_lsn`. `consume` (a temporary copy only: the
        project's slot moves only on ack) also moves the copy past them."""
        fn = (
            "pg_logical_slot_get_binary_changes"
            if consume
            else "pg_logical_slot_peek_binary_changes"
        )
        query = sql.SQL(
            "copy (select data from {fn}({slot}, {upto}::pg_lsn, "
            "null, 'proto_version', '1', 'publication_names', {pub}, 'messages', 'true')) "
            "to stdout with (format binary)"
        ).format(
            fn=sql.Identifier(fn),
            slot=sql.Literal(slot),
            upto=sql.Literal(format_lsn(upto_lsn)),
            pub=sql.Literal(self.publication),
        )
        return query.as_string(self.conn)

    def _start_reader(self, max_changes: int) -> None:
        self._apply_pending_ack()
        upto = parse_lsn(self._query("select pg_current_wal_insert_lsn()::text")[0][0])
        row = self._slot_row()
        if row["active"] and row["active_pid"]:  # another session streams it: not ours to read
            raise self._busy(row["active_pid"])
        start = parse_lsn(row["confirmed_flush_lsn"])
        ranges = peek_ranges(start, upto, PEEK_RANGE_FIRST, PEEK_RANGE_GROWTH, PEEK_RANGE_MAX)
        if len(ranges) == 1 or self._free_slots() < 2:
            ranges = [(None, upto)]  # one peek of the project's slot itself
        self._decoder = PgOutputDecoder(set(self._tables), self._keys)
        self._decoder.check_utf8 = self._check_utf8
        self._reader = _PeekReader(self.url, self, ranges, max_changes, self._decode)
        self._reader.start()

    def _free_slots(self) -> int:
        """Replication slots the server can still create (the ranged read takes two temporary
        ones; with fewer free, the backlog is read as one peek)."""
        return self._query(
            "select current_setting('max_replication_slots')::int - count(*) "
            "from pg_replication_slots"
        )[0][0]

    def _decode(self, rows: list[bytes]) -> ChangeBatch | None:
        """Runs on the reader thread, in stream order (it alone touches the decoder and
        `_delivered` while a session's peek runs)."""
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
            item = self._reader.next_chunk()
            if item is _DONE:
                reader, self._reader = self._reader, None
                reader.join(timeout=30)
                self._wait_slot_released(reader.backend_pid)
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
        checkpoint = format_lsn(checkpoint_lsn) if checkpoint_lsn is not None else None
        tables = {}
        dead: list[DeadLetter] = []
        for t in self._tables:
            dt_ = decoded.tables.get(t)
            prev = self._state.get(t)
            cp = checkpoint or (prev.checkpoint if prev else None) or format_lsn(0)
            if dt_ is None:
                rows = pa.schema(meta_schema_fields()).empty_table()
                tables[t] = TableChanges(t, rows, self._keys.get(t, ()), end, cp)
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
        """Rows holding a value the platform cannot take (`columns_from_text`) leave the batch
        as dead letters: topic `pgoutput:<slot>`, partition = the change's `_seq`, offset = its
        `_lsn` (commit LSN) - the change's position. The rest of the batch is applied."""
        if REJECT_REASON not in rows.column_names:
            return rows, []
        reasons = rows.column(REJECT_REASON)
        bad = pc.is_valid(reasons)
        dead = []
        for r in rows.filter(bad).select([LSN, SEQ, REJECT_REASON, REJECT_VALUE]).to_pylist():
            where = Position(r[LSN], r[SEQ])
            dead.append(
                DeadLetter.of(
                    f"pgoutput:{self.slot}",
                    r[SEQ],
                    r[LSN],
                    table,
                    f"change at {where} of {table}: {r[REJECT_REASON]}",
                    r[REJECT_VALUE],
                )
            )
        log.warning(
            "%d change(s) of %s hold a value that cannot be taken, quarantined in "
            "_dead_letters: %s",
            len(dead),
            table,
            "; ".join(d.reason for d in dead[:5]),
        )
        keep = rows.filter(pc.invert(bad)).drop_columns([REJECT_REASON, REJECT_VALUE])
        return keep, dead

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
            lock_held=INGEST_LOCK_HELD,
            lock_params={"lock_class": INGEST_LOCK_CLASS, "lock_key": _ingest_lock_key(self.slot)},
        )


def _now(cur) -> dt.datetime:
    cur.execute("select now()")
    return cur.fetchone()[0]


__all__ = ["SlotFeed"]
