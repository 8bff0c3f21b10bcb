"""The application's schema, applied by idempotent, numbered migrations.

Every table has a primary key and `replica identity full`, so the CDC feed gets the old row on
updates and deletes (needed for primary-key updates and for the change log's before-image).
"""

from __future__ import annotations

MIGRATIONS: list[tuple[int, str]] = [
    (
        1,
        """
        create table if not exists users (
            id bigserial primary key,
            email text not null,
            full_name text,
            country char(2),
            created_at timestamptz not null default now(),
            updated_at timestamptz not null default now(),
            deleted_at timestamptz
        );
        create table if not exists products (
            id bigserial primary key,
            name text not null,
            category text not null,
            price numeric(12, 2) not null,
            created_at timestamptz not null default now(),
            updated_at timestamptz not null default now()
        );
        create table if not exists orders (
            id bigserial primary key,
            user_id bigint not null,
            total numeric(12, 2) not null,
            status text not null,
            created_at timestamptz not null default now(),
            paid_at timestamptz,
            deleted_at timestamptz,
            updated_at timestamptz not null default now()
        );
        create table if not exists order_items (
            id bigserial primary key,
            order_id bigint not null,
            product_id bigint not null,
            quantity integer not null,
            unit_price numeric(12, 2) not null,
            created_at timestamptz not null default now(),
            updated_at timestamptz not null default now()
        );
        create index if not exists orders_updated_at_idx on orders (updated_at);
        create index if not exists orders_user_id_idx on orders (user_id);
        create index if not exists order_items_order_id_idx on order_items (order_id);
        alter table users replica identity full;
        alter table products replica identity full;
        alter table orders replica identity full;
        alter table order_items replica identity full;
        """,
    ),
    (
        2,
        # The app_db observations read each table's newest updated_at every lag-sensor tick: an
        # index makes that one probe instead of a scan (orders has had one since 1).
        """
        create index if not exists users_updated_at_idx on users (updated_at);
        create index if not exists products_updated_at_idx on products (updated_at);
        create index if not exists order_items_updated_at_idx on order_items (updated_at);
        """,
    ),
]

APP_TABLES = ("users", "products", "orders", "order_items")


def migrate(conn) -> list[int]:
    """Apply the migrations not yet applied; returns the versions applied now."""
    applied_now = []
    with conn.cursor() as cur:
        cur.execute(
            "create table if not exists schema_migrations "
            "(version integer primary key, applied_at timestamptz not null default now())"
        )
        cur.execute("select pg_advisory_xact_lock(7263001)")
        cur.execute("select version from schema_migrations")
        done = {row[0] for row in cur.fetchall()}
        for version, sql in MIGRATIONS:
            if version in done:
                continue
            cur.execute(sql)
            cur.execute("insert into schema_migrations (version) values (%s)", (version,))
            applied_now.append(version)
    conn.commit()
    return applied_now
