"""The DuckDB warehouse (dev): the apply algorithm of `base.Warehouse` run on one DuckDB
connection. A batch's Arrow rows are registered as views (no copy), statements run as written
(`statements.py`, DuckDB SQL) with `$name` parameters, all in one DuckDB transaction.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import duckdb
import numpy as np

from analytics_assets.lib.errors import WarehouseLocked
from analytics_assets.lib.warehouse import statements, turns
from analytics_assets.lib.warehouse.base import Warehouse
from analytics_assets.lib.warehouse.names import q
from analytics_assets.lib.warehouse.statements import BATCH, STAGE
from analytics_assets.settings import validate_identifier


def _lit(text: str) -> str:
    return text.replace("'", "''")


def ingest_memory_limit(batch_size: int) -> str:
    """DuckDB memory_limit for an ingest with batches of `batch_size` changes: 2 KiB a change,
    at least 256 MiB. Without one, DuckDB keeps every row written since the last checkpoint
    (and the update versions) in memory, so the ingest's RSS grew with the backlog; with it,
    DuckDB spills those to `<file>.tmp` and RSS stays flat at the same apply rate (BENCHMARKS.md,
    "Measurements behind the code's choices")."""
    return f"{max(256, (int(batch_size) * 2) // 1024)}MiB"


def connect_waiting(
    path: Path,
    lock_timeout: float,
    *,
    read_only: bool = False,
    setting: str | None = "WAREHOUSE_LOCK_TIMEOUT_SECONDS",
) -> duckdb.DuckDBPyConnection:
    """Open the DuckDB file (for writing, unless `read_only`). Another process holding it (an
    ingest, a dbt node, a notebook) gets `lock_timeout` seconds to let go, waiting in line
    (`turns.py`); then `WarehouseLocked` names that process (and `setting`, the one that sets
    the wait). Nothing is written before the file is ours, so a refused ingest leaves no
    partial state."""
    try:
        return turns.connect(path, lock_timeout, read_only=read_only)
    except turns.Refused as exc:
        waited = f"waited {lock_timeout:g}s" + (f" ({setting})" if setting else "")
        raise WarehouseLocked(
            f"the DuckDB warehouse {path} is locked by another process "
            f"({_lock_holder(str(exc))}); {waited}. Another ingest or run is writing "
            "it, or a notebook holds it open: wait for it or close it, then run again"
        ) from None


def _lock_holder(message: str) -> str:
    """'... Conflicting lock is held in /usr/bin/python3 (PID 123) ...' -> PID and command."""
    _, _, rest = message.partition("(PID ")
    pid = rest.split(")", 1)[0].strip()
    if not pid.isdigit():
        return "process unknown"
    import psutil  # here: only a refused ingest needs it

    try:
        cmd = " ".join(psutil.Process(int(pid)).cmdline())
    except (psutil.Error, OSError):
        cmd = message.partition("held in ")[2].partition(" (PID")[0]
    cmd = re.sub(r"(://[^:/@\s]*):[^@\s]*@", r"\1:***@", cmd)  # a DSN's password stays hidden
    cmd = cmd if len(cmd) <= 120 else cmd[:117] + "..."
    return f"PID {pid}: {cmd}" if cmd else f"PID {pid}"


class DuckDBWarehouse(Warehouse):
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
        super().__init__(
            validate_identifier(schema, "warehouse schema"),
            business_date_columns=business_date_columns,
            timezone=timezone,
            feed_kind=feed_kind,
        )
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.con = connect_waiting(self.path, lock_timeout)
        # DuckDB checkpoints when its WAL passes this size, rewriting every row group a MERGE
        # touched; with the 16MB default that happened almost every CDC batch (cost growing
        # with the table), so let the WAL grow and checkpoint far less often.
        self.con.execute(f"set checkpoint_threshold = '{_lit(checkpoint_threshold)}'")
        if memory_limit:  # DuckDB caches up to 80% of RAM by default
            self.con.execute(f"set memory_limit = '{_lit(memory_limit)}'")
        # One DuckDB thread by default: a batch's statements gain little from parallelism, while
        # extra worker threads compete for the cores with the feed's decoding and the source
        # (BENCHMARKS.md, "Measurements behind the code's choices").
        if threads:
            self.con.execute(f"set threads = {int(threads)}")
        self._before_pool: ThreadPoolExecutor | None = None
        self._before_con: duckdb.DuckDBPyConnection | None = None
        self.con.execute(f"create schema if not exists {q(self.schema)}")
        self.con.execute(statements.create_state_sql(self.schema))

    # -- the executor: one connection, one transaction, registered Arrow views --------------------

    def _begin(self) -> None:
        self.con.execute("begin transaction")

    def _commit_transaction(self) -> None:
        self.con.execute("commit")

    def _rollback_transaction(self) -> None:
        self.con.execute("rollback")
        self._columns.clear()  # the transaction's DDL is gone too
        self._state = None

    def _ddl(self, statement: str, cluster_by: Sequence[str] = ()) -> None:
        self.con.execute(statement)

    def _execute(self, statement: str, params: Mapping[str, Any]) -> None:
        self.con.execute(statement, dict(params)) if params else self.con.execute(statement)

    def _query(self, statement: str, params: Mapping[str, Any]) -> list[tuple]:
        if params:
            return self.con.execute(statement, dict(params)).fetchall()
        return self.con.execute(statement).fetchall()

    def _register(self, name: str, rows, table: str) -> None:
        self.con.register(name, rows)

    def _release(self, name: str) -> None:
        if name == STAGE:
            self.con.execute(f"drop table if exists {STAGE}")
        else:
            self.con.unregister(name)

    def _read_columns(self, table: str) -> list[str]:
        rows = self.con.execute(
            "select column_name from information_schema.columns "
            "where table_schema = ? and table_name = ? order by ordinal_position",
            [self.schema, table],
        ).fetchall()
        return [r[0] for r in rows]

    def _before_images(self, table: str, statement: str, timestamp: bool) -> Future:
        """A table not written yet in this transaction is read from its committed state on a
        second connection, in a worker thread, while this one appends the change log and merges
        (DuckDB runs both at once); otherwise on this connection, first."""
        rows = self._bound[BATCH]

        def query(con: duckdb.DuckDBPyConnection):
            if timestamp:
                (values,) = con.execute(statement).fetchnumpy().values()
                return np.ma.compressed(values).astype(np.int64)  # nulls dropped
            return {r[0] for r in con.execute(statement).fetchall() if r[0] is not None}

        if table in self._touched:
            done: Future = Future()
            done.set_result(query(self.con))
            return done

        def in_background():
            if self._before_con is None:
                self._before_con = self.con.cursor()
            self._before_con.register(BATCH, rows)
            try:
                return query(self._before_con)
            finally:
                self._before_con.unregister(BATCH)

        if self._before_pool is None:
            self._before_pool = ThreadPoolExecutor(1, thread_name_prefix="duckdb-before-images")
        return self._before_pool.submit(in_background)

    def close(self) -> None:
        self.rollback()
        if self._before_pool is not None:
            self._before_pool.shutdown()
        if self._before_con is not None:
            self._before_con.close()
        self.con.close()
