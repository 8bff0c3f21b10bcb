"""The slot feed's administration of the source: the publication and the CDC role's grants, the
catalog (primary keys, columns), the replication slot's row, and the one-ingest-per-slot lock.
Each function takes `query(statement, params) -> rows` (the feed's session), so it runs on
whichever connection the caller holds.
"""

from __future__ import annotations

import contextlib
import re
import time
import zlib
from collections.abc import Callable, Collection, Sequence
from typing import Any

import psycopg2
from psycopg2 import sql

from analytics_assets.lib import pg
from analytics_assets.lib.errors import FeedError, IngestBusy

Query = Callable[..., list[tuple]]

# pg_try_advisory_lock(INGEST_LOCK_CLASS, crc32(slot)): one ingest per slot at a time
INGEST_LOCK_CLASS = 7263002
# the pg_locks rows (alias l) of that lock, granted, in this database
INGEST_LOCK_HELD = (
    "l.locktype = 'advisory' and l.granted and l.objsubid = 2 "
    "and l.classid = %(lock_class)s::oid and l.objid = %(lock_key)s::oid "
    "and l.database = (select oid from pg_database where datname = current_database())"
)


def ingest_lock_params(slot: str) -> dict[str, int]:
    """The parameters of INGEST_LOCK_HELD for `slot`."""
    return {"lock_class": INGEST_LOCK_CLASS, "lock_key": zlib.crc32(slot.encode()) & 0x7FFFFFFF}


def take_ingest_lock(query: Query, slot: str) -> None:
    """One ingest per slot: a session advisory lock on the connection `query` runs on, held until
    it closes (so a crashed ingest never keeps it). IngestBusy naming the holder otherwise."""
    params = ingest_lock_params(slot)
    got = query("select pg_try_advisory_lock(%s, %s)", (params["lock_class"], params["lock_key"]))[
        0
    ][0]
    if got:
        return
    rows = query(
        "select a.pid, a.application_name, a.client_addr::text, a.backend_start "  # noqa: S608 - a fixed fragment
        f"from pg_locks l join pg_stat_activity a on a.pid = l.pid where {INGEST_LOCK_HELD}",
        params,
    )
    raise IngestBusy(f"another ingest is running on slot {slot!r}: {_holder(rows)}")


def slot_busy(query: Query, slot: str, holder: Exception | int) -> IngestBusy:
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
            rows = query(
                "select pid, application_name, client_addr::text, backend_start "
                "from pg_stat_activity where pid = %s",
                (pid,),
            )
        rows = rows or [(pid, None, None, None)]
    return IngestBusy(
        f"another ingest is running: replication slot {slot!r} is in use by {_holder(rows)}"
    )


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


def primary_keys(query: Query, tables: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """table -> its primary key columns, in key order."""
    rows = query(
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
        (list(tables),),
    )
    return {name: tuple(cols) for name, cols in rows}


def table_columns(query: Query, table: str) -> list[tuple[str, int, int]]:
    """(name, type oid, typmod) of the table's stored columns, in order."""
    rows = query(
        """
        select a.attname, a.atttypid::int8, a.atttypmod
        from pg_attribute a
        where a.attrelid = quote_ident(%s)::regclass and a.attnum > 0 and not a.attisdropped
          and a.attgenerated = ''
        order by a.attnum
        """,
        (table,),
    )
    if not rows:
        raise FeedError(f"captured table {table!r} does not exist in the source database")
    return [(r[0], int(r[1]), int(r[2])) for r in rows]


def binary_ready(query: Query, publication: str, types: Collection[int]) -> bool:
    """Can pgoutput send this publication's values in binary: PostgreSQL 14 or later (the
    option's first release), and every column of every published table of a type in `types`."""
    rows = query(
        """
        select current_setting('server_version_num')::int >= 140000
           and coalesce(bool_and(a.atttypid::int8 = any(%s)), true)
        from pg_publication_tables p
        join pg_namespace n on n.nspname = p.schemaname
        join pg_class c on c.relnamespace = n.oid and c.relname = p.tablename
        join pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
        where p.pubname = %s
        """,
        (sorted(types), publication),
    )
    return bool(rows and rows[0][0])


def ensure_publication(
    query: Query, conn, publication: str, tables: Sequence[str], owner_url: str | None = None
) -> None:
    """Create the publication, or add captured tables it lacks (never drops any), and let the
    CDC role read the captured tables. Checks run on the CDC connection; what changes
    something runs on the owner's (`owner_url`, when another role than `conn`'s), only when
    needed."""
    missing = [t for t in tables if not query("select to_regclass(quote_ident(%s))", (t,))[0][0]]
    if missing:
        raise FeedError(
            f"captured tables {', '.join(missing)} do not exist in the source database; "
            "run the source migrations first or fix CAPTURED_TABLES"
        )
    statements = []
    exists = query("select 1 from pg_publication where pubname = %s", (publication,))
    if not exists:
        statements.append(
            sql.SQL("create publication {} for table {}").format(
                sql.Identifier(publication),
                sql.SQL(", ").join(map(sql.Identifier, tables)),
            )
        )
    else:
        have = {
            r[0]
            for r in query(
                "select tablename from pg_publication_tables "
                "where pubname = %s and schemaname = 'public'",
                (publication,),
            )
        }
        add = [t for t in tables if t not in have]
        if add:
            statements.append(
                sql.SQL("alter publication {} add table {}").format(
                    sql.Identifier(publication),
                    sql.SQL(", ").join(map(sql.Identifier, add)),
                )
            )
    unreadable = [
        r[0]
        for r in query(
            "select t from unnest(%s::text[]) t "
            "where not has_table_privilege(quote_ident(t), 'select')",
            (list(tables),),
        )
    ]
    if unreadable and owner_url is not None:
        role = query("select current_user")[0][0]
        statements.append(
            sql.SQL("grant select on table {} to {}").format(
                sql.SQL(", ").join(map(sql.Identifier, unreadable)), sql.Identifier(role)
            )
        )
    if not statements:
        return
    owner = pg.session(owner_url) if owner_url is not None else conn
    try:
        with owner.cursor() as cur:
            for statement in statements:
                cur.execute(statement)
    finally:
        if owner is not conn:
            owner.close()


def slot_row(query: Query, slot: str) -> dict[str, Any] | None:
    """The replication slot's pg_replication_slots row, or None when it does not exist."""
    rows = query(
        """
        select active, active_pid, wal_status, confirmed_flush_lsn::text, restart_lsn::text,
               pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::int8, safe_wal_size,
               plugin, database = current_database()
        from pg_replication_slots where slot_name = %s
        """,
        (slot,),
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


def free_slots(query: Query) -> int:
    """Replication slots the server can still create (the ranged read takes two temporary
    ones; with fewer free, the backlog is read as one peek)."""
    return query(
        "select current_setting('max_replication_slots')::int - count(*) from pg_replication_slots"
    )[0][0]


def wait_slot_released(query: Query, slot: str, pid: int | None, timeout: float = 30.0) -> None:
    """Until session `pid` no longer holds the slot; after `timeout`, that session is ended."""
    if pid is None:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = query("select active_pid from pg_replication_slots where slot_name = %s", (slot,))
        if not rows or rows[0][0] != pid:
            return
        time.sleep(0.05)
    query("select pg_terminate_backend(%s)", (pid,))


__all__ = [
    "INGEST_LOCK_HELD",
    "ensure_publication",
    "free_slots",
    "ingest_lock_params",
    "primary_keys",
    "slot_busy",
    "slot_row",
    "table_columns",
    "take_ingest_lock",
    "wait_slot_released",
]
