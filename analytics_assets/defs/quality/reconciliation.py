"""Reconciliation of one business date: completed orders (count and revenue) in the source app
database against `marts/daily_revenue`, compared at the CDC watermark.

The source cannot be read "as of" a past moment, so the comparison leaves out the orders that are
in flux, on both sides:

- orders the source changed after the watermark (minus a margin: `updated_at` is when the
  writing transaction started, its commit comes later), which raw has not seen yet;
- orders raw holds live that the source no longer has (deleted after the watermark).

Expected = the source's settled completed orders of the date. Actual = the mart's figures minus
what the in-flux orders contributed to it (their raw rows, which the mart was built from). Live
traffic therefore never raises a false alarm, while an order CDC lost or a mart that disagrees
with raw still does.

A date's orders are those created within its business day in PARTITION_TIMEZONE (`day_bounds`,
the same instants the marts' `order_date` and the daily partitions hold).

Assumptions: the app keeps `orders.updated_at` current on every change (it does; a trigger would
make it certain); an order's `created_at` does not move between dates. If raw changed the date's
orders after the partition was built, a mismatch is a WARN ("rebuild the partition"), not an
ERROR: that is staleness, which the freshness policies own.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING

from analytics_assets.defs.quality.verdict import Verdict
from analytics_assets.defs.quality.warehouse import RAW_SCHEMA, Watermark, relation
from analytics_assets.lib.partitions import day_bounds

if TYPE_CHECKING:
    import pyarrow as pa

SOURCE_DAY_SQL = """
select id, status, total::text, deleted_at is null, updated_at
from orders
where created_at >= %(start)s and created_at < %(end)s
"""

SOURCE_VIEW = "_quality_source_orders"
RAW_VIEW = "_quality_raw_orders"

# Read from the warehouse (one SQL text for DuckDB and BigQuery): the date's raw orders and the
# mart's figures. Decimals travel as text, so no float ever touches money.
RAW_DAY_SQL = """
select
    id,
    status,
    cast(total as string),
    not coalesce(_is_deleted, false) and deleted_at is null,
    _loaded_at
from {orders}
where created_at >= ? and created_at < ?
"""

MART_DAY_SQL = """
select coalesce(sum(order_count), 0), cast(coalesce(sum(total_revenue), 0) as string)
from {mart}
where revenue_date = ?
"""

# Run in an in-memory DuckDB on the two sides as Arrow tables: the source's rows never go to
# the warehouse (BigQuery could not join them without a load job, and the checks only read).
RECONCILE_SQL = f"""
with

src as (

    select id, status, cast(total as decimal(38, 10)) as total, is_live, changed_at
    from {SOURCE_VIEW}

),

raw_day as (

    select id, status, cast(total as decimal(38, 10)) as total, is_live, changed_at
    from {RAW_VIEW}

),

flux as (

    select id from src where changed_at > $cutoff
    union
    select r.id from raw_day r
    where r.is_live and not exists (select 1 from src s where s.id = r.id)

),

expected as (

    select count(*) as orders, coalesce(sum(total), 0) as revenue
    from src
    where status = 'completed' and is_live and id not in (select id from flux)

),

in_flux as (

    select count(*) as orders, coalesce(sum(total), 0) as revenue
    from raw_day
    where status = 'completed' and is_live and id in (select id from flux)

)

select
    expected.orders, expected.revenue,
    in_flux.orders, in_flux.revenue,
    (select count(*) from flux),
    (select count(*) from src),
    (select max(changed_at) from raw_day)
