"""Realistic traffic for the source app DB: a history of N days and a live stream of changes.

Deterministic for a seed (and, for history, an end date): the same arguments write the same rows.
History is written with COPY (fast, one transaction per table); live traffic is a paced loop of
small transactions mixing inserts, updates and deletes, the way an application writes.
"""

from __future__ import annotations

import bisect
import datetime as dt
import io
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from psycopg2 import sql

UTC = dt.UTC

COUNTRIES = ["US", "GB", "DE", "FR", "NL", "ES", "BR", "IN", "JP", "CA"]
CATEGORIES = ["books", "games", "garden", "kitchen", "music", "outdoor", "toys"]
FIRST = ["Ana", "Björn", "Chloé", "Dmitri", "Emeka", "Fatima", "Giulia", "Hiro", "Ines", "José"]
LAST = ["Smith", "Müller", "García", "Rossi", "Kowalski", "Nguyen", "O'Brien", "Søren", "Tanaka"]


@dataclass
class HistoryResult:
    users: int
    products: int
    orders: int
    order_items: int
    start: dt.datetime
    end: dt.datetime


def _copy(cur, table: str, columns: list[str], rows: list[tuple]) -> None:
    buf = io.StringIO()
    for row in rows:
        buf.write("\t".join(_copy_value(v) for v in row))
        buf.write("\n")
    buf.seek(0)
    query = sql.SQL("copy {} ({}) from stdin").format(
        sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns))
    )
    cur.copy_expert(query, buf)


def _copy_value(value) -> str:
    if value is None:
        return "\\N"
    if isinstance(value, dt.datetime):
        return value.isoformat()
    return str(value).replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")


def _money(rng: random.Random, low: float, high: float) -> Decimal:
    return Decimal(str(round(rng.uniform(low, high), 2))).quantize(Decimal("0.01"))


def _next_ids(cur) -> dict[str, int]:
    ids = {}
    for table in ("users", "products", "orders", "order_items"):
        cur.execute(sql.SQL("select coalesce(max(id), 0) from {}").format(sql.Identifier(table)))
        ids[table] = cur.fetchone()[0]
    return ids


def _fix_sequences(cur) -> None:
    for table in ("users", "products", "orders", "order_items"):
        query = sql.SQL(
            "select setval(pg_get_serial_sequence(%s, 'id'), greatest((select max(id) from {}), 1))"
        ).format(sql.Identifier(table))
        cur.execute(query, (table,))


