"""Lag of the slot feed's tables at a cost that does not grow with the backlog.

One statement reads, for every captured table: the WAL bytes behind (the server's current WAL
position minus the table's checkpoint: slot positions only, no decoding) and, from a peek bounded
to the first `window` bytes of WAL after the slot's confirmed position, the changes pending after
the table's applied position and the commit time of the oldest of them (from the Begin messages'
bytes, at the offsets `lib/pgoutput_wire.py` states for the decoder). A peek decodes from the
slot's restart point up to its `upto_lsn` and emits whole transactions only, so a transaction whose commit lies past the window is decoded into the
server's reorder buffer for at most `window` bytes and never sent: the cost is bounded by the
window, whatever the backlog and however large its first transaction. (Plus the WAL between the
slot's restart point and its confirmed position, which a peek reads again: normally the few
seconds before the last ack, more while a transaction older than that stays open.)

When the window reaches the current WAL position, the counts and times are exact. Otherwise they
are read from the window only and the result is flagged `pending_sampled`: a count is then a lower
bound, and the oldest commit found for a table is its oldest pending one (the window starts at
the slot, before every table's position); a table with nothing in the window has its oldest
pending commit after every commit in it. The sensor's bytes threshold is the window, so a backlog
the window cannot see whole is lagging by bytes (defs/automation/logic.py), unless the table's
write counters (`pg_stat_user_tables`, read in the same statement) show it unchanged since the
last ingest: then that WAL is other tables' or other databases'.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import psycopg2.errors
from psycopg2 import sql

from analytics_assets.lib import pgoutput_wire as wire
from analytics_assets.lib.feeds.base import TableLag, TableState, format_lsn, parse_lsn

# The default of CDC_LAG_MAX_BYTES (settings.py): ~7k small row changes of WAL
LAG_WINDOW_BYTES = 1 << 20

# While another session's ingest runs (it holds the slot's ingest lock) the slot is not peeked:
# that ingest is draining it. The pending count is then unknown (NULL), as when the slot is held
# or missing, and only the WAL bytes behind are measured.
_LAG_SQL = """
with busy as (
    select exists (
        select 1 from pg_locks l where {{lock_held}} and l.pid <> pg_backend_pid()
    ) as b
),
slot as (
    select confirmed_flush_lsn as start,
           confirmed_flush_lsn + %(window)s::numeric as upto
    from pg_replication_slots where slot_name = %(slot)s
),
msgs as (
    select ord, data, get_byte(data, 0) as kind,
           max(case when get_byte(data, 0) = {begin} then ord end) over (order by ord) as txn
    from pg_logical_slot_peek_binary_changes({{slot}}, (select upto from slot), null,
         'proto_version', '1', 'publication_names', {{pub}}) with ordinality as p(lsn, xid, data, ord)
    where not (select b from busy)  -- a one-time filter: when busy, the peek never starts
),
begins as (
    select ord as txn,
           ('x' || encode(substr(data, {begin_final_lsn}, 8), 'hex'))::bit(64)::int8 as commit_lsn,
           timestamptz '{pg_epoch}'
             + ('x' || encode(substr(data, {begin_commit_ts}, 8), 'hex'))::bit(64)::int8 * interval '1 microsecond'
             as commit_ts
    from msgs where kind = {begin}
),
changes as (
    -- every change message (truncates too) takes the next ordinal of its transaction, as in
    -- the decoder's positions (lib/pgoutput.py); only row changes are counted
    select txn, kind, 2 * row_number() over (partition by txn order by ord) as seq,
           ((get_byte(data, {relid})::int8 << 24) | (get_byte(data, {relid} + 1) << 16)
            | (get_byte(data, {relid} + 2) << 8) | get_byte(data, {relid} + 3))::oid as relid
    from msgs where kind in ({change_kinds})
),
wanted as (
    -- from_lsn: where the table's reading starts (its checkpoint, else the slot's position)
    select w.*, to_regclass('public.' || quote_ident(w.tbl))::oid as relid,
           coalesce(w.checkpoint::pg_lsn, (select start from slot)) as from_lsn
    from unnest(%(tables)s::text[], %(lsn)s::text[], %(pos_lsn)s::int8[],
                %(pos_seq)s::int8[]) as w(tbl, checkpoint, pos_lsn, pos_seq)
)
select w.tbl,
       case when (select b from busy) then null else count(b.txn) end as pending,
       coalesce((select upto from slot) < pg_current_wal_lsn(), false) as sampled,
       pg_wal_lsn_diff(pg_current_wal_lsn(), w.from_lsn)::int8,
       min(b.commit_ts) as oldest,
       coalesce(extract(epoch from now() - min(b.commit_ts)), 0)::float8 as seconds,
       w.from_lsn::text as measured_from,
       (select concat_ws('/', st.n_tup_ins, st.n_tup_upd, st.n_tup_del, st.n_live_tup,
                         st.n_dead_tup)
        from pg_stat_user_tables st where st.relid = w.relid) as activity
