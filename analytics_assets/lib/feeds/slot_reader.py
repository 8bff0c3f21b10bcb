"""The slot feed's ranged reader: the backlog up to a WAL position, peeked as binary COPY by
one session, or as consecutive LSN ranges by two sessions taking turns on temporary copies of the
slot, handed on in chunks through a bounded queue by reader threads. It knows the slot, the
publication and the source's URL, never the feed: `PeekReader(url, slot, publication, ranges,
chunk_messages, transform, combine)`, then `start()`, `next_chunk()` until `DONE`, `stop()`.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import queue
import threading
from collections.abc import Callable
from typing import Any

from psycopg2 import sql

from analytics_assets.lib import pg
from analytics_assets.lib.feeds.base import format_lsn
from analytics_assets.lib.pgoutput_wire import COPY_HEADER

DONE = object()  # the last item of a reader's queue: every range was handed on
FIRST_CHUNK_MESSAGES = 20_000
# A backlog of more than 1.5 x this many bytes of WAL is peeked in ranges (see PeekReader)
PEEK_RANGE_FIRST = 8 << 20
# Each read decodes again from its copy's restart point, which moves only at the WAL's
# running-transactions records (every 15 s of activity, and at checkpoints): fewer, larger
# ranges decode less twice (4 against 2: BENCHMARKS.md).
PEEK_RANGE_GROWTH = 4
PEEK_RANGE_MAX = 256 << 20


def peek_copy_sql(
    slot: str, publication: str, upto_lsn: int, consume: bool = False, binary: bool = False
) -> sql.Composed:
    """COPY of the slot's pgoutput messages up to `upto_lsn` (binary, one bytea column).
    `consume` (a temporary copy only: the project's slot moves only on ack) also moves the slot
    past them; `binary` asks pgoutput for values in binary (`lib.pgoutput_binary`)."""
    fn = "pg_logical_slot_get_binary_changes" if consume else "pg_logical_slot_peek_binary_changes"
    return sql.SQL(
        "copy (select data from {fn}({slot}, {upto}::pg_lsn, "
        "null, 'proto_version', '1', 'publication_names', {pub}, 'messages', 'true'{binary})) "
        "to stdout with (format binary)"
    ).format(
        fn=sql.Identifier(fn),
        slot=sql.Literal(slot),
        upto=sql.Literal(format_lsn(upto_lsn)),
        pub=sql.Literal(publication),
        binary=sql.SQL(", 'binary', 'true'" if binary else ""),  # an option since PostgreSQL 14
    )


def peek_ranges(
    start: int, upto: int, first: int, growth: float, largest: int
) -> list[tuple[int, int]]:
    """LSN ranges [lo, hi) that cover [start, upto): the first `first` bytes of WAL, then each
    range `growth` times the one before (at most `largest`). The remainder (at most 1.5 times
    the next size) is split evenly into ranges of at most twice the one before: the server
    decodes the next range while the client works through the current one, and the client
    does so at roughly half the server's pace, so a last range far larger than the one before
    would leave the client waiting for it, then working alone (BENCHMARKS.md)."""
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


class PeekReader:
    """Reads the slot from `start` to `upto` as one or more peeks (binary COPY), decodes the
    rows in chunks (`transform`, in stream order) and hands the results on through a bounded
    queue. Decoding here, off the applying thread, overlaps it with the warehouse's work (numpy,
    Arrow and DuckDB release the GIL for their heavy parts; BENCHMARKS.md compares it with
    decoding on the applying thread).

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
    client (slightly faster than letting both sessions decode at once: BENCHMARKS.md). Each
    read starts decoding at the copy's restart point (the last running-transactions record
    before its position), so some WAL is decoded twice; growing ranges keep the reads few.

    Ranges are complementary: a peek up to L includes every transaction whose commit record
    starts before L, and a slot advanced to L skips exactly those. A record decoded twice at a
    boundary repeats positions, which the decoder skips (`skip_through`).

    A range rarely ends on a chunk boundary. With `combine` (two transformed chunks in stream
    order -> one, or None when they cannot be one), a range's last, partial chunk is held and
    handed on together with the next range's first, which is read that much shorter: each
    handed-on item but the last then holds about `chunk_messages` messages, as with one peek,
    instead of the applying thread taking a small extra batch at every range boundary."""

    def __init__(
        self,
        url: str,
        slot: str,
        publication: str,
        ranges: list[tuple[int | None, int]],
        chunk_messages: int,
        transform: Callable[[list[bytes]], Any],
        combine: Callable[[Any, Any], Any] | None = None,
        max_chunks: int = 2,
        binary: bool = False,
    ):
        """`ranges`: [(None, upto)] peeks the project's slot itself up to `upto`; several
        (lo, hi) ranges (`peek_ranges`) are read from temporary copies of it. `binary`: values
        in binary (`peek_copy_sql`)."""
        self.url = url
        self.binary = binary
        self.slot = slot
        self.publication = publication
        self.chunk_messages = chunk_messages
        self.first_chunk_messages = max(1, min(chunk_messages, FIRST_CHUNK_MESSAGES))
        self.transform = transform
        self.combine = combine
        self._carry: Any = None  # a range's transformed last chunk, handed on with the next's first
        self._carry_messages = 0
        self.queue: queue.Queue = queue.Queue(maxsize=max_chunks)
        self.stopping = threading.Event()
        self._turn = 0
        self._materialized = -1
        self._turn_changed = threading.Condition()
        self._first_chunk = True
        self.ranges = ranges
        if len(ranges) == 1:
            self.workers = [_RangeWorker(self, None, [0])]
        else:
            session = next(_READ_SLOTS)
            self.workers = [
                _RangeWorker(
                    self,
                    f"{slot[:32]}_rd{os.getpid()}_{session}_{i}",
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
            if self._carry is not None:
                self.put(self._carry)
                self._carry = None
            self.put(DONE)

    def chunk_size(self) -> int:
        """Messages per chunk: the first chunk is smaller so the applying thread starts sooner
        (a full first chunk would be decoded while nothing else runs)."""
        size = self.first_chunk_messages if self._first_chunk else self.chunk_messages
        return max(1, size - self._carry_messages)

    def hand_over(self, rows: list[bytes], range_end: bool = False) -> None:
        """Transform `rows` (the next messages in stream order) and hand the result on; at a
        range's end (`range_end`, any range but the last), a partial chunk is held instead to
        go with the next range's first (`combine`)."""
        if rows and rows[-1] == b"\xff\xff":
            rows.pop()  # the COPY trailer (a data row is never 2 bytes long)
        if not rows:
            return
        self._first_chunk = False
        messages = len(rows)
        try:
            item = self.transform(rows)
        except BaseException:
            # what was read before the failing rows is handed on before the error
            if self._carry is not None:
                self.put(self._carry)
                self._carry, self._carry_messages = None, 0
            raise
        if item is None:
            return
        if self._carry is not None:
            joined = self.combine(self._carry, item)
            if joined is None:  # they cannot be one: the held chunk goes on its own
                self.put(self._carry)
            else:
                item, messages = joined, messages + self._carry_messages
            self._carry, self._carry_messages = None, 0
        more = self._turn + 1 < len(self.ranges)
        if range_end and more and self.combine is not None and messages < self.chunk_messages:
            self._carry, self._carry_messages = item, messages
            return
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
    """One session of a `PeekReader`: peeks its ranges (every other one) in order."""

    def __init__(self, reader: PeekReader, copy_slot: str | None, indexes: list[int]):
        super().__init__(daemon=True, name=f"cdc-peek-reader-{indexes[0]}")
        self.reader = reader
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
            self.conn = pg.session(self.url)
            self.backend_pid = self.conn.get_backend_pid()
            with self.conn.cursor() as cur:
                slot = reader.slot
                if self.copy_slot is not None:
                    cur.execute(
                        "select pg_copy_logical_replication_slot(%s, %s, true)",
                        (reader.slot, self.copy_slot),
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
                    cur.copy_expert(
                        peek_copy_sql(
                            slot, reader.publication, hi, consume, reader.binary
                        ).as_string(cur),
                        self,
                    )
                    if self._header:  # no row came (a COPY always sends its header)
                        reader.materialized(index)
                        reader.wait_turn(index)
                    rows, self._rows = self._rows, []
                    reader.hand_over(rows, range_end=True)  # a peek ends on a transaction boundary
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


__all__ = [
    "DONE",
    "PEEK_RANGE_FIRST",
    "PEEK_RANGE_GROWTH",
    "PEEK_RANGE_MAX",
    "PeekReader",
    "peek_copy_sql",
    "peek_ranges",
]
