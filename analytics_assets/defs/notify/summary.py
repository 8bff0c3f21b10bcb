"""The daily revenue summary: one day's revenue, orders and customers against the day before,
read from the mart `marts/daily_revenue` (DuckDB `marts.daily_revenue` in dev, BigQuery
`<BIGQUERY_DATASET>_marts.daily_revenue` in prod) through the warehouse reader the checks use."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from analytics_assets.defs.dbt.restatements import Restatement
from analytics_assets.lib.errors import WarehouseBusy
from analytics_assets.lib.warehouse.reader import (
    WarehouseNotReady,
    connect,
    relation,
    relation_exists,
)
from analytics_assets.settings import Settings, get_settings

__all__ = ["DayRevenue", "WarehouseBusy", "WarehouseNotReady", "read_daily_revenue"]

DAILY_REVENUE_TABLE = "marts.daily_revenue"
CENT = Decimal("0.01")

DAY_SQL = """
select revenue_date, cast(total_revenue as string), order_count, unique_customers
from {mart}
where revenue_date between ? and ?
"""


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


def read_daily_revenue(warehouse: Settings | Path, day: dt.date) -> tuple[DayRevenue, DayRevenue]:
    """`day` and the day before from the mart of `warehouse`'s environment.

    A DuckDB file is opened read-only for one query and not waited for: a writer holding it (a
    run) is WarehouseBusy for the sensor's next tick, not an error. In prod the mart is read from
    BigQuery. A Path stands for a dev DuckDB file (the tests pass one).
    """
    if not isinstance(warehouse, Settings):
        warehouse = dataclasses.replace(
            get_settings(),
            env="dev",
            warehouse=dataclasses.replace(get_settings().warehouse, path=Path(warehouse)),
        )
    previous = day - dt.timedelta(days=1)
    with connect(warehouse, wait_seconds=0, read_only=True) as con:
        if not relation_exists(con, "marts", "daily_revenue"):
            raise WarehouseNotReady(f"{DAILY_REVENUE_TABLE} is not built yet")
        sql = DAY_SQL.format(mart=relation(con, "marts", "daily_revenue"))
        rows = con.execute(sql, [previous, day]).fetchall()
    # In cents whatever scale the warehouse writes a NUMERIC with (BigQuery's CAST drops trailing
    # zeros, "14.7"; DuckDB's decimal(18, 2) keeps them), so both post the same figure.
    found = {
        r[0]: DayRevenue(
            date=r[0], revenue=Decimal(r[1]).quantize(CENT), orders=int(r[2]), customers=int(r[3])
        )
        for r in rows
    }
    return found.get(day, DayRevenue.empty(day)), found.get(previous, DayRevenue.empty(previous))


def _change(now: Decimal | int, before: Decimal | int) -> str:
    if before == 0:
        return "new" if now else "no change"
    pct = (Decimal(now) - Decimal(before)) * 100 / Decimal(before)
    return f"{pct:+.1f}%"


def restated_revenue(restated: Sequence[Restatement]) -> list[Restatement]:
    """The revenue of each closed day that later builds changed: from the first previous figure
    to the newest one (a day restated twice since the last summary shows both ends)."""
    days: dict[dt.date, list[Restatement]] = {}
    for r in restated:
        if r.mart == "daily_revenue" and r.measure == "total_revenue":
            days.setdefault(r.date, []).append(r)
    out = []
    for day in sorted(days):
        ordered = sorted(days[day], key=lambda r: r.restated_at)
        out.append(dataclasses.replace(ordered[-1], previous=ordered[0].previous))
    return out


def summary_message(
    today: DayRevenue, previous: DayRevenue, restated: Sequence[Restatement] = ()
) -> tuple[str, dict[str, Any]]:
    """The Slack text and the structured fields of one day's summary; `restated` (the restatement
    log's rows since the last summary) adds the closed days whose revenue changed."""
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
    days = restated_revenue(restated)
    if days:
        text += "\n:memo: Restated: " + "; ".join(
            f"{r.date.isoformat()} revenue {r.previous:,.2f} -> {r.new:,.2f} ({r.caused_by})"
            for r in days
        )
    fields["restated_days"] = [
        {"date": r.date.isoformat(), "previous_revenue": str(r.previous), "revenue": str(r.new),
         "caused_by": r.caused_by}
        for r in days
    ]  # fmt: skip
    return text, fields
