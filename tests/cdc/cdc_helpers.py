"""CDC test helpers: a source database with a slot and publication named after it, a DuckDB
warehouse file, crash injection, and row-for-row comparisons of raw tables with the source."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg2
from graph_runs import drop_database  # noqa: F401 - re-exported for the CDC tests
from graph_runs import new_database as _new_database
from psycopg2 import sql

from analytics_assets.dev.schema import APP_TABLES
from analytics_assets.lib.cdc import ingest
from analytics_assets.lib.feeds import slot_reader
from analytics_assets.lib.feeds.slot import SlotFeed
from analytics_assets.lib.warehouse.duckdb import DuckDBWarehouse


class Crash(Exception):
    """An injected crash."""


def crash_at(stage: str, hit: int = 1):
    """A fault hook that raises the `hit`-th time `stage` is reached."""
    seen = {"n": 0}

    def fault(reached: str) -> None:
        if reached == stage:
            seen["n"] += 1
            if seen["n"] == hit:
                raise Crash(stage)

    return fault


@contextlib.contextmanager
def tiny_peek_ranges(first: int = 256, largest: int = 4096) -> Iterator[None]:
    """Every backlog over `first` bytes of WAL is read as ranged peeks, the ranges a few
    transactions long: the range boundaries fall everywhere a small workload has them."""
    saved = slot_reader.PEEK_RANGE_FIRST, slot_reader.PEEK_RANGE_MAX
    slot_reader.PEEK_RANGE_FIRST, slot_reader.PEEK_RANGE_MAX = first, largest
    try:
        yield
    finally:
        slot_reader.PEEK_RANGE_FIRST, slot_reader.PEEK_RANGE_MAX = saved


@dataclass
class CdcEnv:
    url: str
    db: str
    tmp: Path
    tables: tuple[str, ...] = APP_TABLES

    @property
    def slot(self) -> str:
        return f"slot_{self.db}"

    @property
    def publication(self) -> str:
        return f"pub_{self.db}"

    def feed(self, tables=None) -> SlotFeed:
        return SlotFeed(
            self.url, slot=self.slot, publication=self.publication, tables=tables or self.tables
        )

    def warehouse(self) -> DuckDBWarehouse:
        return DuckDBWarehouse(self.tmp / f"{self.db}.duckdb")

    def ingest(self, tables=None, *, batch_size=1000, measure_lag=False, feed=None, **kw):
        feed = feed or self.feed()
        wh = self.warehouse()
        try:
            return ingest(
                tables,
                feed=feed,
                warehouse=wh,
                batch_size=batch_size,
                measure_lag=measure_lag,
                **kw,
            )
        finally:
            wh.close()

    # -- source -------------------------------------------------------------------------------

    def connect(self):
        conn = psycopg2.connect(self.url)
        conn.autocommit = True
        return conn

    def execute(self, *statements, params=None) -> None:
        """Run statements in one transaction."""
        conn = psycopg2.connect(self.url)
        try:
            with conn.cursor() as cur:
                for s in statements:
                    cur.execute(s, params)
            conn.commit()
        finally:
            conn.close()

    def query(self, statement, params=None) -> list[tuple]:
        conn = self.connect()
        try:
            with conn.cursor() as cur:
                cur.execute(statement, params)
                return cur.fetchall()
        finally:
            conn.close()

    def _attributes(self, table: str) -> list[tuple[str, str]]:
        return self.query(
            "select attname, format_type(atttypid, atttypmod) from pg_attribute "
            "where attrelid = %s::regclass and attnum > 0 and not attisdropped order by attnum",
            (table,),
        )

    def source_columns(self, table: str) -> list[str]:
        return [name for name, _ in self._attributes(table)]

    def source_rows(self, table: str) -> list[tuple]:
        """Source rows as the warehouse holds them: json, uuid and unconstrained numeric as
        their exact text."""
        cols = []
        for name, type_ in self._attributes(table):
            ident = sql.Identifier(name)
            as_text = type_ in ("json", "jsonb", "uuid", "numeric")
            cols.append(sql.SQL("{}::text").format(ident) if as_text else ident)
        q = sql.SQL("select {} from {} order by 1").format(
            sql.SQL(", ").join(cols), sql.Identifier(table)
        )
        return self.query(q)

    def slot_confirmed(self) -> str | None:
        rows = self.query(
            "select confirmed_flush_lsn::text from pg_replication_slots where slot_name = %s",
            (self.slot,),
        )
        return rows[0][0] if rows else None

    # -- warehouse ----------------------------------------------------------------------------

    def raw(self, statement: str, params=None) -> list[tuple]:
        wh = self.warehouse()
        try:
            return wh.con.execute(statement, params or []).fetchall()
        finally:
            wh.close()

    def raw_rows(self, table: str) -> list[tuple]:
        cols = ", ".join(f'"{c}"' for c in self.source_columns(table))
        query = f"select {cols} from raw.{table} where not _is_deleted order by 1"  # noqa: S608
        return self.raw(query)

    def assert_raw_equals_source(self, tables=None) -> None:
        for table in tables or self.tables:
            source, raw = self.source_rows(table), self.raw_rows(table)
            assert raw == source, f"raw.{table} differs from the source"

    def assert_change_log_has_no_duplicates(self, tables=None) -> None:
        for table in tables or self.tables:
            query = f"select _lsn, _seq, count(*) from raw.{table}_changes group by 1, 2"  # noqa: S608
            dups = self.raw(query + " having count(*) > 1")
            assert dups == [], f"raw.{table}_changes has duplicated positions: {dups[:5]}"


def new_database(admin_url: str) -> tuple[str, str]:
    return _new_database(admin_url, prefix="c_")


def database_factory(admin_url: str, tmp_path: Path, make_env):
    """A generator for factory fixtures: `make()` gives a fresh migrated source database wrapped
    by `make_env(url, name, path)`, dropping the previous one first (slots are a server-wide,
    limited resource); whatever is left is dropped when the generator closes."""
    from analytics_assets.dev.schema import migrate

    made = []

    def make():
        while made:
            drop_database(admin_url, made.pop())
        name, url = new_database(admin_url)
        conn = psycopg2.connect(url)
        migrate(conn)
        conn.close()
        made.append(name)
        path = tmp_path / name
        path.mkdir()
        return make_env(url, name, path)

    yield make
    for name in made:
        drop_database(admin_url, name)
