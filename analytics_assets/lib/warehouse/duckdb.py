"""The DuckDB warehouse: Arrow batches registered as views, set-based SQL, one transaction.

SQL is produced by the small functions below (one per statement) so a BigQuery adapter can
mirror them in its dialect; nothing here loops over rows in Python.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from analytics_assets.lib.feeds.base import (
    COMMIT_TS,
    IS_DELETED,
    LOADED_AT,
    LSN,
    META_COLUMNS,
    OP,
    SEQ,
    SOURCE_LSN,
    UNCHANGED,
    ChangeBatch,
    Position,
    TableChanges,
    TableState,
)
from analytics_assets.lib.partitions import BUCKET_US, business_dates
from analytics_assets.lib.warehouse.base import (
    DEAD_LETTER_ID,
    DEAD_LETTERS,
    DEFAULT_BUSINESS_DATE_COLUMNS,
    ROW_ID,
    ApplyResult,
    TableApplyResult,
    dead_letter_rows,
    numbered,
    resent_since,
    rows_after,
    truncate_commit_ts,
    unchanged_columns,
    without_rows,
)
from analytics_assets.lib.warehouse.names import STATE_TABLE, q
from analytics_assets.settings import validate_identifier

STAGE = "_cdc_stage"
BATCH_VIEW = "_cdc_batch"
DEAD_VIEW = "_cdc_dead"


def column_type(t: pa.DataType) -> str:
    if pa.types.is_int16(t):
        return "SMALLINT"
    if pa.types.is_int32(t):
        return "INTEGER"
    if pa.types.is_int64(t):
        return "BIGINT"
    if pa.types.is_boolean(t):
        return "BOOLEAN"
    if pa.types.is_floating(t):
        return "DOUBLE"
    if pa.types.is_decimal(t):
        return f"DECIMAL({t.precision}, {t.scale})"
    if pa.types.is_timestamp(t):
        return "TIMESTAMPTZ" if t.tz else "TIMESTAMP"
    if pa.types.is_date(t):
        return "DATE"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return "BLOB"
    if pa.types.is_list(t):
        return f"{column_type(t.value_type)}[]"
    return "VARCHAR"


# -- statements (dialect-specific) ---------------------------------------------------------------


def create_raw_sql(schema: str, table: str, columns: Sequence[tuple[str, str]]) -> str:
    cols = ", ".join(f"{q(c)} {t}" for c, t in columns)
    return (
        f"create table if not exists {q(schema)}.{q(table)} ({cols}, "
        f"{LSN} BIGINT NOT NULL, {SEQ} BIGINT NOT NULL, {OP} VARCHAR NOT NULL, "
        f"{IS_DELETED} BOOLEAN NOT NULL, {COMMIT_TS} TIMESTAMPTZ, {LOADED_AT} TIMESTAMPTZ NOT NULL, "
        f"{SOURCE_LSN} BIGINT)"
    )


def create_changes_sql(schema: str, table: str, columns: Sequence[tuple[str, str]]) -> str:
    cols = ", ".join(f"{q(c)} {t}" for c, t in columns)
    return (
        f"create table if not exists {q(schema)}.{q(table + '_changes')} ({cols}, "
        f"{LSN} BIGINT NOT NULL, {SEQ} BIGINT NOT NULL, {OP} VARCHAR NOT NULL, "
        f"{COMMIT_TS} TIMESTAMPTZ, {LOADED_AT} TIMESTAMPTZ NOT NULL, {SOURCE_LSN} BIGINT)"
    )


def add_column_sql(schema: str, table: str, column: str, type_: str) -> str:
    return f"alter table {q(schema)}.{q(table)} add column if not exists {q(column)} {type_}"


def after_position(alias: str, pos: Position | None) -> str:
    if pos is None:
        return "true"
    p = f"{alias}." if alias else ""
    return (
        f"({p}{LSN} > {int(pos.lsn)} or ({p}{LSN} = {int(pos.lsn)} and {p}{SEQ} > {int(pos.seq)}))"
    )


def stage_sql(
    columns: Sequence[str],
    key: Sequence[str],
    unchanged: Sequence[str],
    stored: Position | None,
) -> str:
    """The batch's rows after the stored position. A column a change does not carry (in
    `_unchanged_cols`) takes the value of the latest earlier change of the same key in the batch;
    `_miss_<i>` says it must come from the warehouse row instead."""
    parts = []
    miss = []
    keys = ", ".join(q(k) for k in key)
    for c in columns:
        if c in unchanged:
            i = list(unchanged).index(c)
            carried = f"not list_contains(coalesce({UNCHANGED}, []), '{_lit(c)}')"
            prev = (
                f"last_value(case when {carried} then {q(c)} end ignore nulls) over "
                f"(partition by {keys} order by {LSN}, {SEQ} "
                f"rows between unbounded preceding and 1 preceding)"
            )
            parts.append(f"case when {carried} then {q(c)} else {prev} end as {q(c)}")
            miss.append(f"(not {carried}) and {prev} is null as _miss_{i}")
        else:
            parts.append(q(c))
    meta = f"{LSN}, {SEQ}, {OP}, {IS_DELETED}, {COMMIT_TS}"
    return (
        f"create or replace temp table {STAGE} as select {', '.join(parts + miss)}, {meta} "  # noqa: S608 - quoted identifiers, ints
        f"from {BATCH_VIEW} where {after_position('', stored)}"
    )


def changes_insert_sql(
    schema: str, table: str, columns: Sequence[str], key: Sequence[str], unchanged: Sequence[str]
) -> str:
    """Append every staged change to the change log; values a change did not carry are taken
    from the warehouse row as it was before this batch."""
    sel = []
    for c in columns:
        if c in unchanged:
            i = list(unchanged).index(c)
            sel.append(f"case when s._miss_{i} then r.{q(c)} else s.{q(c)} end as {q(c)}")
        else:
            sel.append(f"s.{q(c)}")
    join = ""
    if unchanged:
        on = " and ".join(f"r.{q(k)} = s.{q(k)}" for k in key)
        join = f" left join {q(schema)}.{q(table)} r on {on}"
    return (
        f"insert into {q(schema)}.{q(table + '_changes')} by name "  # noqa: S608 - quoted identifiers, ints
        f"select {', '.join(sel)}, s.{LSN}, s.{SEQ}, s.{OP}, s.{COMMIT_TS}, "
        f"$loaded_at as {LOADED_AT} from {STAGE} s{join}"
    )


def merge_sql(
    schema: str,
    table: str,
    columns: Sequence[str],
    key: Sequence[str],
    unchanged: Sequence[str],
    unique_keys: bool = False,
) -> str:
    """Newest change per key wins; an older change never overwrites a newer row. With
    `unique_keys` (each key changes once in the batch) the newest-per-key step is skipped."""
    keys = ", ".join(q(k) for k in key)
    on = " and ".join(f"t.{q(k)} = s.{q(k)}" for k in key)
    sets = []
    for c in columns:
        if c in key:
            continue
        if c in unchanged:
            i = list(unchanged).index(c)
            sets.append(f"{q(c)} = case when s._miss_{i} then t.{q(c)} else s.{q(c)} end")
        else:
            sets.append(f"{q(c)} = s.{q(c)}")
    meta = [LSN, SEQ, OP, IS_DELETED, COMMIT_TS]
    sets += [f"{m} = s.{m}" for m in meta] + [f"{LOADED_AT} = $loaded_at"]
    ins_cols = [q(c) for c in columns] + meta + [LOADED_AT]
    ins_vals = [f"s.{q(c)}" for c in columns] + [f"s.{m}" for m in meta] + ["$loaded_at"]
    newer = f"(s.{LSN} > t.{LSN} or (s.{LSN} = t.{LSN} and s.{SEQ} > t.{SEQ}))"
    source = (
        STAGE
        if unique_keys
        else f"(select * from {STAGE} qualify row_number() over "  # noqa: S608 - quoted identifiers
        f"(partition by {keys} order by {LSN} desc, {SEQ} desc) = 1)"
    )
    return (
        f"merge into {q(schema)}.{q(table)} as t using {source} as s on {on} "  # noqa: S608 - quoted identifiers
        f"when matched and {newer} then update set {', '.join(sets)} "
        f"when not matched then insert ({', '.join(ins_cols)}) values ({', '.join(ins_vals)})"
    )


def truncate_sql(schema: str, table: str, pos: Position) -> str:
    older = f"({LSN} < {int(pos.lsn)} or ({LSN} = {int(pos.lsn)} and {SEQ} < {int(pos.seq)}))"
    return (
        f"update {q(schema)}.{q(table)} set {IS_DELETED} = true, {OP} = 't', "  # noqa: S608 - quoted identifiers, ints
        f"{LSN} = {int(pos.lsn)}, {SEQ} = {int(pos.seq)}, {COMMIT_TS} = $commit_ts, "
        f"{LOADED_AT} = $loaded_at where {older}"
    )


def truncate_change_sql(schema: str, table: str, pos: Position) -> str:
    return (
        f"insert into {q(schema)}.{q(table + '_changes')} by name select "
        f"{int(pos.lsn)}::BIGINT as {LSN}, {int(pos.seq)}::BIGINT as {SEQ}, 't' as {OP}, "
        f"$commit_ts::TIMESTAMPTZ as {COMMIT_TS}, $loaded_at as {LOADED_AT}, "
        f"$source_lsn::BIGINT as {SOURCE_LSN}"
    )


def resent_rows_sql(schema: str, table: str, key: Sequence[str], since: bool) -> str:
    """`_row` of each batch event applied before: the same key, `_source_lsn` and op are in the
    change log (a Debezium connector that restarted re-sent it at a new offset) or earlier in the
    batch. With `since` the change log is read from the batch's oldest commit time on (a
    re-sent event repeats its commit time), which keeps the scan to its newest row groups."""
    on = " and ".join(f"c.{q(k)} = b.{q(k)}" for k in key)
    keys = ", ".join(f"b.{q(k)}" for k in key)
    log = f"{q(schema)}.{q(table + '_changes')}"
    return (
        f"select {ROW_ID} from (select b.{ROW_ID}, row_number() over (partition by {keys}, "  # noqa: S608 - quoted identifiers
        f"b.{SOURCE_LSN}, b.{OP} order by b.{LSN}, b.{SEQ}) as nth, exists (select 1 from {log} c "
        f"where {on} and c.{SOURCE_LSN} = b.{SOURCE_LSN} and c.{OP} = b.{OP}"
        f"{f' and c.{COMMIT_TS} >= $since' if since else ''}) as logged "
        f"from {BATCH_VIEW} b where b.{SOURCE_LSN} is not null) where logged or nth > 1"
    )


def truncate_resent_sql(schema: str, table: str) -> str:
    return (
        f"select count(*) from {q(schema)}.{q(table + '_changes')} "  # noqa: S608 - quoted identifiers
        f"where {OP} = 't' and {SOURCE_LSN} = $source_lsn"
    )


def create_dead_letters_sql(schema: str) -> str:
    return (
        f"create table if not exists {q(schema)}.{q(DEAD_LETTERS)} (topic VARCHAR NOT NULL, "
        "kafka_partition BIGINT NOT NULL, kafka_offset BIGINT NOT NULL, table_name VARCHAR, "
        "reason VARCHAR NOT NULL, record_key BLOB, record_value BLOB, "
        "value_bytes BIGINT NOT NULL, first_seen_at TIMESTAMPTZ NOT NULL)"
    )


def dead_letters_insert_sql(schema: str) -> str:
    """The batch's dead letters not stored yet (a replayed record is not added twice)."""
    same = " and ".join(f"x.{c} = d.{c}" for c in DEAD_LETTER_ID)
    return (
        f"insert into {q(schema)}.{q(DEAD_LETTERS)} by name "  # noqa: S608 - quoted identifiers
        f"select d.*, $loaded_at as first_seen_at from {DEAD_VIEW} d where not exists "
        f"(select 1 from {q(schema)}.{q(DEAD_LETTERS)} x where {same})"
    )


