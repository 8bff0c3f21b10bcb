"""A columnar decoder for PostgreSQL's `pgoutput` logical replication protocol (proto_version 1).

The message formats are PostgreSQL's "Logical Replication Message Formats" chapter. Python is the
CDC bottleneck (a Python loop over messages manages a fraction of the server's decoding rate:
BENCHMARKS.md), so nothing here loops over rows in Python: a chunk of messages arrives as one
buffer plus an array of message offsets, and every step (message kinds, transaction boundaries,
tuple walking, value extraction) works on all messages at once: numpy operations, and two
compiled loops (`_pgoutput_kernels.c`, an extension module the package build compiles). Every
read is bounded by the end of the message it belongs to, so corrupt bytes raise DecodeError. Column values
end up in one byte buffer per table, become Arrow string arrays without copying, and are converted
to typed Arrow arrays (ints, decimals, timestamps...) by Arrow's C++ casts, keyed by type oid.

Only the rare messages (Relation, Type, Truncate, Origin, logical Message) are handled one by one.

Output per table is an Arrow table of row images in commit order with the CDC metadata columns of
`analytics_assets.lib.feeds.base`: `_lsn` (the transaction's commit LSN), `_seq` (ordinal of the
change inside its transaction), `_op`, `_is_deleted`, `_commit_ts` and `_unchanged_cols` (columns
whose value the change does not carry: unchanged TOAST values, non-key columns of a key-only old
tuple; the warehouse keeps the previous value for those).

Primary-key updates are emitted as two rows: a delete of the old key (old image) followed by the
update with the new key, at consecutive `_seq` values, so the old key row ends up deleted.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from analytics_assets.lib.errors import DecodeError
from analytics_assets.lib.feeds.base import Position, meta_schema_fields
from analytics_assets.lib.pgoutput_binary import binary_columns, text_spans
from analytics_assets.lib.pgoutput_types import (
    REJECT_REASON,
    REJECT_VALUE,
    Converted,
    RelationColumn,
    arrow_type,
    columns_from_text,
    source_fields,
)
from analytics_assets.lib.pgoutput_wire import (
    BEGIN,
    BEGIN_COMMIT_TS,
    BEGIN_FINAL_LSN,
    COMMIT,
    COMMIT_END_LSN,
    DELETE,
    INSERT,
    MESSAGE,
    ORIGIN,
    PG_EPOCH_US,
    RELATION,
    ROW_COLUMN_COUNT,
    ROW_RELATION_ID,
    ROW_TUPLE_DATA,
    ROW_TUPLE_TAG,
    TRUNCATE,
    TRUNCATE_RELATION_COUNT,
    TRUNCATE_RELATION_IDS,
    TYPE,
    UPDATE,
    VALUE_BINARY,
    VALUE_TEXT,
    VALUE_UNCHANGED,
    Fields,
    be16,
    be32u,
    be64,
    check_lengths,
    check_tags,
    fail_at,
    gather_strings,
    has_value,
    keys_differ,
    message_ends,
    walk_tuples,
)

OP_CODES = np.frombuffer(b"cudtr", np.uint8)


@dataclass(frozen=True)
class Relation:
    relid: int
    namespace: str
    name: str
    replica_identity: str  # d (default), n (nothing), f (full), i (index)
    columns: tuple[RelationColumn, ...]

    @property
    def table(self) -> str:
        return self.name if self.namespace == "public" else f"{self.namespace}.{self.name}"


@dataclass
class DecodedTable:
    """One table's share of a decoded chunk."""

    table: str
    rows: pa.Table  # source columns + metadata columns, in commit order
    key: tuple[str, ...]
    truncates: list[Position] = field(default_factory=list)


@dataclass
class DecodedChunk:
    tables: dict[str, DecodedTable]
    messages: int
    changes: int  # row changes decoded (all tables, before the skip filter)
    first: Position | None  # first change position in the chunk
    last: Position | None  # last change position reached (even when skipped or filtered out)
    checkpoint_lsn: int | None  # end LSN of the last transaction completed in this chunk
    min_commit_ts: dt.datetime | None
    max_commit_ts: dt.datetime | None
    in_transaction: bool  # the chunk ended inside a transaction


