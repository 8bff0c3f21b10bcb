"""history/<table> is exact: for every moment the source was photographed during a randomized
workload, the history's as-of state at that moment (through the `as_of` macro) equals the source
rows as they were, including states that lived a few milliseconds.

Each photograph is one REPEATABLE READ transaction that reads `clock_timestamp()` and every row:
the transactions before it committed no later than that time. The workload then waits, inside
its next transaction, until the server clock has passed that time, so every later commit is
strictly after it: the boundary is exact by construction, not by timing.

The history is built in two dbt runs (mid-workload, then at the end), so the incremental path
(reopening and closing versions of the earlier run) is what is compared.
"""

from __future__ import annotations

import datetime as dt
import random
import re
from decimal import Decimal
from pathlib import Path

import duckdb
import psycopg2

from tests.dbt.test_dbt_project import DbtProject

TABLES = ("users", "orders")
PLACEHOLDER = "cast($as_of as timestamptz)"
SPLIT = "\n-- next table\n"


def _source_state(cdc) -> tuple[dt.datetime, dict[str, list[tuple]]]:
    conn = psycopg2.connect(cdc.url)
    try:
        conn.set_session(isolation_level="REPEATABLE READ")
        with conn.cursor() as cur:
            cur.execute("select clock_timestamp()")
            (at,) = cur.fetchone()
        rows = {}
        for table in TABLES:
            with conn.cursor() as cur:
                cur.execute(f"select * from {table} order by id")  # noqa: S608 - fixed names
                rows[table] = cur.fetchall()
        conn.commit()
    finally:
        conn.close()
    return at, rows


def _wait_past(cur, moment: dt.datetime) -> None:
    """Commit nothing before the server clock has passed `moment` (a photograph's time)."""
    while True:
        cur.execute("select clock_timestamp() > %s", (moment,))
        if cur.fetchone()[0]:
            return


def _transaction(cur, rng: random.Random) -> None:
    """1-4 statements; the same row may change several times in one transaction."""
    for _ in range(rng.randint(1, 4)):
        kind = rng.choice(
            ["insert user", "update user", "update user", "move user", "delete user",
             "insert order", "update order", "update order", "delete order", "truncate orders"]
            if rng.random() < 0.05
            else ["insert user", "update user", "update user", "move user", "delete user",
                  "insert order", "update order", "update order", "delete order"]
        )  # fmt: skip
        pick = rng.randint(0, 6)
        if kind == "insert user":
            cur.execute(
                "insert into users (email, country) values (%s, %s)",
                (f"u{rng.randint(0, 999)}@example.com", rng.choice(["KR", "US", None])),
            )
        elif kind == "update user":
            cur.execute(
                "update users set email = %s, deleted_at = %s "
                "where id = (select id from users order by id offset %s limit 1)",
                (f"e{rng.randint(0, 999)}", rng.choice([None, dt.datetime.now(dt.UTC)]), pick),
            )
        elif kind == "move user":
            cur.execute(
                "update users set id = id + 1000000 "
                "where id = (select id from users where id < 1000000 order by id offset %s limit 1)",
                (pick,),
            )
        elif kind == "delete user":
            cur.execute(
                "delete from users where id = (select id from users order by id offset %s limit 1)",
                (pick,),
            )
        elif kind == "insert order":
            cur.execute(
                "insert into orders (user_id, total, status) values (%s, %s, 'pending')",
                (rng.randint(1, 9), Decimal(rng.randint(100, 99999)) / 100),
            )
        elif kind == "update order":
            cur.execute(
                "update orders set status = %s, total = total + 1 "
                "where id = (select id from orders order by id offset %s limit 1)",
                (rng.choice(["paid", "completed", "refunded", "cancelled"]), pick),
            )
        elif kind == "delete order":
            cur.execute(
                "delete from orders where id = (select id from orders order by id offset %s limit 1)",
                (pick,),
            )
        else:
            cur.execute("truncate orders")


def _as_of_queries(project: DbtProject) -> dict[str, str]:
    """The `as_of` macro compiled (in one dbt call) per table, with a parameter for the instant."""
    inline = SPLIT.join(
        f"select * from {{{{ as_of('{table}', '{PLACEHOLDER}') }}}} as h order by id"  # noqa: S608
        for table in TABLES
    )
    out = project.run("compile", "--quiet", "--inline", inline).stdout
    compiled = out[out.index("select") :].split(SPLIT)
    return {table: sql.strip() for table, sql in zip(TABLES, compiled, strict=True)}


def test_as_of_every_photographed_moment_equals_the_source_then(cdc, tmp_path):
    rng = random.Random(24)
    cdc.tables = TABLES
    cdc.execute(
        "insert into users (email, country) select 'seed' || g || '@example.com', 'KR' "
        "from generate_series(1, 6) g",
        "insert into orders (user_id, total, status) select g, 10, 'pending' "
        "from generate_series(1, 6) g",
    )
    project = DbtProject(tmp_path / "dbt")
    project.tmp.mkdir()
    project.warehouse = Path(cdc.tmp / f"{cdc.db}.duckdb")
    build = ("run", "--quiet", "--select", *TABLES)

    cdc.ingest()  # the initial snapshot: history starts here
    photos = [_source_state(cdc)]
    conn = psycopg2.connect(cdc.url)
    try:
        for step in range(40):
            with conn.cursor() as cur:
                _wait_past(cur, photos[-1][0])
                try:
                    _transaction(cur, rng)
                except psycopg2.Error:
                    conn.rollback()
                    continue
            conn.commit()
            if rng.random() < 0.5:
                photos.append(_source_state(cdc))
            if step == 20:
                cdc.ingest()
                project.run(*build)
    finally:
        conn.close()
    cdc.ingest()
    project.run(*build)

    queries = _as_of_queries(project)
    assert all(PLACEHOLDER.replace("$as_of", "") not in q for q in queries.values())
    with duckdb.connect(str(project.warehouse), read_only=True) as con:
        for at, source in photos:
            for table in TABLES:
                columns = [c for c, _ in cdc._attributes(table)]
                got = con.execute(queries[table], {"as_of": at}).fetchall()
                names = [d[0] for d in con.description]
                history = [tuple(row[names.index(c)] for c in columns) for row in got]
                assert history == source[table], f"{table} as of {at.isoformat()}"
        orders = con.execute(
            "select count(*), count(*) filter (where valid_to - valid_from < interval 1 second),"
            " count(*) filter (where ended_by = 't') from history.orders"
        ).fetchone()
        # a key that arrived by a primary-key update: its first version started by an update
        moved = con.execute(
            "select count(*) from history.users h where started_by = 'u' and not exists "
            "(select 1 from history.users e where e.id = h.id and e.valid_from_lsn < h.valid_from_lsn)"
        ).fetchone()[0]
    print(f"photos={len(photos)} orders(versions, <1s, truncated)={orders} moved={moved}")
    # the workload made what the docstring promises: short-lived states, truncates, moved keys
    assert len(photos) > 15
    assert orders[1] > 10 and orders[2] > 0 and moved > 0
    assert re.search(r"valid_from <= cast\(", queries["orders"])