def before_buckets_sql(schema: str, table: str, column: str, key: Sequence[str]) -> str:
    """15-minute buckets of the business timestamp of the warehouse rows that this batch's
    updates and deletes replace (their before images)."""
    on = " and ".join(f"r.{q(k)} = s.{q(k)}" for k in key)
    return (
        f"select distinct epoch_us(r.{q(column)}) // {BUCKET_US} from {q(schema)}.{q(table)} r "  # noqa: S608 - quoted identifiers, ints
        f"semi join (select * from {STAGE} where {OP} in ('u', 'd')) s on {on}"
    )


def before_values_sql(schema: str, table: str, column: str, key: Sequence[str]) -> str:
    on = " and ".join(f"r.{q(k)} = s.{q(k)}" for k in key)
    return (
        f"select distinct r.{q(column)} from {q(schema)}.{q(table)} r "  # noqa: S608 - quoted identifiers, ints
        f"semi join (select * from {STAGE} where {OP} in ('u', 'd')) s on {on}"
    )


def _lit(text: str) -> str:
    return text.replace("'", "''")


# -- the adapter ---------------------------------------------------------------------------------


def ingest_memory_limit(batch_size: int) -> str:
    """DuckDB memory_limit for an ingest with batches of `batch_size` changes: 2 KiB a change,
    at least 256 MiB. Without one, DuckDB keeps every row written since the last checkpoint
    (and the update versions) in memory, so the ingest's RSS grew with the backlog (~880 MB for
    2M changes, 50k batches); with it, DuckDB spills those to `<file>.tmp` and RSS stays flat
    (~600 MB) at the same apply rate (bench/cdc_throughput.py --backlog 2000000)."""
    return f"{max(256, (int(batch_size) * 2) // 1024)}MiB"


