"""The raw layer as CDC writes it, with a small fixed data set, in a DuckDB file.

Source columns plus `_lsn`, `_seq`, `_op`, `_is_deleted`, `_commit_ts`, `_loaded_at`: the contract
between the CDC tables and the dbt models. The rows are chosen for the assertions in
`tests/dbt/test_dbt_project.py` (soft deletes, hard deletes, a UTC-5 order that lands on the next
day, ...); other tests use them as a warehouse dbt can build on.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import duckdb

RAW_DDL = """
create schema raw;
create table raw.users (
    id bigint, email varchar, full_name varchar, country varchar(2),
    created_at timestamptz, updated_at timestamptz, deleted_at timestamptz,
    _lsn bigint, _seq bigint, _op varchar, _is_deleted boolean,
    _commit_ts timestamptz, _loaded_at timestamptz
);
create table raw.products (
    id bigint, name varchar, category varchar, price decimal(12, 2),
    created_at timestamptz, updated_at timestamptz,
    _lsn bigint, _seq bigint, _op varchar, _is_deleted boolean,
    _commit_ts timestamptz, _loaded_at timestamptz
);
create table raw.orders (
    id bigint, user_id bigint, total decimal(12, 2), status varchar,
    created_at timestamptz, paid_at timestamptz, deleted_at timestamptz, updated_at timestamptz,
    _lsn bigint, _seq bigint, _op varchar, _is_deleted boolean,
    _commit_ts timestamptz, _loaded_at timestamptz
);
create table raw.order_items (
    id bigint, order_id bigint, product_id bigint, quantity integer, unit_price decimal(12, 2),
    created_at timestamptz, updated_at timestamptz,
    _lsn bigint, _seq bigint, _op varchar, _is_deleted boolean,
    _commit_ts timestamptz, _loaded_at timestamptz
);
"""


def at(day_time: str) -> str:
    """'03-01 09:00' -> a 2024 timestamp in UTC, as text DuckDB casts to TIMESTAMPTZ."""
    return f"2024-{day_time}:00+00"


USERS = [
    # id, email, full_name, country, created_at, deleted_at, _is_deleted
    (1, "alice@example.com", "Alice", "de", at("01-01 00:00"), None, False),
    (2, "bob@example.com", "Bob", "US", at("01-02 00:00"), None, False),
    (3, "carol@example.com", "Carol", "FR", at("01-03 00:00"), at("02-01 00:00"), False),
    (4, "dave@example.com", "Dave", "GB", at("01-04 00:00"), None, True),
    (5, "eve@example.com", "Eve", "NL", at("01-05 00:00"), None, False),
]

PRODUCTS = [
    # id, name, category, price
    (100, "widget", "tools", Decimal("10.00")),
    (101, "gadget", "toys", Decimal("25.00")),
]

ORDERS = [
    # id, user_id, total, status, created_at, paid_at, deleted_at, _is_deleted
    (1, 1, "30.00", "completed", at("03-01 09:00"), at("03-01 09:05"), None, False),
    (2, 2, "20.00", "completed", at("03-01 12:00"), at("03-01 12:01"), None, False),
    (3, 1, "15.00", "cancelled", at("03-01 13:00"), None, None, False),
    # soft-deleted in the app: must never count
    (4, 2, "50.00", "completed", at("03-02 10:00"), at("03-02 10:01"), at("03-02 11:00"), False),
    (5, 1, "25.00", "completed", at("03-02 11:00"), at("03-02 11:10"), None, False),
    # unpaid: NULL paid_at
    (6, 5, "12.00", "pending", at("03-02 15:00"), None, None, False),
    # user 3 is soft-deleted but the order is live: counts, and its relationship test passes
    (12, 3, "10.00", "completed", at("03-02 16:00"), at("03-02 16:01"), None, False),
    # the only completed order of 2024-03-03
    (8, 2, "18.00", "completed", at("03-03 08:00"), at("03-03 08:02"), None, False),
    # 23:30 at UTC-5 on the 3rd is the 4th in UTC
    (7, 5, "40.00", "completed", "2024-03-03 23:30:00-05", "2024-03-03 23:31:00-05", None, False),
    # deleted at source: kept in raw with _is_deleted, must never count
    (9, 1, "60.00", "completed", at("03-05 09:00"), at("03-05 09:01"), None, True),
    (10, 5, "40.00", "refunded", at("03-05 10:00"), at("03-05 10:01"), None, False),
    (11, 2, "33.00", "completed", at("03-05 11:00"), at("03-05 11:01"), None, False),
]

ORDER_ITEMS = [
    # id, order_id, product_id, quantity, unit_price
    (1000, 1, 100, 3, "10.00"),
    (1001, 2, 100, 2, "10.00"),
    (1002, 3, 101, 1, "15.00"),
    (1003, 4, 101, 2, "25.00"),  # line of the soft-deleted order: dropped downstream
    (1004, 5, 101, 1, "25.00"),
    (1005, 6, 100, 1, "12.00"),
    (1006, 7, 100, 4, "10.00"),
    (1007, 8, 100, 1, "10.00"),
    (1008, 8, 101, 1, "8.00"),
    (1009, 11, 101, 1, "33.00"),
    (1010, 12, 100, 1, "10.00"),
]

# Each raw row ends with the CDC metadata: _lsn, _seq, _op, _is_deleted, _commit_ts, _loaded_at.
INSERT_USER = """
insert into raw.users values (
    ?, ?, ?, ?, ?::timestamptz, ?::timestamptz, ?::timestamptz,
    ?, 0, case when ? then 'd' else 'r' end, ?, ?::timestamptz, ?::timestamptz
)
"""
INSERT_PRODUCT = """
insert into raw.products values (
    ?, ?, ?, ?, ?::timestamptz, ?::timestamptz,
    ?, 0, case when ? then 'd' else 'r' end, ?, ?::timestamptz, ?::timestamptz
)
"""
INSERT_ORDER = """
insert into raw.orders values (
    ?, ?, ?::decimal(12, 2), ?, ?::timestamptz, ?::timestamptz, ?::timestamptz, ?::timestamptz,
    ?, 0, case when ? then 'd' else 'r' end, ?, ?::timestamptz, ?::timestamptz
)
"""
INSERT_ORDER_ITEM = """
insert into raw.order_items values (
    ?, ?, ?, ?, ?::decimal(12, 2), ?::timestamptz, ?::timestamptz,
    ?, 0, case when ? then 'd' else 'r' end, ?, ?::timestamptz, ?::timestamptz
)
"""


def _cdc(lsn: int, is_deleted: bool) -> list:
    return [lsn, is_deleted, is_deleted, at("03-06 00:00"), at("03-06 00:01")]


# The change log each raw table would have had: every row read by a snapshot at position (1, n),
# the rows deleted since then deleted at (2, n).
CHANGE_LOG_SQL = """
create table raw.{table}_changes as
select * exclude (_is_deleted, _lsn, _seq, _op), 1::bigint as _lsn,
    row_number() over (order by id) as _seq, 'r' as _op, null::bigint as _source_lsn
from raw.{table}
union all by name
select * exclude (_is_deleted, _lsn, _seq, _op), 2::bigint as _lsn,
    row_number() over (order by id) as _seq, 'd' as _op, null::bigint as _source_lsn
from raw.{table} where _is_deleted
"""


def create_raw_tables(path: Path) -> None:
    created = at("01-01 00:00")
    with duckdb.connect(str(path)) as con:
        con.execute(RAW_DDL)
        con.executemany(
            INSERT_USER,
            # updated_at = created_at
            [[*row[:5], row[4], row[5], *_cdc(1 + n, row[6])] for n, row in enumerate(USERS)],
        )
        con.executemany(
            INSERT_PRODUCT, [[*row, created, created, *_cdc(100, False)] for row in PRODUCTS]
        )
        con.executemany(
            INSERT_ORDER,
            # updated_at = created_at
            [[*row[:7], row[4], *_cdc(200 + n, row[7])] for n, row in enumerate(ORDERS)],
        )
        con.executemany(
            INSERT_ORDER_ITEM, [[*row, created, created, *_cdc(300, False)] for row in ORDER_ITEMS]
        )
        for table in ("users", "products", "orders", "order_items"):
            con.execute(CHANGE_LOG_SQL.format(table=table))