@dataclass
class _RowMessages:
    """A chunk's row change messages (index, start, end, tuple tag), with every message's kind
    and position (`seq_end`, commit LSN and time): what walking one relation's rows reads."""

    a: np.ndarray
    idx: np.ndarray
    pos: np.ndarray
    end: np.ndarray
    tag: np.ndarray
    kinds: np.ndarray
    seq_end: np.ndarray
    msg_lsn: np.ndarray
    msg_ts: np.ndarray


@dataclass
class _Txn:
    lsn: int = 0  # final (commit) LSN from Begin
    commit_ts: int = 0  # microseconds since 2000-01-01
    xid: int = 0
    seq: int = 0  # changes emitted so far
    open: bool = False


class PgOutputDecoder:
    """Stateful across chunks: relations seen so far and the transaction a chunk may end inside.

    `primary_keys` (table -> key columns, from the catalog) says which columns identify a row;
    without it the Relation message's key flags are used (with REPLICA IDENTITY FULL those flag
    every column, which is why the catalog's primary key is preferred).
    """

    def __init__(
        self,
        tables: set[str] | None = None,
        primary_keys: dict[str, tuple[str, ...]] | None = None,
    ):
        self.tables = tables
        self.primary_keys = dict(primary_keys or {})
        self.relations: dict[int, Relation] = {}
        self.type_names: dict[int, str] = {}
        self.txn = _Txn()
        self.checkpoint_lsn: int | None = None
        self.check_utf8 = False  # a database whose text need not be UTF-8 (SQL_ASCII)

    # -- rare messages, one at a time ---------------------------------------------------------

    def _parse_relation(self, f: Fields) -> Relation:
        relid = f.int(f.start + 1, 4, signed=False)
        namespace, p = f.cstring(f.start + 5)
        name, p = f.cstring(p)
        replident = chr(f.int(p, 1))
        if replident not in "dnfi":
            raise f.error(p, f"unknown replica identity {replident!r}")
        ncols = f.int(p + 1, 2)
        if ncols < 0:
            raise f.error(p + 1, f"negative column count {ncols}")
        p += 3
        cols = []
        for _ in range(ncols):
            flags = f.int(p, 1)
            cname, p = f.cstring(p + 1)
            typoid = f.int(p, 4, signed=False)
            typmod = f.int(p + 4, 4)
            try:
                arrow_type(typoid, typmod)
            except (ValueError, pa.ArrowException):
                raise f.error(p + 4, f"column {cname!r}: type modifier {typmod}") from None
            p += 8
            cols.append(RelationColumn(cname, typoid, typmod, bool(flags & 1)))
        f.done(p)
        rel = Relation(relid, namespace or "public", name, replident, tuple(cols))
        pk = self.primary_keys.get(rel.table)
        if pk:
            cols = [RelationColumn(c.name, c.type_oid, c.typmod, c.name in pk) for c in rel.columns]
            rel = Relation(relid, rel.namespace, rel.name, replident, tuple(cols))
        return rel

    def _wanted(self, rel: Relation) -> bool:
        return self.tables is None or rel.table in self.tables

    # -- the chunk ----------------------------------------------------------------------------

    def decode(
        self,
        buf: bytes | np.ndarray,
        starts: np.ndarray,
        skip_through: Position | None = None,
    ) -> DecodedChunk:
        """Decode the messages at `starts` in `buf`, laid out as `frame_copy_rows` does: each
        message right after its binary COPY row header (int16 field count 1, int32 length),
        which says where the message ends, and at least 16 bytes of padding after the last.

        Every read stays inside its own message: a length, count or tag byte that does not fit
        raises DecodeError naming the message and byte, whatever the bytes are.
        Changes at or before `skip_through` are dropped (already applied downstream).
        """
        a = np.frombuffer(buf, np.uint8) if not isinstance(buf, np.ndarray) else buf
        raw = buf if isinstance(buf, bytes) else a.tobytes()
        starts = np.asarray(starts, np.int64)
        n = len(starts)
        ends = message_ends(a, starts)
        kinds = a[starts] if n else np.zeros(0, np.uint8)

        is_b = kinds == BEGIN
        is_c = kinds == COMMIT
        is_i = kinds == INSERT
        is_u = kinds == UPDATE
        is_d = kinds == DELETE
        is_rowmsg = is_i | is_u | is_d
        known = (
            is_b | is_c | is_rowmsg | np.isin(kinds, (RELATION, TYPE, ORIGIN, TRUNCATE, MESSAGE))
        )
        if not known.all():
            i = int(np.flatnonzero(~known)[0])
            raise DecodeError(
                f"unsupported pgoutput message {chr(int(kinds[i]))!r} (#{i} of {n}, "
                f"byte {int(starts[i])})"
            )
        check_lengths(kinds, starts, ends)

        # -- transactions: Begin/Commit fields for all transactions at once
        b_idx = np.flatnonzero(is_b)
        c_idx = np.flatnonzero(is_c)
        b_pos = starts[b_idx]
        txn_lsn = np.concatenate([[self.txn.lsn], be64(a, b_pos + BEGIN_FINAL_LSN)])
        txn_ts = np.concatenate([[self.txn.commit_ts], be64(a, b_pos + BEGIN_COMMIT_TS)])
        txn_of = np.cumsum(is_b) - 1 + 1  # 0 = the transaction open before this chunk

        # -- rare messages in order: relations (versioned), truncates
        rare_idx = np.flatnonzero(~(is_b | is_c | is_rowmsg))
        rel_events: list[tuple[int, Relation]] = []
        truncate_events: list[tuple[int, list[int]]] = []
        for i in rare_idx.tolist():
            f = Fields(raw, i, int(starts[i]), int(ends[i]))
            s = f.start
            k = raw[s]
            if k == RELATION:
                rel_events.append((i, self._parse_relation(f)))
            elif k == TYPE:
                oid = f.int(s + 1, 4, signed=False)
                _, p = f.cstring(s + 5)
                name, p = f.cstring(p)
                f.done(p)
                self.type_names[oid] = name
            elif k == TRUNCATE:
                nrel = f.int(s + TRUNCATE_RELATION_COUNT, 4)
                if nrel < 0 or s + TRUNCATE_RELATION_IDS + 4 * nrel != f.end:
                    raise f.error(
                        s + TRUNCATE_RELATION_COUNT,
                        f"truncate relation count {nrel} does not fit the message",
                    )
                relids = [
                    f.int(s + TRUNCATE_RELATION_IDS + 4 * r, 4, signed=False) for r in range(nrel)
                ]
                truncate_events.append((i, relids))
            # Origin and logical messages (heartbeats) carry no row change

        # -- row messages: relation id, shape
        row_idx = np.flatnonzero(is_rowmsg)
        row_pos = starts[row_idx]
        row_end = ends[row_idx]
        relid = be32u(a, row_pos + ROW_RELATION_ID)
        tag5 = a[row_pos + ROW_TUPLE_TAG]  # N (insert/update without old), K/O (old tuple)
        check_tags(kinds[row_idx], tag5, row_idx, row_pos)

        # relation version per row message: the latest Relation message before it
        versions: list[Relation] = []
        ver = np.full(len(row_idx), -1, np.int64)
        rel_by_id: dict[int, list[tuple[int, Relation]]] = {}
        for i, rel in rel_events:
            rel_by_id.setdefault(rel.relid, []).append((i, rel))
        for rid in np.unique(relid).tolist():
            mask = relid == rid
            current = self.relations.get(rid)
            if current is not None:
                versions.append(current)
                ver[mask] = len(versions) - 1
            for i, rel in rel_by_id.get(rid, []):
                versions.append(rel)
                ver[mask & (row_idx > i)] = len(versions) - 1
        if (ver < 0).any():
            raise DecodeError("row change for a relation that was never described")
        for _, rel in rel_events:
            self.relations[rel.relid] = rel

        # -- positions: every change message (insert/update/delete/truncate) takes the next
        # ordinal k in its transaction and _seq = 2k; the delete of the old key emitted for a
        # primary-key update takes 2k - 1. Numbering never depends on which tables are decoded.
        emit = (is_rowmsg | (kinds == TRUNCATE)).astype(np.int64)
        cum = np.cumsum(emit)
        base = np.concatenate([[-self.txn.seq], cum[b_idx]])
        seq_end = 2 * (cum - base[txn_of])
        msg_lsn = txn_lsn[txn_of]
        msg_ts = txn_ts[txn_of]

        changes_total = int(emit.sum())
        first = last = None
        change_msgs = np.flatnonzero(emit > 0)
        if len(change_msgs):
            f, l_ = change_msgs[0], change_msgs[-1]
            first = Position(int(msg_lsn[f]), int(seq_end[f]) - 1)
            last = Position(int(msg_lsn[l_]), int(seq_end[l_]))

        # -- row images per relation version, walked column by column for all rows at once.
        # Rows of a table are not sorted: their positions say the order.
        tables: dict[str, DecodedTable] = {}
        parts: dict[str, list[pa.Table]] = {}
        rows = _RowMessages(a, row_idx, row_pos, row_end, tag5, kinds, seq_end, msg_lsn, msg_ts)
        for v, rel in enumerate(versions):
            if not self._wanted(rel):
                continue
            sel = np.flatnonzero(ver == v)
            if len(sel) == 0:
                continue
            for table in self._version_rows(rows, rel, sel, skip_through):
                parts.setdefault(rel.table, []).append(table)
            if rel.table in parts:
                key = tuple(c.name for c in rel.columns if c.is_key)
                tables.setdefault(rel.table, DecodedTable(rel.table, parts[rel.table][0], key))

        for i, relids in truncate_events:
            pos = Position(int(msg_lsn[i]), int(seq_end[i]))
            if skip_through is not None and pos <= skip_through:
                continue
            for rid in relids:
                rel = self.relations.get(rid)
                if rel is None or not self._wanted(rel):
                    continue
                entry = tables.get(rel.table)
                if entry is None:
                    key = tuple(c.name for c in rel.columns if c.is_key)
                    entry = tables[rel.table] = DecodedTable(rel.table, _empty_rows(rel), key)
                entry.truncates.append(pos)

        for name, tbls in parts.items():
            if len(tbls) > 1:
                try:
                    tables[name].rows = pa.concat_tables(tbls, promote_options="permissive")
                except (pa.ArrowTypeError, pa.ArrowInvalid) as exc:
                    # two Relation messages in one chunk give a column types Arrow cannot merge
                    raise DecodeError(f"table {name}: {exc}") from None

        # -- state for the next chunk
        checkpoint = self.checkpoint_lsn
        if len(c_idx):
            checkpoint = int(be64(a, starts[c_idx[-1:]] + COMMIT_END_LSN)[0])
            self.checkpoint_lsn = checkpoint
        last_b = int(b_idx[-1]) if len(b_idx) else -1
        last_c = int(c_idx[-1]) if len(c_idx) else -1
        in_txn = last_b > last_c or (last_b < 0 and last_c < 0 and self.txn.open)
        if in_txn:
            t = len(b_idx)  # index into txn arrays of the open transaction
            self.txn = _Txn(int(txn_lsn[t]), int(txn_ts[t]), 0, int(cum[-1] - base[t]), True)
        else:
            self.txn = _Txn()
        ts_seen = msg_ts[change_msgs] if len(change_msgs) else np.zeros(0, np.int64)
        return DecodedChunk(
            tables=tables,
            messages=n,
            changes=changes_total,
            first=first,
            last=last,
            checkpoint_lsn=checkpoint,
            min_commit_ts=_ts(int(ts_seen.min())) if len(ts_seen) else None,
            max_commit_ts=_ts(int(ts_seen.max())) if len(ts_seen) else None,
            in_transaction=in_txn,
        )

    def _version_rows(
        self, rows: _RowMessages, rel: Relation, sel: np.ndarray, skip_through: Position | None
    ) -> list[pa.Table]:
        """Row images of one relation version (`sel`: its row messages): new images of
        inserts/updates, old images of deletes, and old-key deletes for primary-key updates."""
        a, row_idx, row_pos, row_end, tag5 = rows.a, rows.idx, rows.pos, rows.end, rows.tag
        kinds, seq_end, msg_lsn, msg_ts = rows.kinds, rows.seq_end, rows.msg_lsn, rows.msg_ts
        ncols = len(rel.columns)
        msg = row_idx[sel]
        pos = row_pos[sel]
        end = row_end[sel]
        kinds_v = kinds[msg]
        has_old = (kinds_v != INSERT) & ((tag5[sel] == ord("K")) | (tag5[sel] == ord("O")))
        old_rows = np.flatnonzero(has_old)
        old_index = np.cumsum(has_old) - 1  # row -> index among old tuples
        old = walk_tuples(a, pos[old_rows] + ROW_TUPLE_DATA, end[old_rows], ncols)
        new_rows = np.flatnonzero(kinds_v != DELETE)
        new_pos = pos[new_rows] + ROW_TUPLE_DATA
        new_has_old = has_old[new_rows]
        upd_new = np.flatnonzero(new_has_old)  # index among new tuples of updates with old
        oi = old_index[new_rows[upd_new]]
        # an update's old tuple is followed by 'N' and the new tuple's column count
        after_old, upd_end = old.end[oi], end[new_rows[upd_new]]
        fail_at(
            after_old + 3 > upd_end, after_old, "the new tuple header runs past the message end"
        )
        fail_at(
            a[after_old] != ord("N"), after_old, "an update's new tuple does not start with 'N'"
        )
        new_pos[upd_new] = after_old + 3
        counts = np.concatenate([be16(a, pos[old_rows] + ROW_COLUMN_COUNT), be16(a, new_pos - 2)])
        if (counts != ncols).any():
            i = int(np.flatnonzero(counts != ncols)[0])
            at = np.concatenate([pos[old_rows] + ROW_COLUMN_COUNT, new_pos - 2])[i]
            raise DecodeError(
                f"tuple column count {int(counts[i])} at byte {int(at)} differs from the "
                f"{ncols} columns of relation {rel.table}"
            )
        new = walk_tuples(a, new_pos, end[new_rows], ncols)
        # a row message ends with its last tuple
        del_rows_ = np.flatnonzero(kinds_v == DELETE)
        last_end = np.concatenate([old.end[old_index[del_rows_]], new.end])
        msg_end = np.concatenate([end[del_rows_], end[new_rows]])
        fail_at(last_end != msg_end, last_end, "bytes are left after the message's last tuple")

        key_cols = [j for j, c in enumerate(rel.columns) if c.is_key]
        pk_moved = np.zeros(0, np.int64)  # index among new tuples
        if len(upd_new):
            # unchanged TOAST values come with the old tuple under REPLICA IDENTITY FULL
            fill = (new.kind[:, upd_new] == VALUE_UNCHANGED) & has_value(old.kind[:, oi])
            if fill.any():
                for arr_new, arr_old in (
                    (new.kind, old.kind),
                    (new.start, old.start),
                    (new.length, old.length),
                ):
                    sub = arr_new[:, upd_new]
                    sub[fill] = arr_old[:, oi][fill]
                    arr_new[:, upd_new] = sub
            if key_cols:
                pk_moved = upd_new[keys_differ(a, old, oi, new, upd_new, key_cols)]

        nonkey = np.array([not c.is_key for c in rel.columns])[:, None]
        del_rows = np.flatnonzero(kinds_v == DELETE)
        groups = [
            # (tuples, which tuples, message index, seq offset, op code, key-only flags)
            (new, None, msg[new_rows], 0, np.where(kinds_v[new_rows] == INSERT, 0, 1), None),
            (old, old_index[del_rows], msg[del_rows], 0, 2, tag5[sel][del_rows] == ord("K")),
        ]
        if len(pk_moved):
            pk_old = oi[np.searchsorted(upd_new, pk_moved)]
            key_only = tag5[sel][new_rows[pk_moved]] == ord("K")
            groups.append((old, pk_old, msg[new_rows[pk_moved]], -1, 2, key_only))
        out = []
        for tuples, take, gmsg, seq_off, op, key_only in groups:
            if len(gmsg) == 0:
                continue
            start, length, kind = tuples.start, tuples.length, tuples.kind
            if take is not None:
                start, length, kind = start[:, take], length[:, take], kind[:, take]
            seq = seq_end[gmsg] + seq_off
            lsn = msg_lsn[gmsg]
            op = np.broadcast_to(np.asarray(op, np.int64), gmsg.shape)
            unchanged = kind == VALUE_UNCHANGED
            if key_only is not None and key_only.any():
                unchanged = unchanged | (nonkey & key_only[None, :])
            if skip_through is not None:
                keep = (lsn > skip_through.lsn) | (
                    (lsn == skip_through.lsn) & (seq > skip_through.seq)
                )
                if not keep.all():
                    start, length, kind, unchanged = (
                        x[:, keep] for x in (start, length, kind, unchanged)
                    )
                    gmsg, op, seq, lsn = gmsg[keep], op[keep], seq[keep], lsn[keep]
                if len(gmsg) == 0:
                    continue
            valid = has_value(kind)
            binary = (kind == VALUE_BINARY).any(axis=1)  # per column (a session asks for either)
            if binary.any():
                if (binary & (kind == VALUE_TEXT).any(axis=1)).any():
                    raise DecodeError(
                        f"relation {rel.table} has text and binary values in one column"
                    )
                start, length = text_spans(a, start, length, valid, binary, rel.columns)
            values = gather_strings(a, start, length, valid)
            converted = None
            if binary.any():
                converted = binary_columns(a, start, length, valid, binary, values, rel.columns)
            cols = columns_from_text(
                values, rel.columns, check_utf8=self.check_utf8, converted=converted
            )
            schema = pa.schema(
                [pa.field(c, arr.type) for c, arr in zip(cols.names, cols.arrays, strict=True)]
                + meta_schema_fields()
            )
            # a companion is carried exactly when its column is
            meta = _meta_arrays(lsn, seq, op, msg_ts[gmsg], unchanged[cols.source], cols.names)
            out.append(_with_rejects(pa.Table.from_arrays(cols.arrays + meta, schema=schema), cols))
        return out