def connect_waiting(
    path: Path,
    lock_timeout: float,
    *,
    read_only: bool = False,
    setting: str | None = "WAREHOUSE_LOCK_TIMEOUT_SECONDS",
) -> duckdb.DuckDBPyConnection:
    """Open the DuckDB file (for writing, unless `read_only`). Another process holding it (an
    ingest, a run, a notebook) gets `lock_timeout` seconds to let go; then `WarehouseLocked`
    names that process (and `setting`, the one that sets the wait). Nothing is written before
    the file is ours, so a refused ingest leaves no partial state."""
    from analytics_assets.lib.errors import WarehouseLocked

    deadline = time.monotonic() + lock_timeout
    pause = 0.05
    while True:
        try:
            return duckdb.connect(str(path), read_only=read_only)
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower():
                raise
            left = deadline - time.monotonic()
            if left <= 0:
                waited = f"waited {lock_timeout:g}s" + (f" ({setting})" if setting else "")
                raise WarehouseLocked(
                    f"the DuckDB warehouse {path} is locked by another process "
                    f"({_lock_holder(str(exc))}); {waited}. Another ingest or run is writing "
                    "it, or a notebook holds it open: wait for it or close it, then run again"
                ) from None
            time.sleep(min(pause, left))
            pause = min(pause * 2, 1.0)


