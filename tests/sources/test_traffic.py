"""The traffic generator writes realistic, deterministic data into the real source database."""

from __future__ import annotations

import datetime as dt

import psycopg2

from analytics_assets.dev.traffic import generate_history, run_live

END = dt.datetime(2026, 6, 30, tzinfo=dt.UTC)


def _dump(url):
    conn = psycopg2.connect(url)
    out = {}
    with conn.cursor() as cur:
        for table in ("users", "products", "orders", "order_items"):
            cur.execute(f"select * from {table} order by id")  # noqa: S608 - fixed names
            out[table] = cur.fetchall()
    conn.close()
    return out


def _history(url, seed):
    conn = psycopg2.connect(url)
    generate_history(conn, days=5, orders_per_day=40, seed=seed, end=END)
    conn.close()
    return _dump(url)


def test_history_is_deterministic_for_a_seed(source_db, pg_stack):
    import uuid

    first = _history(source_db, seed=3)
    # a second, fresh database with the same seed holds the very same rows
    other = f"t_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(pg_stack.url("postgres"))
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'create database "{other}"')
    from analytics_assets.dev.schema import migrate

    conn = psycopg2.connect(pg_stack.url(other))
    migrate(conn)
    conn.close()
    assert _history(pg_stack.url(other), seed=3) == first
    with admin.cursor() as cur:
        cur.execute(f'drop database "{other}" with (force)')
    admin.close()
    assert first["orders"], "history wrote no orders"


def test_history_has_the_lifecycle_the_marts_need(source_db):
    data = _history(source_db, seed=11)
    statuses = {row[3] for row in data["orders"]}
    assert {"pending", "paid", "completed", "cancelled"} <= statuses
    created = [row[4] for row in data["orders"]]
    assert min(created) >= END - dt.timedelta(days=5) and max(created) <= END
    late = [r for r in data["orders"] if r[5] and (r[5] - r[4]) > dt.timedelta(days=1)]
    assert late, "some orders must pay days after they were created (late data)"
    totals = {r[0]: r[2] for r in data["orders"]}
    by_order = {}
    for item in data["order_items"]:
        by_order[item[1]] = by_order.get(item[1], 0) + item[3] * item[4]
    assert all(totals[o] == t for o, t in by_order.items()), "order total = sum of its items"


def test_live_traffic_mixes_inserts_updates_and_deletes(source_db):
    conn = psycopg2.connect(source_db)
    generate_history(conn, days=2, orders_per_day=50, seed=5, end=END)
    with conn.cursor() as cur:
        cur.execute("select count(*), count(*) filter (where status = 'pending') from orders")
        before_total, _ = cur.fetchone()
    result = run_live(conn, rate=400, seconds=1.0, seed=9)
    with conn.cursor() as cur:
        cur.execute("select count(*) from orders")
        after_total = cur.fetchone()[0]
        cur.execute("select count(*) from orders where paid_at > now() - interval '1 minute'")
        paid_now = cur.fetchone()[0]
    conn.close()
    assert 250 <= result.changes <= 450
    assert after_total > before_total
    assert paid_now > 0
