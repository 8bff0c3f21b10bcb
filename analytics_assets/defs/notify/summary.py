"""The daily revenue summary: one day's revenue, orders and customers against the day before,
read from the warehouse mart `marts.daily_revenue`."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

DAILY_REVENUE_TABLE = "marts.daily_revenue"


class WarehouseBusy(RuntimeError):
    """The DuckDB file is locked by a writer (a run): try again on a later tick."""


class WarehouseNotReady(RuntimeError):
    """The warehouse file or the mart does not exist yet."""


@dataclass(frozen=True)
class DayRevenue:
    date: dt.date
    revenue: Decimal
    orders: int
    customers: int

    @classmethod
    def empty(cls, date: dt.date) -> DayRevenue:
        """A date with no completed order has no row in the mart: it is a day of zeros."""
        return cls(date=date, revenue=Decimal("0.00"), orders=0, customers=0)


def read_daily_revenue(warehouse_path: Path, day: dt.date) -> tuple[DayRevenue, DayRevenue]:
    """`day` and the day before from the DuckDB mart.

    DuckDB lets one process write a file and nobody else open it meanwhile, so the file is opened
    read-only for the length of one query; a held lock becomes WarehouseBusy, not an error.
    """
    import duckdb

    if not warehouse_path.exists():
        raise WarehouseNotReady(f"warehouse {warehouse_path} does not exist yet")
    previous = day - dt.timedelta(days=1)
    try:
        conn = duckdb.connect(str(warehouse_path), read_only=True)
    except duckdb.IOException as exc:
        if "lock" in str(exc).lower():
            raise WarehouseBusy(f"warehouse is locked by a writer: {exc}") from None
        raise
    except duckdb.ConnectionException as exc:
        # This process already holds the file open read-write (e.g. a run in the same process).
        raise WarehouseBusy(f"warehouse is open for writing in this process: {exc}") from None
    try:
        rows = conn.execute(
            "select revenue_date, total_revenue, order_count, unique_customers "
            "from marts.daily_revenue where revenue_date between ? and ?",
            [previous, day],
        ).fetchall()
    except duckdb.CatalogException as exc:
        raise WarehouseNotReady(f"{DAILY_REVENUE_TABLE} is not built yet: {exc}") from None
    finally:
        conn.close()
    found = {
        r[0]: DayRevenue(date=r[0], revenue=Decimal(r[1]), orders=int(r[2]), customers=int(r[3]))
        for r in rows
    }
    return found.get(day, DayRevenue.empty(day)), found.get(previous, DayRevenue.empty(previous))


def _change(now: Decimal | int, before: Decimal | int) -> str:
    if before == 0:
        return "new" if now else "no change"
    pct = (Decimal(now) - Decimal(before)) * 100 / Decimal(before)
    return f"{pct:+.1f}%"


def summary_message(today: DayRevenue, previous: DayRevenue) -> tuple[str, dict[str, Any]]:
    """The Slack text and the structured fields of one day's summary."""
    text = (
        f":bar_chart: Daily revenue {today.date.isoformat()}: "
        f"revenue {today.revenue:,.2f} ({_change(today.revenue, previous.revenue)}), "
        f"{today.orders:,} orders ({_change(today.orders, previous.orders)}), "
        f"{today.customers:,} unique customers ({_change(today.customers, previous.customers)}) "
        f"vs {previous.date.isoformat()}"
    )
    fields = {
        "date": today.date.isoformat(),
        "revenue": str(today.revenue),
        "orders": today.orders,
        "unique_customers": today.customers,
        "previous_date": previous.date.isoformat(),
        "previous_revenue": str(previous.revenue),
        "previous_orders": previous.orders,
        "previous_unique_customers": previous.customers,
        "revenue_change": _change(today.revenue, previous.revenue),
        "orders_change": _change(today.orders, previous.orders),
        "unique_customers_change": _change(today.customers, previous.customers),
    }
    return text, fields