def _lock_holder(message: str) -> str:
    """'... Conflicting lock is held in /usr/bin/python3 (PID 123) ...' -> PID and command."""
    _, _, rest = message.partition("(PID ")
    pid = rest.split(")", 1)[0].strip()
    if not pid.isdigit():
        return "process unknown"
    import re

    import psutil

    try:
        cmd = " ".join(psutil.Process(int(pid)).cmdline())
    except (psutil.Error, OSError):
        cmd = message.partition("held in ")[2].partition(" (PID")[0]
    cmd = re.sub(r"(://[^:/@\s]*):[^@\s]*@", r"\1:***@", cmd)  # a DSN's password stays hidden
    cmd = cmd if len(cmd) <= 120 else cmd[:117] + "..."
    return f"PID {pid}: {cmd}" if cmd else f"PID {pid}"


class DuckDBWarehouse:
    def __init__(
        self,
        path: str | Path,
        *,
        schema: str = "raw",
        business_date_columns: Mapping[str, str] | None = None,
        timezone: str = "UTC",
        feed_kind: str = "slot",
        checkpoint_threshold: str = "1GB",
        memory_limit: str | None = None,
        threads: int | None = 1,
        lock_timeout: float = 0.0,
    ):
        self.path = Path(path)
        self.schema = validate_identifier(schema, "warehouse schema")
        self.business_date_columns = dict(
            DEFAULT_BUSINESS_DATE_COLUMNS
            if business_date_columns is None
            else business_date_columns
        )
        self.timezone = timezone
        self.feed_kind = feed_kind
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.con = connect_waiting(self.path, lock_timeout)
        # DuckDB checkpoints when its WAL passes this size, rewriting every row group a MERGE
        # touched; with the 16MB default that happened almost every CDC batch (cost growing
        # with the table), so let the WAL grow and checkpoint far less often.
        self.con.execute(f"set checkpoint_threshold = '{_lit(checkpoint_threshold)}'")
        if memory_limit:  # DuckDB caches up to 80% of RAM by default
            self.con.execute(f"set memory_limit = '{_lit(memory_limit)}'")
        # One DuckDB thread by default: a batch's statements (change log insert, MERGE of <= one
        # row group's worth of keys) gain little from parallelism, while extra worker threads
        # compete for the cores with the feed's decoding thread and the source. Measured on 2
        # cores (bench/cdc_throughput.py, 500k changes): apply per 50k batch 0.13 -> 0.11 s.
        if threads:
            self.con.execute(f"set threads = {int(threads)}")
        self._in_txn = False
        # tables written in the open transaction (their committed state is not "before" it)
        self._touched: set[str] = set()
        self._before_pool: ThreadPoolExecutor | None = None
        self._before_con: duckdb.DuckDBPyConnection | None = None
        self._state: dict[str, TableState] | None = None
        self._pending_state: dict[str, TableState] = {}
        self._columns: dict[str, list[str]] = {}
        self.con.execute(f"create schema if not exists {q(self.schema)}")
        self.con.execute(
            f"create table if not exists {q(self.schema)}.{STATE_TABLE} ("
            "table_name VARCHAR PRIMARY KEY, position_lsn BIGINT NOT NULL, "
            "position_seq BIGINT NOT NULL, checkpoint VARCHAR NOT NULL, feed VARCHAR, "
            "updated_at TIMESTAMPTZ NOT NULL)"
        )

    # -- schema -------------------------------------------------------------------------------

    def _existing_columns(self, table: str) -> list[str]:
        if table not in self._columns:
            rows = self.con.execute(
                "select column_name from information_schema.columns "
                "where table_schema = ? and table_name = ? order by ordinal_position",
                [self.schema, table],
            ).fetchall()
            self._columns[table] = [r[0] for r in rows]
        return self._columns[table]

    def ensure_tables(self, table: str, schema: pa.Schema, key: Sequence[str]) -> None:
        validate_identifier(table, "table")
        source = [(f.name, column_type(f.type)) for f in schema if f.name not in META_COLUMNS]
        existing = self._existing_columns(table)
        if not existing:
            self._touched.add(table)
            self.con.execute(create_raw_sql(self.schema, table, source))
            self.con.execute(create_changes_sql(self.schema, table, source))
            self._columns.pop(table, None)
            self._columns.pop(table + "_changes", None)
            return
        added = [(c, t) for c, t in source if c not in existing]
        if SOURCE_LSN not in existing:  # a warehouse from before SOURCE_LSN was stored
            added.append((SOURCE_LSN, "BIGINT"))
        if added:
            self._touched.add(table)
        for c, t in added:
            self.con.execute(add_column_sql(self.schema, table, c, t))
            self.con.execute(add_column_sql(self.schema, table + "_changes", c, t))
        if added:
            self._columns.pop(table, None)
            self._columns.pop(table + "_changes", None)

    # -- state --------------------------------------------------------------------------------

    def state(self) -> dict[str, TableState]:
        """The committed state (cached: this adapter is the only writer of its file)."""
        if self._state is None or self._in_txn:
            self._state = self._read_state()
        return dict(self._state)

    def _read_state(self) -> dict[str, TableState]:
        rows = self.con.execute(
            f"select table_name, position_lsn, position_seq, checkpoint, updated_at "  # noqa: S608 - quoted identifiers, ints
            f"from {q(self.schema)}.{STATE_TABLE}"
        ).fetchall()
        return {r[0]: TableState(r[0], Position(r[1], r[2]), r[3], r[4]) for r in rows}

    def _store_states(self, states: list[TableState]) -> None:
        if not states:
            return
        values = ", ".join(["(?, ?, ?, ?, ?, ?)"] * len(states))
        params: list = []
        for st in states:
            params += [st.table, st.position.lsn, st.position.seq, st.checkpoint]
            params += [self.feed_kind, st.updated_at]
        self.con.execute(
            f"insert or replace into {q(self.schema)}.{STATE_TABLE} "  # noqa: S608 - fixed names
            "(table_name, position_lsn, position_seq, checkpoint, feed, updated_at) "
            f"values {values}",
            params,
        )

    # -- apply --------------------------------------------------------------------------------

    def begin(self) -> None:
        if not self._in_txn:
            self.con.execute("begin transaction")
            self._in_txn = True

    def rollback(self) -> None:
        self._pending_state.clear()
        self._touched.clear()
        if self._in_txn:
            self._in_txn = False
            self.con.execute("rollback")
            self._columns.clear()
            self._state = None

    def commit(self) -> None:
        if self._in_txn:
            self._store_states(list(self._pending_state.values()))
            self.con.execute("commit")
            self._in_txn = False
            self._touched.clear()
            if self._state is not None:
                self._state.update(self._pending_state)
            self._pending_state.clear()

    def apply(
        self,
        batch: ChangeBatch,
        *,
        commit: bool = True,
        before_commit: Callable[[], None] | None = None,
    ) -> ApplyResult:
        t0 = time.perf_counter()
        now = dt.datetime.now(dt.UTC)
        self.begin()
        try:
            state = {**(self._state if self._state is not None else self._read_state())}
            state.update(self._pending_state)
            results = {}
            for table, tc in batch.tables.items():
                results[table] = self._apply_table(tc, state.get(table), now)
            if batch.dead_letters:
                self._store_dead_letters(batch, now)
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
        rows = tc.rows
        params = {"loaded_at": now}
        columns = [f.name for f in rows.schema if f.name not in META_COLUMNS]
        if columns:
            self.ensure_tables(table, rows.schema, tc.key)
        if rows.num_rows and columns:
            if not tc.key:
                raise ValueError(f"table {table} has no primary key: it cannot be merged")
            fresh = rows_after(rows, stored_pos)
            if SOURCE_LSN in fresh.column_names and fresh.num_rows:
                fresh = self._drop_resent(table, fresh, tc.key)
            result.skipped = rows.num_rows - fresh.num_rows
            if fresh.num_rows:
                self._merge_rows(table, fresh, columns, tc.key, result, params)
        for pos in tc.truncates:
            if stored_pos is not None and pos <= stored_pos:
                result.skipped += 1
                continue
            if not self._existing_columns(table):
                continue  # nothing was ever loaded for it
            source_lsn = tc.truncate_source_lsns.get(pos)
            if (
                source_lsn is not None
                and self.con.execute(
                    truncate_resent_sql(self.schema, table), {"source_lsn": source_lsn}
                ).fetchone()[0]
            ):
                result.skipped += 1  # re-sent by a restarted Debezium connector
                continue
            tparams = {**params, "commit_ts": truncate_commit_ts(tc, pos)}
            self._touched.add(table)
            self.con.execute(truncate_sql(self.schema, table, pos), tparams)
            self.con.execute(
                truncate_change_sql(self.schema, table, pos), {**tparams, "source_lsn": source_lsn}
            )
            result.changes_by_op["t"] = result.changes_by_op.get("t", 0) + 1
            result.first = pos if result.first is None else min(result.first, pos)
            result.last = pos if result.last is None else max(result.last, pos)
        self._pending_state[table] = TableState(table, tc.end, tc.checkpoint, now)
        return result

    def _drop_resent(self, table: str, rows: pa.Table, key: Sequence[str]) -> pa.Table:
        """The rows without the events applied before (see `resent_rows_sql`)."""
        if not self._existing_columns(table + "_changes"):
            return rows
        self.con.register(BATCH_VIEW, numbered(rows))
        try:
            since = resent_since(rows)
            query = resent_rows_sql(self.schema, table, key, since is not None)
            params = {"since": since} if since is not None else {}
            seen = [r[0] for r in self.con.execute(query, params).fetchall()]
        finally:
            self.con.unregister(BATCH_VIEW)
        return without_rows(rows, seen)

    def _store_dead_letters(self, batch: ChangeBatch, now: dt.datetime) -> None:
        self.con.execute(create_dead_letters_sql(self.schema))
        self.con.register(DEAD_VIEW, dead_letter_rows(batch.dead_letters))
        try:
            self.con.execute(dead_letters_insert_sql(self.schema), {"loaded_at": now})
        finally:
            self.con.unregister(DEAD_VIEW)

    def _merge_rows(self, table, rows, columns, key, result, params) -> None:
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
        unchanged = unchanged_columns(rows)
        if unchanged:  # values to carry forward: materialize the staged rows once
            self.con.register(BATCH_VIEW, rows)
            try:
                self.con.execute(stage_sql(columns, key, unchanged, None))
            finally:
                self.con.unregister(BATCH_VIEW)
        else:
            self.con.register(STAGE, rows)
        try:
            date_col = self.business_date_columns.get(table)
            before = None
            if date_col in columns:  # None: a column type with no business date
                before = self._before_images(table, rows, date_col, key)
            self.con.execute(
                changes_insert_sql(self.schema, table, columns, key, unchanged), params
            )
            unique = len(key) == 1 and pc.count_distinct(rows.column(key[0])).as_py() == len(rows)
            self.con.execute(merge_sql(self.schema, table, columns, key, unchanged, unique), params)
            self._touched.add(table)
            if before is not None:
                result.business_dates = self._business_dates(rows, date_col, before.result())
        finally:
            if unchanged:
                self.con.execute(f"drop table if exists {STAGE}")
            else:
                self.con.unregister(STAGE)

    def _before_images(self, table, rows, column, key) -> Future | None:
        """The business timestamps (15-minute buckets) or dates of the warehouse rows that the
        batch's updates and deletes replace, read before the MERGE rewrites them (None when
        `column` is neither a timestamp nor a date). A table not written yet in this
        transaction is read from its committed state on a second connection, in a worker
        thread, while this one appends the change log and merges (DuckDB runs both at once);
        otherwise on this connection, first."""
        is_ts = pa.types.is_timestamp(rows.schema.field(column).type)
        if not is_ts and not pa.types.is_date(rows.schema.field(column).type):
            return None
        sql = (before_buckets_sql if is_ts else before_values_sql)(self.schema, table, column, key)

        def query(con: duckdb.DuckDBPyConnection):
            if is_ts:
                (values,) = con.execute(sql).fetchnumpy().values()
                return np.ma.compressed(values).astype(np.int64)  # nulls dropped
            return {r[0] for r in con.execute(sql).fetchall() if r[0] is not None}

        if table in self._touched:
            done: Future = Future()
            done.set_result(query(self.con))
            return done

        def in_background():
            if self._before_con is None:
                self._before_con = self.con.cursor()
            self._before_con.register(STAGE, rows)
            try:
                return query(self._before_con)
            finally:
                self._before_con.unregister(STAGE)

        if self._before_pool is None:
            self._before_pool = ThreadPoolExecutor(1, thread_name_prefix="duckdb-before-images")
        return self._before_pool.submit(in_background)

    def _business_dates(self, rows, column, before) -> set[dt.date]:
        """Dates of the after images (from Arrow) and of the rows they replace (`before`, from
        `_before_images`). Timestamps are bucketed by 15 minutes and only the few distinct
        buckets are converted to dates in the partition time zone."""
        col = rows.column(column)
        if pa.types.is_timestamp(col.type):
            after = pc.cast(pc.drop_null(col), pa.int64()).to_numpy() // BUCKET_US
            buckets = np.unique(np.concatenate([after, before]))
            return business_dates(buckets * BUCKET_US, self.timezone)
        after = {d for d in pc.unique(col).to_pylist() if d is not None}  # a date column
        return after | before

    def close(self) -> None:
        self.rollback()
        if self._before_pool is not None:
            self._before_pool.shutdown()
        if self._before_con is not None:
            self._before_con.close()
        self.con.close()