def generate_history(
    conn,
    *,
    days: int = 30,
    orders_per_day: int = 200,
    seed: int = 42,
    end: dt.datetime | None = None,
    progress: Callable[[int], None] | None = None,
) -> HistoryResult:
    """Write `days` days of users, products, orders and items ending at `end` (default: now).

    Orders move pending → paid → completed or cancelled; some are refunded, some soft-deleted,
    and some pay or complete days after they were created (late data for the daily marts).
    """
    if days <= 0 or orders_per_day <= 0:
        raise ValueError("days and orders_per_day must be positive")
    rng = random.Random(seed)
    end = (end or dt.datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    start = end - dt.timedelta(days=days)
    with conn.cursor() as cur:
        ids = _next_ids(cur)
        n_products = 40
        products = []
        for i in range(1, n_products + 1):
            pid = ids["products"] + i
            created = start - dt.timedelta(days=rng.randint(1, 60))
            products.append(
                (
                    pid,
                    f"{rng.choice(CATEGORIES).title()} item {pid}",
                    rng.choice(CATEGORIES),
                    _money(rng, 3, 120),
                    created,
                    created,
                )
            )
        n_users = max(10, days * orders_per_day // 6)
        users = []
        for i in range(1, n_users + 1):
            uid = ids["users"] + i
            created = start + dt.timedelta(seconds=rng.uniform(-86400 * 30, days * 86400 * 0.9))
            first, last = rng.choice(FIRST), rng.choice(LAST)
            deleted = (
                created + dt.timedelta(days=rng.uniform(1, 20)) if rng.random() < 0.01 else None
            )
            if deleted and deleted > end:
                deleted = None
            users.append(
                (
                    uid,
                    f"{first.lower()}.{uid}@example.com",
                    f"{first} {last}",
                    rng.choice(COUNTRIES),
                    created,
                    deleted or created,
                    deleted,
                )
            )
        orders, items = [], []
        item_id = ids["order_items"]
        order_id = ids["orders"]
        by_signup = sorted(users, key=lambda u: u[4])
        signups = [u[4] for u in by_signup]
        for day in range(days):
            for _ in range(orders_per_day):
                order_id += 1
                created = start + dt.timedelta(days=day, seconds=rng.uniform(0, 86400))
                user = _customer(rng, by_signup[: bisect.bisect_right(signups, created)], created)
                n_items = rng.choice([1, 1, 1, 2, 2, 3, 4])
                total = Decimal("0.00")
                for _ in range(n_items):
                    item_id += 1
                    product = rng.choice(products)
                    qty = rng.choice([1, 1, 2, 3])
                    total += product[3] * qty
                    items.append((item_id, order_id, product[0], qty, product[3], created, created))
                status, paid_at, updated, deleted_at = _lifecycle(rng, created, end)
                orders.append(
                    (order_id, user[0], total, status, created, paid_at, deleted_at, updated)
                )
            if progress:
                progress(1)
        _copy(
            cur,
            "products",
            ["id", "name", "category", "price", "created_at", "updated_at"],
            products,
        )
        _copy(
            cur,
            "users",
            ["id", "email", "full_name", "country", "created_at", "updated_at", "deleted_at"],
            users,
        )
        _copy(
            cur,
            "orders",
            [
                "id",
                "user_id",
                "total",
                "status",
                "created_at",
                "paid_at",
                "deleted_at",
                "updated_at",
            ],
            orders,
        )
        _copy(
            cur,
            "order_items",
            ["id", "order_id", "product_id", "quantity", "unit_price", "created_at", "updated_at"],
            items,
        )
        _fix_sequences(cur)
    conn.commit()
    return HistoryResult(len(users), len(products), len(orders), len(items), start, end)


def _customer(rng: random.Random, signed_up: list[tuple], at: dt.datetime) -> tuple:
    """A user who can place an order at `at`: signed up before it and not deleted by then (an
    order of a user who did not exist yet, or no longer, would be an orphan the app never makes).
    A user deleted later keeps the order: that is by design."""
    for _ in range(20 if signed_up else 0):  # nearly always the first pick: ~1% are deleted
        user = rng.choice(signed_up)
        if user[6] is None or user[6] > at:
            return user
    active = [u for u in signed_up if u[6] is None or u[6] > at]
    if not active:
        raise ValueError(f"no user can place an order at {at:%Y-%m-%d %H:%M}")
    return rng.choice(active)


def _lifecycle(rng: random.Random, created: dt.datetime, now: dt.datetime):
    """Final state of an order created at `created`, as seen at `now`."""
    status, paid_at, updated, deleted_at = "pending", None, created, None
    roll = rng.random()
    if roll < 0.08:
        status, updated = "cancelled", created + dt.timedelta(minutes=rng.uniform(1, 600))
    elif roll < 0.97:
        # Most pay within minutes; some pay late, days after the order was placed.
        delay = rng.uniform(30, 3600) if rng.random() < 0.9 else rng.uniform(86400, 4 * 86400)
        paid = created + dt.timedelta(seconds=delay)
        if paid <= now:
            status, paid_at, updated = "paid", paid, paid
            done = paid + dt.timedelta(seconds=rng.uniform(3600, 3 * 86400))
            if done <= now:
                status, updated = "completed", done
                if rng.random() < 0.03:
                    refund = done + dt.timedelta(days=rng.uniform(0.5, 5))
                    if refund <= now:
                        status, updated = "refunded", refund
    if rng.random() < 0.01:
        soft = updated + dt.timedelta(hours=rng.uniform(1, 48))
        if soft <= now:
            deleted_at, updated = soft, soft
    return status, paid_at, min(updated, now), deleted_at


@dataclass
class LiveResult:
    changes: int
    transactions: int
    seconds: float


def run_live(
    conn,
    *,
    rate: float,
    seconds: float,
    seed: int = 7,
    tick: float = 0.1,
    progress: Callable[[int], None] | None = None,
    stop: Callable[[], bool] | None = None,
) -> LiveResult:
    """Write about `rate` row changes per second for `seconds`: new orders with items, payments,
    completions, cancellations, refunds, soft deletes and the odd hard delete of an item."""
    if rate <= 0 or seconds <= 0:
        raise ValueError("rate and seconds must be positive")
    rng = random.Random(seed)
    started = time.monotonic()
    changes = txns = 0
    debt = 0.0
    with conn.cursor() as cur:
        cur.execute("select id from users where deleted_at is null order by id")
        users = [r[0] for r in cur.fetchall()]
        cur.execute("select id, price from products order by id")
        products = cur.fetchall()
        if not users or not products:
            _seed_minimum(cur, rng)
            conn.commit()
            cur.execute("select id from users order by id")
            users = [r[0] for r in cur.fetchall()]
            cur.execute("select id, price from products order by id")
            products = cur.fetchall()
        while True:
            elapsed = time.monotonic() - started
            if elapsed >= seconds or (stop and stop()):
                break
            debt += rate * tick
            budget = int(debt)
            debt -= budget
            done = 0
            while done < budget:
                done += _one_change(cur, rng, users, products)
            conn.commit()
            txns += 1
            changes += done
            debt -= done - budget
            if progress:
                progress(done)
            next_tick = started + (elapsed // tick + 1) * tick
            time.sleep(max(0.0, next_tick - time.monotonic()))
    return LiveResult(changes, txns, time.monotonic() - started)


def _seed_minimum(cur, rng: random.Random) -> None:
    for i in range(20):
        cur.execute(
            "insert into users (email, full_name, country) values (%s, %s, %s)",
            (f"live.{i}.{rng.randint(0, 10**9)}@example.com", "Live User", rng.choice(COUNTRIES)),
        )
    for i in range(10):
        cur.execute(
            "insert into products (name, category, price) values (%s, %s, %s)",
            (f"Live product {i}", rng.choice(CATEGORIES), _money(rng, 3, 120)),
        )


def _one_change(cur, rng: random.Random, users: list[int], products: list[tuple]) -> int:
    """One business event; returns the number of row changes it made."""
    roll = rng.random()
    if roll < 0.45:
        product = rng.choice(products)
        qty = rng.choice([1, 1, 2])
        cur.execute(
            "insert into orders (user_id, total, status) values (%s, %s, 'pending') returning id",
            (rng.choice(users), product[1] * qty),
        )
        order_id = cur.fetchone()[0]
        cur.execute(
            "insert into order_items (order_id, product_id, quantity, unit_price) "
            "values (%s, %s, %s, %s)",
            (order_id, product[0], qty, product[1]),
        )
        return 2
    if roll < 0.70:
        return _update_one_order(
            cur,
            "status = 'paid', paid_at = now()",
            "status = 'pending' and deleted_at is null",
            "id desc",
            rng.randint(0, 5),
        )
    if roll < 0.88:
        return _update_one_order(
            cur,
            "status = 'completed'",
            "status = 'paid' and deleted_at is null",
            "id desc",
            rng.randint(0, 20),
        )
    if roll < 0.93:
        return _update_one_order(cur, "status = 'cancelled'", "status = 'pending'", "id", 0)
    if roll < 0.96:
        # A refund: touches an order created days ago (late data for its daily partition).
        return _update_one_order(
            cur, "status = 'refunded'", "status = 'completed'", "id", rng.randint(0, 50)
        )
    if roll < 0.98:
        return _update_one_order(
            cur, "deleted_at = now()", "deleted_at is null", "id desc", rng.randint(0, 50)
        )
    cur.execute("delete from order_items where id = (select max(id) from order_items)")
    return max(cur.rowcount, 1)


def _update_one_order(cur, assignments: str, where: str, order_by: str, offset: int) -> int:
    """Sets `assignments` on the `offset`-th order matching `where`. Counts at least one change,
    so the rate loop advances even when no order matched."""
    cur.execute(
        f"update orders set {assignments}, updated_at = now() where id = ("  # noqa: S608 - fixed fragments, value bound
        f"select id from orders where {where} order by {order_by} limit 1 offset %s)",
        (offset,),
    )
    return max(cur.rowcount, 1)
