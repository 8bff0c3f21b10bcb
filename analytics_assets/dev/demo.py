"""`make demo`: the whole platform on the embedded stack, end to end, in one command.

It drives Dagster through the same `dagster asset materialize` commands the README shows, against
the real instance (Postgres storage), so every run it makes is in the UI afterwards.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time

from analytics_assets.lib.partitions import business_date
from analytics_assets.settings import get_settings

MODULE = "analytics_assets.definitions"
RAW = "group:raw"
MODELS = "not tag:daily and not group:raw"
DAILY = "tag:daily"


def _say(message: str) -> None:
    print(f"[demo] {message}", flush=True)


def partition_range(partitions: int, today: dt.date | None = None) -> tuple[str, str]:
    """The last `partitions` complete days, as the first and last partition keys."""
    today = today or business_date(dt.datetime.now(dt.UTC))
    first = today - dt.timedelta(days=partitions)
    last = today - dt.timedelta(days=1)
    return first.isoformat(), last.isoformat()


def materialize(select: str, *extra: str) -> None:
    cmd = [
        os.path.join(os.path.dirname(sys.executable), "dagster"),
        "asset",
        "materialize",
        "-m",
        MODULE,
        "--select",
        select,
        *extra,
    ]
    started = time.monotonic()
    _say(" ".join(["dagster", *cmd[1:]]))
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"[demo] run failed ({select}):\n{_failure(proc)}")
    _say(f"  done in {time.monotonic() - started:.1f}s")


def _failure(proc: subprocess.CompletedProcess) -> str:
    """The failed run's summary (which step, which checks and why), else the output's tail."""
    from dagster import DagsterInstance

    from analytics_assets.run_report import summary_lines

    with DagsterInstance.get() as instance:
        runs = instance.get_runs(limit=1)
        if runs and runs[0].is_failure:
            return "\n".join(f"  {line}" for line in summary_lines(instance, runs[0].run_id))
    return "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-25:])


def run_demo(days: int = 30, partitions: int = 7, seed: int = 42) -> int:
    from dagster import DagsterInstance

    from analytics_assets.dev import stack, traffic
    from analytics_assets.lib.pg import connect

    t0 = time.monotonic()
    info = stack.up()
    os.environ.update(info.env())
    get_settings.cache_clear()
    applied = stack.ready(info)
    if applied:
        _say(f"source schema migrations applied: {applied}")

    conn = connect(info.source_url)
    with conn.cursor() as cur:
        cur.execute("select count(*) from orders")
        existing = cur.fetchone()[0]
    if existing == 0:
        _say(f"loading {days} days of history into the source app DB")
        result = traffic.generate_history(conn, days=days, seed=seed)
        _say(f"  {result.orders} orders, {result.users} users, {result.order_items} items")
    else:
        _say(f"source already has {existing} orders: no history loaded (incremental run)")
    conn.close()

    first, last = partition_range(partitions)
    _say(
        f"business days in PARTITION_TIMEZONE={get_settings().partitions.timezone}: {first}..{last}"
    )
    instance = DagsterInstance.get()
    before = _materialized_daily(instance)
    models_built = _has_materialization(instance, ["marts", "fct_orders"])
    _say("ingesting changes from the source (CDC)")
    materialize(RAW)
    changes = _latest_changes(instance)
    _say(f"  {changes} changes applied to the raw tables")
    if changes or not models_built:
        _say("building the unpartitioned dbt models")
        materialize(MODELS)
    else:
        _say("no new changes: unpartitioned models are up to date (incremental)")
    wanted = _partition_keys(first, last)
    touched = _touched_dates(instance) & set(wanted)
    todo = sorted((set(wanted) - before) | touched)
    if todo:
        why = "new" if not (before & set(wanted)) else f"{len(todo)} new or touched by changes"
        _say(f"building daily marts for {todo[0]}..{todo[-1]} ({why})")
        materialize(DAILY, "--partition-range", f"{todo[0]}...{todo[-1]}")
    else:
        _say(f"daily marts {first}..{last} are up to date: nothing to rebuild (incremental)")
    _summary(instance, first, last, t0)
    return 0


def _partition_keys(first: str, last: str) -> list[str]:
    start, end = dt.date.fromisoformat(first), dt.date.fromisoformat(last)
    return [(start + dt.timedelta(days=i)).isoformat() for i in range((end - start).days + 1)]


def _materialized_daily(instance) -> set[str]:
    from dagster import AssetKey

    return set(instance.get_materialized_partitions(AssetKey(["marts", "daily_revenue"])))


def _has_materialization(instance, key: list[str]) -> bool:
    from dagster import AssetKey

    return instance.get_latest_materialization_event(AssetKey(key)) is not None


def _latest_changes(instance) -> int:
    """Changes the latest ingest applied, summed over the raw tables (from their metadata)."""
    from dagster import AssetKey

    total = 0
    for table in get_settings().source.tables:
        event = instance.get_latest_materialization_event(AssetKey(["raw", table]))
        if event is not None and event.asset_materialization is not None:
            meta = event.asset_materialization.metadata.get("changes")
            total += int(meta.value) if meta is not None else 0
    return total


def _touched_dates(instance) -> set[str]:
    """Business dates the latest ingest touched (recorded by the raw assets as metadata)."""
    from dagster import AssetKey

    dates: set[str] = set()
    for table in ("orders", "order_items"):
        event = instance.get_latest_materialization_event(AssetKey(["raw", table]))
        if event is None or event.asset_materialization is None:
            continue
        meta = event.asset_materialization.metadata.get("business_dates")
        if meta is not None:
            dates |= set(meta.value or [])
    return dates


def _summary(instance, first: str, last: str, t0: float) -> None:
    import duckdb
    from dagster import RunsFilter

    settings = get_settings()
    con = duckdb.connect(str(settings.warehouse.path), read_only=True)
    rows = con.execute(
        "select revenue_date, order_count, unique_customers, total_revenue, avg_order_value "
        "from marts.daily_revenue where revenue_date between ? and ? order by revenue_date",
        [first, last],
    ).fetchall()
    con.close()
    print("\n daily_revenue")
    print(f" {'date':<12}{'orders':>8}{'customers':>11}{'revenue':>13}{'avg':>9}")
    for d, n, c, rev, avg in rows:
        print(f" {d!s:<12}{n:>8}{c:>11}{rev:>13,.2f}{avg:>9.2f}")
    from analytics_assets.run_report import run_report

    runs = instance.get_runs(
        RunsFilter(
            created_after=dt.datetime.fromtimestamp(
                time.time() - (time.monotonic() - t0), tz=dt.UTC
            )
        )
    )
    report = run_report(instance, [run.run_id for run in runs])
    if report.checks:
        print()
        for line in report.check_lines():
            print(f" {line}")
    else:
        print("\n checks: none ran (nothing was rebuilt)")
    print(f" warehouse: {settings.warehouse.path}")
    print(f" read copy: {settings.warehouse.read_path} (open this one while the platform runs)")
    print(" Dagster UI: `make dev` (instance storage in the embedded Postgres)")
    print(f" took {time.monotonic() - t0:.1f}s\n")
