"""Observations of `app_db/<table>`: row count, newest change and CDC lag of each source table,
reported on every lag-sensor tick and after every ingest, as numbers the UI plots over time.

Cost matters (the lag sensor ticks every 5 s), so one connection and two statements whose cost
does not grow with the tables:
1. `STATS_SQL`: the live-row estimate and the insert/update/delete counters the statistics system
   keeps for each table (what `pg_stat_user_tables` shows as `n_live_tup`, `n_tup_*`, read for
   these tables only; current within seconds of a commit; no table is read), and whether a btree
   index leads with `updated_at`;
2. `max(updated_at)` of the tables that have such an index: one index probe each. A table without
   one gets no newest change rather than a full scan every tick.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence

import dagster as dg
from psycopg2 import sql

from analytics_assets.lib.feeds.base import TableLag
from analytics_assets.lib.metadata import as_metadata
from analytics_assets.lib.pg import connect

STATS_SQL = """
select t.name,
       pg_stat_get_live_tuples(c.oid),
       pg_stat_get_tuples_inserted(c.oid) + pg_stat_get_tuples_updated(c.oid)
           + pg_stat_get_tuples_deleted(c.oid),
       exists (
           select 1
           from pg_index i
           join pg_class ic on ic.oid = i.indexrelid
           join pg_am am on am.oid = ic.relam and am.amname = 'btree'
           join pg_attribute a on a.attrelid = i.indrelid and a.attnum = i.indkey[0]
           where i.indrelid = c.oid and a.attname = 'updated_at' and i.indpred is null
       )
from unnest(%s::text[]) as t(name)
join pg_class c on c.oid = to_regclass(quote_ident(t.name))
"""


def source_key(table: str) -> dg.AssetKey:
    return dg.AssetKey(["app_db", table])


def read_source_stats(
    tables: Sequence[str], url: str | None = None
) -> dict[str, tuple[int | None, int | None, dt.datetime | None]]:
    """table -> (live rows, changes counted since the statistics were reset, newest updated_at)."""
    conn = connect(url)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(STATS_SQL, (list(tables),))
            rows = cur.fetchall()
            indexed = [name for name, _, _, has_index in rows if has_index]
            newest: dict[str, dt.datetime | None] = {}
            if indexed:
                cur.execute(
                    sql.SQL(" union all ").join(
                        sql.SQL("select {}, (select max(updated_at) from {})").format(
                            sql.Literal(name), sql.Identifier(name)
                        )
                        for name in indexed
                    )
                )
                newest = dict(cur.fetchall())
    finally:
        conn.close()
    return {name: (live, changes, newest.get(name)) for name, live, changes, _ in rows}


def source_observations(
    tables: Sequence[str],
    lag: Mapping[str, TableLag | None],
    *,
    url: str | None = None,
    now: dt.datetime | None = None,
) -> list[dg.AssetObservation]:
    """One observation per table; `lag` is what the caller already measured (no second read)."""
    now = now or dt.datetime.now(dt.UTC)
    stats = read_source_stats(tables, url)
    events = []
    for table in tables:
        live, changes, newest = stats.get(table, (None, None, None))
        raw = {
            "row_count_estimate": live,
            "changes_counted": changes,
            "newest_change": dg.MetadataValue.timestamp(newest) if newest else None,
            "newest_change_age_seconds": round((now - newest).total_seconds(), 3)
            if newest
            else None,
        }
        item = lag.get(table)
        if item is not None:
            raw.update(item.as_metadata("lag"))
        version = f"{changes}:{newest.isoformat() if newest else ''}"
        events.append(
            dg.AssetObservation(
                asset_key=source_key(table),
                metadata=as_metadata(raw),
                tags={"dagster/data_version": version},
            )
        )
    return events


def observation_failure(exc: Exception) -> str:
    """One line for a failed observation; the DSN never appears (lib.pg.connect redacts it)."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"app_db observation skipped: {first}"
