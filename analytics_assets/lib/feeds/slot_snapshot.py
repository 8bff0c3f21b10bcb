"""The slot feed's snapshot: the captured tables COPYed under a snapshot exported by
CREATE_REPLICATION_SLOT (`export_snapshot`), then read back as batches (`snapshot_batches`) at
positions just before the slot's consistent point, so every change streamed after it is newer.
Also the split of rows holding a value the platform cannot take into dead letters
(`split_rejected`), which the stream uses too.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import psycopg2.extras
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from psycopg2 import sql

from analytics_assets.lib import pg
from analytics_assets.lib.feeds.base import (
    LSN,
    SEQ,
    ChangeBatch,
    DeadLetter,
    Position,
    TableChanges,
    meta_schema_fields,
    parse_lsn,
)
from analytics_assets.lib.pgoutput_types import (
    REJECT_REASON,
    REJECT_VALUE,
    RelationColumn,
    columns_from_text,
)

log = logging.getLogger(__name__)


@dataclass
class ExportedSnapshot:
    """The captured tables as CSV files in `spool` (cleaned up by the caller), read under the
    snapshot of the slot created at `consistent_point`, taken at `taken_at` (server time)."""

    consistent_point: int
    taken_at: dt.datetime
    spool: tempfile.TemporaryDirectory
    files: dict[str, str]
    columns: dict[str, list[tuple[str, int, int]]]


def export_snapshot(
    url: str,
    slot_name: str,
    temporary: bool,
    tables: Sequence[str],
    columns_of: Callable[[str], list[tuple[str, int, int]]],
) -> ExportedSnapshot:
    """Create replication slot `slot_name` (a temporary one goes with this function's
    replication connection) exporting its snapshot, and COPY each table under it to a spool
    file. `columns_of(table)` names the columns to copy."""
    repl = pg.connect(url, connection_factory=psycopg2.extras.LogicalReplicationConnection)
    spool = tempfile.TemporaryDirectory(prefix="cdc_snapshot_")
    files: dict[str, str] = {}
    columns: dict[str, list[tuple[str, int, int]]] = {}
    try:
        with repl.cursor() as rcur:
            rcur.execute(
                f"CREATE_REPLICATION_SLOT {slot_name} "
                f"{'TEMPORARY ' if temporary else ''}LOGICAL pgoutput (SNAPSHOT 'export')"
            )
            _, consistent_point, snapshot_name, _ = rcur.fetchone()
        cp = parse_lsn(consistent_point)
        snap_conn = pg.session(url)
        try:
            snap_conn.autocommit = False
            with snap_conn.cursor() as cur:
                cur.execute("begin isolation level repeatable read")
                cur.execute("set transaction snapshot %s", (snapshot_name,))
                cur.execute("select now()")
                snap_ts = cur.fetchone()[0]
                for table in tables:
                    cols = columns_of(table)
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
    except BaseException:
        spool.cleanup()
        raise
    finally:
        repl.close()  # a temporary slot goes with it
    return ExportedSnapshot(cp, snap_ts, spool, files, columns)


def snapshot_batches(
    table: str,
    path: str,
    cols: list[tuple[str, int, int]],
    key: tuple[str, ...],
    cp: int,
    snap_ts: dt.datetime,
    checkpoint: str,
    max_rows: int,
    *,
    check_utf8: bool,
    quarantine: Callable[[str, pa.Table], tuple[pa.Table, list[DeadLetter]]],
) -> Iterator[ChangeBatch]:
    """One table's snapshot rows (the CSV at `path`) as batches of at most `max_rows`, at
    positions (cp - 1, ordinal); rows holding a value the platform cannot take leave through
    `quarantine`. A table with no rows yields one empty batch at (cp - 1, 0)."""
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
            check_utf8=check_utf8,
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
        rows, dead = quarantine(table, rows)
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
            batches = empty.to_batches() or [pa.RecordBatch.from_pylist([], schema=empty.schema)]
        batch, ordinal = emit(batches, ordinal)
        if batch.tables[table].rows.num_rows == 0:
            batch.first = batch.last = end
            batch.tables[table].end = end
        yield batch


def split_rejected(slot: str, table: str, rows: pa.Table) -> tuple[pa.Table, list[DeadLetter]]:
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
                f"pgoutput:{slot}",
                r[SEQ],
                r[LSN],
                table,
                f"change at {where} of {table}: {r[REJECT_REASON]}",
                r[REJECT_VALUE],
            )
        )
    log.warning(
        "%d change(s) of %s hold a value that cannot be taken, quarantined in _dead_letters: %s",
        len(dead),
        table,
        "; ".join(d.reason for d in dead[:5]),
    )
    keep = rows.filter(pc.invert(bad)).drop_columns([REJECT_REASON, REJECT_VALUE])
    return keep, dead


__all__ = ["ExportedSnapshot", "export_snapshot", "snapshot_batches", "split_rejected"]