from wanted w
left join (changes c join begins b using (txn))
  on c.relid = w.relid and c.kind <> {truncate}
 and (w.pos_lsn is null or (b.commit_lsn, c.seq) > (w.pos_lsn, w.pos_seq))
group by w.tbl, w.relid, w.from_lsn
order by w.tbl
"""
# The pgoutput bytes the statement reads, where the decoder reads them (`lib/pgoutput_wire.py`:
# SQL's get_byte counts from 0 as the offsets do, substr from 1).
LAG_SQL = _LAG_SQL.format(
    begin=wire.BEGIN,
    begin_final_lsn=wire.BEGIN_FINAL_LSN + 1,
    begin_commit_ts=wire.BEGIN_COMMIT_TS + 1,
    relid=wire.ROW_RELATION_ID,
    change_kinds=", ".join(map(str, wire.CHANGE_KINDS)),
    truncate=wire.TRUNCATE,
    pg_epoch=wire.PG_EPOCH.isoformat(sep=" "),
)

LAG_BYTES_SQL = """
select w.tbl, null::int8, false, pg_wal_lsn_diff(pg_current_wal_lsn(), w.from_lsn)::int8,
       null::timestamptz, 0::float8, w.from_lsn::text, null::text
from (
    select u.tbl, coalesce(u.checkpoint::pg_lsn,
                           (select confirmed_flush_lsn from pg_replication_slots
                            where slot_name = %(slot)s)) as from_lsn
    from unnest(%(tables)s::text[], %(lsn)s::text[], %(pos_lsn)s::int8[], %(pos_seq)s::int8[])
         as u(tbl, checkpoint, pos_lsn, pos_seq)
) as w
order by w.tbl
"""


def read_lag(
    query: Callable[..., list[tuple]],
    *,
    slot: str,
    publication: str,
    tables: Sequence[str],
    state: Mapping[str, TableState],
    window: int,
    lock_held: str,
    lock_params: Mapping[str, int],
) -> dict[str, TableLag]:
    """Per table in `tables`: the lag, read with one statement through `query` (two when the
    slot is held by a reader or missing: the bytes-only fallback)."""
    tables = list(tables)
    lsns = [parse_lsn(state[t].checkpoint) if t in state else None for t in tables]
    params = {
        "tables": tables,
        "lsn": [format_lsn(x) if x is not None else None for x in lsns],
        "pos_lsn": [state[t].position.lsn if t in state else None for t in tables],
        "pos_seq": [state[t].position.seq if t in state else None for t in tables],
        "slot": slot,
        "window": int(window),
        **lock_params,
    }
    statement = sql.SQL(LAG_SQL).format(
        slot=sql.Literal(slot), pub=sql.Literal(publication), lock_held=sql.SQL(lock_held)
    )
    try:
        rows = query(statement, params)
    except (psycopg2.errors.ObjectInUse, psycopg2.errors.UndefinedObject):
        # the slot is being read right now (or does not exist): bytes only
        rows = query(sql.SQL(LAG_BYTES_SQL), params)
    out = {}
    for table, pending, sampled, lag_bytes, oldest, seconds, measured_from, activity in rows:
        out[table] = TableLag(
            pending_changes=None if pending is None else int(pending),
            position_lag_bytes=None if lag_bytes is None else int(lag_bytes),
            seconds_behind=float(seconds or 0.0),
            oldest_commit_ts=oldest,
            pending_sampled=bool(sampled),
            measured_from=measured_from,
            activity=activity,
        )
    return out
