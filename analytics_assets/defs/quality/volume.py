"""Volume anomaly: a day's completed-order count and revenue against the median of the 7 days
before it, from `marts/daily_revenue`. Beyond the configured band it is a WARN, never an ERROR:
a sale or an outage moves volume for real, and a person should look before anything stops.

A day of the window counts only if its partition was built: a built date without a row had no
completed order (zero), an unbuilt one is unknown and left out.

A day is judged only once it has settled: orders complete hours to days after they are placed, so
a day that ended yesterday holds a fraction of the completed orders it will hold, and comparing it
with full days would warn every morning. "Settled" is the partition-close rule (the CDC watermark
past the day's end plus PARTITION_GRACE_MINUTES) with QUALITY_VOLUME_SETTLE_DAYS more grace.
"""

from __future__ import annotations

import datetime as dt
import statistics
from collections.abc import Collection, Mapping
from decimal import Decimal

from analytics_assets.defs.quality.verdict import Verdict
from analytics_assets.defs.quality.warehouse import relation

WINDOW_DAYS = 7
# Fewer built days than this in the window: a median of one or two days says nothing, no verdict.
MIN_DAYS = 3

MART_WINDOW_SQL = """
select revenue_date, order_count, total_revenue
from {mart}
where revenue_date >= ? and revenue_date <= ?
"""


def read_window(con, day: dt.date) -> dict[dt.date, tuple[int, Decimal]]:
    sql = MART_WINDOW_SQL.format(mart=relation(con, "marts", "daily_revenue"))
    rows = con.execute(sql, [day - dt.timedelta(days=WINDOW_DAYS), day]).fetchall()
    return {r[0]: (int(r[1]), Decimal(r[2])) for r in rows}


def _deviation(value: float, median: float) -> float | None:
    if median == 0:
        return None if value == 0 else float("inf")
    return (value - median) / median


def settled(
    day: dt.date,
    watermark: dt.datetime | None,
    *,
    grace_minutes: int,
    settle_days: float,
    timezone: str,
) -> tuple[bool, str]:
    """Whether `day` is old enough to judge, and why: the partition-close rule with the settle
    period added to its grace."""
    from analytics_assets.defs.automation.logic import partition_closed

    closed, why = partition_closed(
        day.isoformat(),
        watermark,
        grace_minutes=grace_minutes + round(settle_days * 24 * 60),
        timezone=timezone,
    )
    if closed:
        return True, why
    return False, (
        f"{day}: not settled, no verdict (orders keep completing for "
        f"QUALITY_VOLUME_SETTLE_DAYS={settle_days:g} days after a day closes; {why})"
    )


def verdict(
    day: dt.date,
    rows: Mapping[dt.date, tuple[int, Decimal]],
    built: Collection[dt.date],
    *,
    band: float,
    min_days: int,
    unsettled: str | None = None,
) -> Verdict:
    """`unsettled`: why the day is too young to judge (see `settled`); no verdict then."""
    v = Verdict()
    history = [
        day - dt.timedelta(days=i)
        for i in range(WINDOW_DAYS, 0, -1)
        if (day - dt.timedelta(days=i)) in built or (day - dt.timedelta(days=i)) in rows
    ]
    today = rows.get(day, (0, Decimal(0)))
    v.metadata = {
        "order_count": today[0],
        "revenue": float(today[1]),
        "history_days": len(history),
        "band": band,
    }
    if unsettled is not None:
        v.ok_message = unsettled
        return v
    if len(history) < min_days:
        v.ok_message = (
            f"{day}: only {len(history)} of the {WINDOW_DAYS} days before are built "
            f"(need {min_days}): no verdict"
        )
        return v
    past = [rows.get(d, (0, Decimal(0))) for d in history]
    findings = []
    for label, value, median in (
        ("order count", float(today[0]), float(statistics.median(p[0] for p in past))),
        ("revenue", float(today[1]), float(statistics.median(float(p[1]) for p in past))),
    ):
        deviation = _deviation(value, median)
        key = label.replace(" ", "_")
        v.metadata[f"{key}_median_7d"] = round(median, 2)
        if deviation is not None and deviation != float("inf"):
            v.metadata[f"{key}_deviation"] = round(deviation, 4)
        if deviation is not None and abs(deviation) > band:
            how = "above" if value > median else "below"
            pct = "n/a" if deviation == float("inf") else f"{abs(deviation):.0%}"
            findings.append(
                f"{label} {value:,.2f} is {pct} {how} the 7-day median {median:,.2f} "
                f"(band ±{band:.0%})"
            )
    for text in findings:
        v.warn(f"{day}: {text}")
    v.ok_message = f"{day}: order count and revenue within ±{band:.0%} of the 7-day median"
    return v
