"""The Debezium-on-Kafka feed: topics `<prefix>.<schema>.<table>` written by Debezium's Postgres
connector (JSON converter), read with confluent-kafka.

Consumer
--------
One consumer with the deployment's `group.id`, `enable.auto.commit=false`,
`enable.auto.offset.store=false`, `isolation.level=read_committed`, `auto.offset.reset=earliest`
(enforced: a conflicting `KAFKA_*` setting is an error). The feed *assigns* every partition of
the open tables' topics itself instead of `subscribe()`-ing: the Feed contract has one reader at
a time, and a table's position spans all its partitions, so a group rebalance splitting a topic
over two readers could only break it (it also saves the join/rebalance wait). The group is still
the unit of committed offsets, which tools and `slot_status()` read.

Positions (the warehouse's newer-wins rule)
-------------------------------------------
Per table, the feed tracks `next[p]`, the next offset to read in each partition p of its topic.
A record at (p, o) gets `_lsn = sum over partitions of next[] after reading it` (for a
one-partition topic simply `o + 1`) and `_seq = p`. Reading any record raises exactly one
`next[p]`, so `_lsn` strictly increases in the order the feed delivers a table's records. Debezium
keys records by primary key, so all changes of a key are in one partition in offset (= commit)
order, hence newer changes of a key always carry a larger `_lsn`: newer wins per key. (Changing
a topic's partition count re-hashes keys; do that only with the connector stopped and the feed
caught up.) A table's batch `end` is `(sum of next[], max partition)`: at or after all its rows,
before every later record.

Re-sent events
--------------
Debezium delivers at least once: a connector that restarts emits again the events after its last
committed source offset, at new Kafka offsets, so they get new (larger) positions. Each row
carries the event's `source.lsn` as `_source_lsn`; the warehouse drops an event whose key,
`_source_lsn` and op are already in the change log or earlier in the batch (a truncate: its
`_source_lsn`), so it changes neither raw nor the change log a second time. Per key, Postgres
change LSNs follow commit order (a row's next change waits for the previous one's commit).

Checkpoint and acknowledging
----------------------------
The per-table checkpoint is `next[]` as JSON (`{"0": 120, "1": 97}`), stored by the warehouse
in the transaction that applied the batch. `ack(state)` commits those offsets to the group
(synchronously, never backwards) only after that commit. On `open()` the warehouse's checkpoint
is the truth: every partition is assigned at its checkpoint offset (the group's committed offset
is not used, it may lag behind after a crash between warehouse commit and ack); a table without
warehouse state starts at the oldest retained record, which is where Debezium's snapshot (`op`
'r') is, so `needs_snapshot()` is always empty. A checkpoint below a partition's low watermark
(retention deleted records never applied) raises `FeedError`: re-snapshot the table in Debezium.

A read session ends at the high watermarks taken when it opened (like the slot feed's peek), so
it ends under constant writes too.

Bad records and an unreachable broker
-------------------------------------
A record the decoder cannot read (not JSON, truncated, unknown op, missing image, another table's
`source.table`, a value its column cannot take) is not applied: it goes into the batch's
`dead_letters` (topic, partition, offset, reason, bounded bytes), which the warehouse writes to
`raw._dead_letters` in the batch's transaction, and the table's offsets move past it
(`dead_letters=False` makes it raise `EnvelopeError` instead).

A broker that stops answering never makes a session look caught up: disconnect errors are waited
out for `request_timeout` (librdkafka reconnects by itself), a silent idle period is checked with a
metadata request, offsets are committed asynchronously and read back within `request_timeout`, and
clients are closed within it; past that the read or the ack raises one-line `FeedError` and the
next ingest resumes from the warehouse's checkpoint.

Lag cost (`lag()`): one ListOffsets request per broker for all partitions' high watermarks
(AdminClient.list_offsets), plus, for partitions with unread records, one fetch of the oldest
unread record to read its `source.ts_ms` (a separate, never-committing peek consumer); the
group's committed offsets are fetched only for tables the warehouse has no state for.
`heartbeat()` does nothing: Debezium's `heartbeat.interval.ms` keeps its slot moving.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pyarrow as pa
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from analytics_assets.lib.debezium import TableDecoder
from analytics_assets.lib.errors import FeedError
from analytics_assets.lib.feeds.base import (
    ChangeBatch,
    DeadLetter,
    Position,
    TableChanges,
    TableLag,
    TableState,
    greatest,
    least,
)
from analytics_assets.lib.feeds.kafka_config import (
    BROKER_DOWN,
    admin_config,
    consumer_config,
    format_checkpoint,
    parse_checkpoint,
)
from analytics_assets.lib.feeds.kafka_lag import group_status, oldest_record_times, table_lags
from analytics_assets.settings import validate_identifier

log = logging.getLogger(__name__)


class KafkaFeed:
    """Debezium topics on Kafka. `config` holds librdkafka consumer properties."""

    kind = "kafka"

    def __init__(
        self,
        config: Mapping[str, Any],
        *,
        topic_prefix: str,
        tables: Sequence[str],
        schema: str = "public",
        column_types: Mapping[str, Mapping[str, pa.DataType]] | None = None,
        keys: Mapping[str, Sequence[str]] | None = None,
        poll_timeout: float = 0.5,
        idle_timeout: float = 5.0,
        request_timeout: float = 10.0,
        dead_letters: bool = True,
    ):
        self.config = consumer_config(config)
        self.group = str(self.config["group.id"])
        self.topic_prefix = topic_prefix
        self.schema = schema
        self.captured_tables = tuple(validate_identifier(t, "captured table") for t in tables)
        self.column_types = {t: dict(c) for t, c in (column_types or {}).items()}
        self.keys = {t: tuple(k) for t, k in (keys or {}).items()}
        self.poll_timeout = poll_timeout
        self.idle_timeout = idle_timeout
        self.request_timeout = request_timeout
        self.dead_letters = dead_letters  # False: a bad record raises EnvelopeError instead
        self._consumer: Consumer | None = None
        self._peeker: Consumer | None = None
        self._admin: AdminClient | None = None
        self._decoders: dict[str, TableDecoder] = {}
        self._tables: tuple[str, ...] = ()
        self._state: dict[str, TableState] = {}
        self._next: dict[str, dict[int, int]] = {}
        self._targets: dict[tuple[str, int], int] = {}
        self._open_parts: set[tuple[str, int]] = set()
        self._committed: dict[tuple[str, int], int] = {}
        self._by_topic: dict[str, str] = {}

    # -- clients ------------------------------------------------------------------------------

    def topic(self, table: str) -> str:
        return f"{self.topic_prefix}.{self.schema}.{table}"

    @property
    def consumer(self) -> Consumer:
        if self._consumer is None:
            self._consumer = Consumer(self.config)
        return self._consumer

    @property
    def admin(self) -> AdminClient:
        if self._admin is None:
            self._admin = AdminClient(admin_config(self.config))
        return self._admin

    def _peek_consumer(self) -> Consumer:
        if self._peeker is None:
            conf = dict(self.config)
            conf["group.id"] = f"{self.group}.lag-peek"  # never commits
            conf["enable.partition.eof"] = False
            self._peeker = Consumer(conf)
        return self._peeker

    def partitions(self) -> dict[str, list[int]]:
        """Partitions of every captured table's topic ([] for a topic that does not exist yet:
        Debezium creates it with the table's first event)."""
        try:
            md = self.consumer.list_topics(timeout=self.request_timeout)
        except KafkaException as exc:
            raise FeedError(
                f"cannot reach Kafka ({self.config['bootstrap.servers']}): {exc}"
            ) from None
        out = {}
        for t in self.captured_tables:
            tm = md.topics.get(self.topic(t))
            out[t] = sorted(tm.partitions) if tm is not None and tm.error is None else []
        return out

    def _watermarks(self, tps: list[tuple[str, int]]) -> dict[tuple[str, int], tuple[int, int]]:
        """(low, high) watermarks of `tps`, one ListOffsets round per kind for all of them."""
        if not tps:
            return {}
        out: dict[tuple[str, int], list[int]] = {tp: [0, 0] for tp in tps}
        for i, spec in enumerate((OffsetSpec.earliest(), OffsetSpec.latest())):
            futures = self.admin.list_offsets(
                {TopicPartition(t, p): spec for t, p in tps},
                isolation_level=_isolation_level(),
                request_timeout=self.request_timeout,
            )
            for tp, fut in futures.items():
                try:
                    out[(tp.topic, tp.partition)][i] = fut.result().offset
                except KafkaException as exc:
                    raise FeedError(
                        f"cannot read offsets of {tp.topic}[{tp.partition}]: {exc}"
                    ) from None
        return {tp: (lo, hi) for tp, (lo, hi) in out.items()}

    def _group_committed(self, tps: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        if not tps:
            return {}
        res = self.consumer.committed(
            [TopicPartition(t, p) for t, p in tps], timeout=self.request_timeout
        )
        return {(tp.topic, tp.partition): tp.offset for tp in res if tp.offset >= 0}

    # -- session ------------------------------------------------------------------------------

    def needs_snapshot(self, tables: Sequence[str], state: Mapping[str, TableState]) -> list[str]:
        return []  # Debezium's snapshot (op 'r') is on the topics

    def snapshot(
        self, tables: Sequence[str], max_rows: int, resync: Sequence[str] = ()
    ) -> Iterator[ChangeBatch]:
        return iter(())

    def open(self, tables: Sequence[str], state: Mapping[str, TableState]) -> None:
        unknown = [t for t in tables if t not in self.captured_tables]
        if unknown:
            raise FeedError(f"tables {unknown} are not captured (CAPTURED_TABLES)")
        self._tables = tuple(tables)
        self._state = dict(state)
        parts = self.partitions()
        self._by_topic = {self.topic(t): t for t in self._tables}
        missing = [self.topic(t) for t in self._tables if not parts[t]]
        if missing:
            log.warning("Kafka topics %s do not exist (yet): nothing to read for them", missing)
        self.ack(state)
        tps = [(self.topic(t), p) for t in self._tables for p in parts[t]]
        marks = self._watermarks(tps)
        assignment = []
        self._next = {}
        self._targets = {}
        for t in self._tables:
            checkpoint = parse_checkpoint(state[t].checkpoint) if t in state else {}
            nxt = {}
            for p in parts[t]:
                low, high = marks[(self.topic(t), p)]
                start = checkpoint.get(p)
                if start is not None and start < low:
                    raise FeedError(
                        f"{self.topic(t)}[{p}]: the warehouse is at offset {start} but the "
                        f"oldest retained record is {low}: changes were deleted by retention "
                        f"before they were applied. Re-snapshot {t} in Debezium (signal) "
                        "into a fresh warehouse table."
                    )
                nxt[p] = start if start is not None else low
                self._targets[(self.topic(t), p)] = high
                assignment.append(TopicPartition(self.topic(t), p, nxt[p]))
            self._next[t] = nxt
        self._open_parts = {
            (tp.topic, tp.partition)
            for tp in assignment
            if tp.offset < self._targets[(tp.topic, tp.partition)]
        }
        if not assignment:
            self.consumer.unassign()
            return
        # start offsets are explicit: neither the committed offset nor auto.offset.reset applies
        self.consumer.assign(assignment)

    def close(self) -> None:
        for client in (self._consumer, self._peeker):
            if client is not None:
                self._close_client(client)
        self._consumer = self._peeker = None
        self._open_parts = set()
        self._targets = {}

    def _close_client(self, client: Consumer) -> None:
        """Close within `request_timeout`: librdkafka's close waits for requests in flight, for
        ever on a broker that keeps connections open but does not answer; such a client is left
        to finish closing in the background."""

        def close() -> None:
            with contextlib.suppress(Exception):
                client.close()

        closer = threading.Thread(target=close, name="kafka-feed-close", daemon=True)
        closer.start()
        closer.join(self.request_timeout)
        if closer.is_alive():
            log.warning(
                "Kafka client did not close within %.0fs (the broker does not answer): "
                "left to close in the background",
                self.request_timeout,
            )

    def _decoder(self, table: str) -> TableDecoder:
        dec = self._decoders.get(table)
        if dec is None:
            dec = TableDecoder(
                table,
                key=self.keys.get(table, ()),
                column_types=self.column_types.get(table),
                topic=self.topic(table),
            )
            self._decoders[table] = dec
        return dec

    def _end(self, table: str) -> Position:
        nxt = self._next.get(table, {})
        return Position(sum(nxt.values()), max(nxt) if nxt else 0)

    def read_batch(self, max_changes: int) -> ChangeBatch | None:
        """Records up to about `max_changes`, or None once every partition reached the high
        watermark it had when the session opened."""
        if not self._tables:
            raise FeedError("open() the feed before reading")
        if not self._open_parts:
            return None
        t0 = time.perf_counter()
        messages = []
        idle_since = time.monotonic()
        down: KafkaError | None = None  # the last "broker unreachable" error since a record
        while not messages and self._open_parts:
            got = self.consumer.consume(max(1, max_changes), timeout=self.poll_timeout)
            for m in got:
                err = m.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        self._open_parts.discard((m.topic(), m.partition()))
                        continue
                    if err.code() in BROKER_DOWN:
                        down = err  # librdkafka reconnects on its own: wait, within bounds
                        continue
                    raise FeedError(f"Kafka consumer error: {err}")
                messages.append(m)
            if messages:
                break
            waited = time.monotonic() - idle_since
            if down is not None and waited > self.request_timeout:
                raise self._unreachable(down)
            if waited > self.idle_timeout and down is None:
                self._ping()  # a silent broker (hung, not refusing) must not look caught up
                log.warning(
                    "no records for %.0fs below the session's high watermarks %s: ending the "
                    "session (aborted Kafka transactions or compaction can leave such gaps)",
                    self.idle_timeout,
                    sorted(self._open_parts),
                )
                self._open_parts = set()
        if not messages:
            return None
        per_table: dict[str, tuple[list, list, list, list, list]] = {}
        for m in messages:
            topic, p, off = m.topic(), m.partition(), m.offset()
            table = self._by_topic.get(topic)
            if table is None:
                continue
            nxt = self._next[table]
            if off < nxt.get(p, 0):
                continue  # already delivered (a re-fetch after a seek)
            nxt[p] = off + 1
            if off + 1 >= self._targets.get((topic, p), 0):
                self._open_parts.discard((topic, p))
            vals, keys, lsns, seqs, where = per_table.setdefault(table, ([], [], [], [], []))
            vals.append(m.value())
            keys.append(m.key())
            lsns.append(sum(nxt.values()))
            seqs.append(p)
            where.append((p, off))
        tables: dict[str, TableChanges] = {}
        dead: list[DeadLetter] = []
        first = last = None
        min_ts = max_ts = None
        for t in self._tables:
            end = self._end(t)
            checkpoint = format_checkpoint(self._next.get(t, {}))
            if t not in per_table:
                tables[t] = TableChanges.none(t, self.keys.get(t, ()), end, checkpoint)
                continue
            vals, keys, lsns, seqs, where = per_table[t]
            dec = self._decoder(t)
            decoded = dec.decode(
                vals, lsns, seqs, keys=keys, where=where, quarantine=self.dead_letters
            )
            for i, why in decoded.rejected:
                p, off = where[i]
                dead.append(DeadLetter.of(self.topic(t), p, off, t, why, vals[i], keys[i]))
            tables[t] = TableChanges(
                t,
                decoded.rows,
                dec.key,
                end,
                checkpoint,
                decoded.truncates,
                decoded.truncate_source_lsns,
            )
            lo = Position(lsns[0], seqs[0])
            first = least(first, lo)
            last = greatest(last, end)
            if decoded.min_commit_ts is not None:
                min_ts = least(min_ts, decoded.min_commit_ts)
                max_ts = greatest(max_ts, decoded.max_commit_ts)
        batch = ChangeBatch(tables, first, last, min_ts, max_ts, dead_letters=dead)
        batch.decode_seconds = time.perf_counter() - t0
        if dead:
            log.warning(
                "%d Debezium record(s) cannot be decoded, quarantined in _dead_letters: %s",
                len(dead),
                "; ".join(f"{d.topic}[{d.partition}]@{d.offset}: {d.reason}" for d in dead[:5]),
            )
        return batch

    def _ping(self) -> None:
        """Raise FeedError when the broker does not answer a metadata request in time."""
        try:
            self.consumer.list_topics(timeout=self.request_timeout)
        except KafkaException as exc:
            raise self._unreachable(exc.args[0] if exc.args else exc) from None

    def _unreachable(self, err: Any) -> FeedError:
        topics = sorted({t for t, _ in self._open_parts})
        return FeedError(
            f"Kafka broker {self.config['bootstrap.servers']} unreachable while reading "
            f"{', '.join(topics)} ({err}); nothing unread was applied and the warehouse kept its "
            "position: re-run the ingest once the broker is back"
        )

    # -- acknowledging ------------------------------------------------------------------------

    def ack(self, state: Mapping[str, TableState]) -> None:
        """Commit the warehouse's checkpoints as the group's offsets (never backwards)."""
        self._state.update(state)
        wanted = {
            (self.topic(t), p): off
            for t, s in state.items()
            if t in self.captured_tables
            for p, off in parse_checkpoint(s.checkpoint).items()
        }
        unknown = [tp for tp in wanted if tp not in self._committed]
        if unknown:  # one request for the group's offsets we have not seen yet
            got = self._group_committed(unknown)
            self._committed.update({tp: got.get(tp, -1) for tp in unknown})
        offsets = [
            TopicPartition(t, p, off)
            for (t, p), off in wanted.items()
            if off > self._committed.get((t, p), -1)
        ]
        if not offsets:
            return
        self._commit(offsets)
        for tp in offsets:
            self._committed[(tp.topic, tp.partition)] = tp.offset

    def _commit(self, offsets: list[TopicPartition]) -> None:
        """Commit `offsets` and read them back, within `request_timeout`. (A synchronous commit
        can wait forever on a broker that keeps the connection open but does not answer.)"""
        deadline = time.monotonic() + self.request_timeout
        wanted = {(tp.topic, tp.partition): tp.offset for tp in offsets}
        err: Any = None
        while True:
            try:
                self.consumer.commit(offsets=offsets, asynchronous=True)
                left = max(0.1, deadline - time.monotonic())
                got = self.consumer.committed(
                    [TopicPartition(t, p) for t, p in wanted], timeout=left
                )
                if all(tp.offset >= wanted[(tp.topic, tp.partition)] for tp in got):
                    return
            except KafkaException as exc:
                err = exc.args[0] if exc.args else exc
                if isinstance(err, KafkaError) and not (
                    err.retriable() or err.code() in BROKER_DOWN | {KafkaError._WAIT_COORD}
                ):
                    raise FeedError(
                        f"cannot commit offsets for group {self.group!r}: {err}"
                    ) from None
            if time.monotonic() > deadline:
                raise FeedError(
                    f"Kafka broker {self.config['bootstrap.servers']} did not take the offsets "
                    f"of group {self.group!r} within {self.request_timeout:g}s "
                    f"({err or 'not confirmed'}); the warehouse holds the batch and the next "
                    "ingest resumes from its position: re-run the ingest once the broker is back"
                )
            time.sleep(0.1)

    def committed(self) -> dict[str, dict[int, int]]:
        """The group's committed offsets per table (from the broker)."""
        parts = self.partitions()
        tps = [(self.topic(t), p) for t in self.captured_tables for p in parts[t]]
        got = self._group_committed(tps)
        return {
            t: {p: got[(self.topic(t), p)] for p in parts[t] if (self.topic(t), p) in got}
            for t in self.captured_tables
        }

    def heartbeat(self) -> None:
        """Nothing to do: Debezium's `heartbeat.interval.ms` moves its replication slot."""

    # -- lag ----------------------------------------------------------------------------------

    def _positions(
        self, state: Mapping[str, TableState], parts: Mapping[str, list[int]], marks
    ) -> dict[tuple[str, int], int]:
        """Where reading would resume: warehouse checkpoint, else the group's committed offset,
        else the oldest retained record."""
        pos: dict[tuple[str, int], int] = {}
        need_group = []
        for t in self.captured_tables:
            cp = parse_checkpoint(state[t].checkpoint) if t in state else None
            for p in parts[t]:
                tp = (self.topic(t), p)
                if cp is not None:
                    pos[tp] = cp.get(p, marks[tp][0])
                else:
                    need_group.append(tp)
        got = self._group_committed(need_group)
        for tp in need_group:
            pos[tp] = got.get(tp, marks[tp][0])
        return pos

    def lag(self, state: Mapping[str, TableState] | None = None) -> dict[str, TableLag]:
        """Per table: records not yet applied (offset lag, tombstones included) and seconds since
        the `source.ts_ms` of the oldest of them."""
        state = dict(state if state is not None else self._state)
        parts = self.partitions()
        tps = [(self.topic(t), p) for t in self.captured_tables for p in parts[t]]
        marks = self._watermarks(tps)
        pos = self._positions(state, parts, marks)
        behind = {tp: max(0, marks[tp][1] - max(pos[tp], marks[tp][0])) for tp in tps}
        oldest = self._oldest_ts({tp: max(pos[tp], marks[tp][0]) for tp in tps if behind[tp]})
        topics = {t: [(self.topic(t), p) for p in parts[t]] for t in self.captured_tables}
        return table_lags(topics, behind, oldest, dt.datetime.now(dt.UTC))

    def _oldest_ts(
        self, starts: Mapping[tuple[str, int], int]
    ) -> dict[tuple[str, int], dt.datetime]:
        if not starts:
            return {}
        return oldest_record_times(self._peek_consumer(), starts, self.request_timeout)

    def slot_status(self) -> dict[str, Any]:
        """The consumer group's view: committed offsets, high watermarks and offset lag per
        table (the Kafka counterpart of the slot's health)."""
        try:
            parts = self.partitions()
        except FeedError as exc:
            return {"kind": "kafka", "group": self.group, "reachable": False, "error": str(exc)}
        tps = [(self.topic(t), p) for t in self.captured_tables for p in parts[t]]
        marks = self._watermarks(tps)
        committed = self._group_committed(tps)
        topics = {t: (self.topic(t), parts[t]) for t in self.captured_tables}
        return group_status(self.group, topics, marks, committed)


def _isolation_level():
    from confluent_kafka import IsolationLevel

    return IsolationLevel.READ_COMMITTED


__all__ = ["KafkaFeed"]