from expected, in_flux
"""  # noqa: S608 - fixed names only


@dataclass(frozen=True)
class Figures:
    expected_orders: int
    expected_revenue: Decimal
    mart_orders: int
    mart_revenue: Decimal
    in_flux_orders: int
    in_flux_revenue: Decimal
    in_flux_keys: int
    source_rows: int
    raw_loaded_at: dt.datetime | None

    @property
    def actual_orders(self) -> int:
        return self.mart_orders - self.in_flux_orders

    @property
    def actual_revenue(self) -> Decimal:
        return self.mart_revenue - self.in_flux_revenue


def orders_table(rows) -> pa.Table:
    """(id, status, total as text, is_live, time) rows of either side as an Arrow table; the time
    is the source's `updated_at` or raw's `_loaded_at`."""
    import pyarrow as pa  # here, not at import: the code location loads without pyarrow

    columns = list(zip(*rows, strict=True)) if rows else [[], [], [], [], []]
    return pa.table(
        {
            "id": pa.array(columns[0], pa.int64()),
            "status": pa.array(columns[1], pa.string()),
            "total": pa.array(columns[2], pa.string()),
            "is_live": pa.array(columns[3], pa.bool_()),
            "changed_at": pa.array(columns[4], pa.timestamp("us", tz="UTC")),
        }
    )


def read_source_day(conn, day: dt.date) -> pa.Table:
    start, end = day_bounds(day)
    with conn.cursor() as cur:
        cur.execute(SOURCE_DAY_SQL, {"start": start, "end": end})
        return orders_table(cur.fetchall())


def compute(con, source: pa.Table, day: dt.date, cutoff: dt.datetime) -> Figures:
    """The warehouse side read through `con` (DuckDB or BigQuery), compared in memory."""
    import duckdb

    start, end = day_bounds(day)
    raw_sql = RAW_DAY_SQL.format(orders=relation(con, RAW_SCHEMA, "orders"))
    raw_day = orders_table(con.execute(raw_sql, [start, end]).fetchall())
    mart_sql = MART_DAY_SQL.format(mart=relation(con, "marts", "daily_revenue"))
    mart_orders, mart_revenue = con.execute(mart_sql, [day]).fetchone()
    with duckdb.connect() as local:
        local.register(SOURCE_VIEW, source)
        local.register(RAW_VIEW, raw_day)
        row = local.execute(RECONCILE_SQL, {"cutoff": cutoff}).fetchone()
    return Figures(
        int(row[0]),
        Decimal(row[1]),
        int(mart_orders),
        Decimal(mart_revenue),
        int(row[2]),
        Decimal(row[3]),
        int(row[4]),
        int(row[5]),
        row[6],
    )


def _money(value: Decimal) -> str:
    return f"{value.quantize(Decimal('0.01'))}"


def verdict(
    day: dt.date,
    watermark: Watermark,
    figures: Figures | None,
    *,
    margin_seconds: float,
    built_at: dt.datetime | None,
) -> Verdict:
    v = Verdict()
    if not watermark.known:
        missing = ", ".join(watermark.missing_tables) or "all tables"
        v.warn(f"no CDC watermark yet ({missing} not ingested): nothing to reconcile against")
        return v
    assert figures is not None
    stale = (
        built_at is not None
        and figures.raw_loaded_at is not None
        and figures.raw_loaded_at > built_at
    )
    v.ok_message = (
        f"{day}: {figures.expected_orders} completed orders, revenue "
        f"{_money(figures.expected_revenue)} in the source and the mart at watermark "
        f"{watermark.commit_ts:%Y-%m-%d %H:%M:%S} UTC ({figures.in_flux_keys} orders in flux "
        "left out)"
    )
    diffs = []
    if figures.actual_orders != figures.expected_orders:
        diffs.append(
            f"orders: source {figures.expected_orders}, mart {figures.actual_orders} "
            f"({figures.actual_orders - figures.expected_orders:+d})"
        )
    if figures.actual_revenue != figures.expected_revenue:
        diffs.append(
            f"revenue: source {_money(figures.expected_revenue)}, mart "
            f"{_money(figures.actual_revenue)} "
            f"({_money(figures.actual_revenue - figures.expected_revenue)})"
        )
    if diffs:
        text = f"{day} does not reconcile with the source at the CDC watermark: " + "; ".join(diffs)
        if stale:
            v.warn(
                f"{text}; raw changed this date after the partition was built "
                f"({built_at:%H:%M:%S} UTC): rebuild the partition"
            )
        else:
            v.error(text)
    v.metadata = {
        "watermark": watermark.commit_ts.isoformat(),
        "margin_seconds": margin_seconds,
        "source_orders": figures.expected_orders,
        "source_revenue": float(figures.expected_revenue),
        "mart_orders": figures.actual_orders,
        "mart_revenue": float(figures.actual_revenue),
        "orders_difference": figures.actual_orders - figures.expected_orders,
        "revenue_difference": float(figures.actual_revenue - figures.expected_revenue),
        "in_flux_orders": figures.in_flux_keys,
        "source_rows_of_day": figures.source_rows,
        "partition_built_at": built_at.isoformat() if built_at else None,
        "stale": stale,
    }
    return v