def _ts(pg_us: int) -> dt.datetime:
    try:
        return dt.datetime.fromtimestamp((pg_us + PG_EPOCH_US) / 1e6, tz=dt.UTC)
    except (ValueError, OverflowError, OSError):
        raise DecodeError(f"commit timestamp {pg_us} us after 2000-01-01 is out of range") from None


def _meta_arrays(lsn, seq, op, commit_ts_pg, unchanged, names) -> list[pa.Array]:
    m = len(lsn)
    op_bytes = OP_CODES[op]
    op_arr = pa.Array.from_buffers(
        pa.string(),
        m,
        [None, pa.py_buffer(np.arange(m + 1, dtype=np.int32)), pa.py_buffer(op_bytes)],
    )
    ts = pa.array(commit_ts_pg + PG_EPOCH_US, pa.int64()).cast(pa.timestamp("us", tz="UTC"))
    return [
        pa.array(lsn, pa.int64()),
        pa.array(seq, pa.int64()),
        op_arr,
        pa.array(op == 2, pa.bool_()),
        ts,
        _unchanged_lists(unchanged, names),
    ]


def _unchanged_lists(unchanged: np.ndarray, names: list[str]) -> pa.Array:
    m = unchanged.shape[1]
    if not unchanged.any():
        return pa.nulls(m, pa.list_(pa.string()))
    per_row = unchanged.sum(axis=0)
    offsets = np.zeros(m + 1, np.int32)
    np.cumsum(per_row, out=offsets[1:])
    rows, cols = np.nonzero(unchanged.T)
    values = pa.array(np.array(names, dtype=object)[cols], pa.string())
    mask = pa.array(per_row == 0)
    return pa.ListArray.from_arrays(pa.array(offsets), values, mask=mask)


def _empty_rows(rel: Relation) -> pa.Table:
    return pa.schema(source_fields(rel.columns) + meta_schema_fields()).empty_table()


def _with_rejects(table: pa.Table, cols: Converted) -> pa.Table:
    if cols.reasons is None:
        return table
    return table.append_column(REJECT_REASON, cols.reasons).append_column(REJECT_VALUE, cols.values)


__all__ = [
    "DecodedChunk",
    "DecodedTable",
    "PgOutputDecoder",
    "Relation",
]
