"""Property: whatever mix of transactions, ingests, crashes and restarts, the raw tables end up
equal to the source row for row, and the change log never holds a change twice."""

from __future__ import annotations

import contextlib
import datetime as dt
from decimal import Decimal

import psycopg2
from cdc_helpers import Crash, crash_at, tiny_peek_ranges
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\x00"),
    max_size=12,
)
MONEY = st.decimals(
    min_value=Decimal("-9999999999.99"), max_value=Decimal("9999999999.99"), places=2
)
WHEN = st.datetimes(
    min_value=dt.datetime(2025, 1, 1), max_value=dt.datetime(2027, 1, 1), timezones=st.just(dt.UTC)
)
PICK = st.integers(min_value=0, max_value=30)  # which existing row (offset), if any

STATEMENTS = st.one_of(
    st.tuples(st.just("insert user"), TEXT, st.booleans()),
    st.tuples(st.just("update user"), PICK, TEXT),
    # far above the serial ids, so a later insert never collides with a moved key
    st.tuples(st.just("move user"), PICK, st.integers(min_value=10**6, max_value=10**7)),
    st.tuples(st.just("delete user"), PICK),
    st.tuples(st.just("insert order"), MONEY, WHEN),
    st.tuples(st.just("update order"), PICK, MONEY, WHEN),
    st.tuples(st.just("delete order"), PICK),
    st.tuples(st.just("truncate orders")),
)
TXN = st.tuples(st.just("txn"), st.lists(STATEMENTS, min_size=1, max_size=8), st.booleans())
INGEST = st.tuples(
    st.just("ingest"),
    st.sampled_from([3, 7, 50]),  # batch size (messages)
    st.sampled_from([None, None, "snapshot", "decoded", "applied", "committed", "acked"]),
    st.integers(min_value=1, max_value=3),  # crash at the n-th time the stage is reached
)
WORKLOAD = st.lists(st.one_of(TXN, TXN, INGEST), min_size=2, max_size=14)

BIG = "€" * 1200  # over the TOAST threshold once stored


def run_statement(cur, stmt) -> None:
    kind = stmt[0]
    if kind == "insert user":
        _, email, big = stmt
        cur.execute(
            "insert into users (email, full_name) values (%s, %s)", (email, BIG if big else None)
        )
    elif kind == "update user":
        cur.execute(
            "update users set email = %s "
            "where id = (select id from users order by id offset %s limit 1)",
            (stmt[2], stmt[1]),
        )
    elif kind == "move user":
        cur.execute(
            "update users set id = id + %s "
            "where id = (select id from users order by id offset %s limit 1) and not exists (select 1 from users u2 where u2.id = users.id + %s)",
            (stmt[2], stmt[1], stmt[2]),
        )
    elif kind == "delete user":
        cur.execute(
            "delete from users where id = (select id from users order by id offset %s limit 1)",
            (stmt[1],),
        )
    elif kind == "insert order":
        cur.execute(
            "insert into orders (user_id, total, status, created_at) values (1, %s, 'new', %s)",
            (stmt[1], stmt[2]),
        )
    elif kind == "update order":
        cur.execute(
            "update orders set total = %s, created_at = %s "
            "where id = (select id from orders order by id offset %s limit 1)",
            (stmt[2], stmt[3], stmt[1]),
        )
    elif kind == "delete order":
        cur.execute(
            "delete from orders where id = (select id from orders order by id offset %s limit 1)",
            (stmt[1],),
        )
    elif kind == "truncate orders":
        cur.execute("truncate orders")


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(workload=WORKLOAD, ranged=st.booleans())
def test_random_transactions_ingests_and_crashes_keep_raw_equal_to_source(
    fresh_cdc_env, workload, ranged
):
    """`ranged`: the backlog is read as many small LSN ranges from temporary slot copies."""
    env = fresh_cdc_env()
    env.tables = ("users", "orders")
    conn = psycopg2.connect(env.url)
    with tiny_peek_ranges(first=64, largest=1024) if ranged else contextlib.nullcontext():
        run_workload(env, conn, workload)


def run_workload(env, conn, workload) -> None:
    try:
        for step in workload:
            if step[0] == "txn":
                _, statements, commit = step
                try:
                    with conn.cursor() as cur:
                        for stmt in statements:
                            run_statement(cur, stmt)
                except psycopg2.Error:
                    commit = False  # a statement the workload could not run: roll back
                conn.commit() if commit else conn.rollback()
            else:
                _, batch_size, stage, hit = step
                try:
                    env.ingest(batch_size=batch_size, fault=crash_at(stage, hit) if stage else None)
                except Crash:
                    pass  # the process "died"; the next ingest is the restart
        env.ingest(batch_size=50)
        env.assert_raw_equals_source()
        env.assert_change_log_has_no_duplicates()
    finally:
        conn.close()
