"""Any subset of the daily marts, over a range of days, is one run that succeeds on good data: a
dbt test that compares two marts runs only when the run builds both. A real disagreement between
the marts still fails the run loudly, and a mart that failed its gate is not marked materialized
for those days (so a backfill's partition status agrees with its run). dbt's own error text
reaches the run page without terminal colour codes.

One module-scoped platform (10 days of history); the unpartitioned graph is built once, then
every run is a real dbt build of the selected marts against DuckDB.
"""

from __future__ import annotations

import datetime as dt
import itertools

import dagster as dg
import pytest
from graph_runs import run_graph

MARTS = ("daily_revenue", "daily_product_sales", "daily_customer_mix")
# Each mart alone (the runs that used to fail) and all three (the one that compares them).
SUBSETS = [*itertools.combinations(MARTS, 1), MARTS]
FIRST, LAST = "2026-03-05", "2026-03-06"
CROSS_MART = "assert_daily_customer_mix_adds_up_to_daily_revenue"
UPSTREAM = "not kind:postgres and not tag:daily"  # CDC and every unpartitioned model
ANSI_ESC = "\x1b["


def _selection(marts) -> str:
    return " or ".join(f'key:"marts/{m}"' for m in marts)


def _materialized_partitions(run) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for event in run.result.all_events:
        if event.event_type_value == "ASSET_MATERIALIZATION":
            mat = event.step_materialization_data.materialization
            out.setdefault(mat.asset_key.to_user_string(), set()).add(mat.partition)
    return out


def _partition_status(platform, mart: str, day: str):
    from analytics_assets.lib.partitions import daily_partitions

    key = dg.AssetKey(["marts", mart])
    return platform.instance.get_status_by_partition(key, [day], daily_partitions())[day]


@pytest.fixture(scope="module")
def upstream(platform):
    run = run_graph(platform.defs, platform.instance, UPSTREAM)
    assert run.success, run.step_failures()


@pytest.mark.parametrize("marts", SUBSETS, ids=["+".join(s) for s in SUBSETS])
def test_any_subset_of_the_daily_marts_over_a_range_is_one_successful_run(
    platform, upstream, marts
):
    run = run_graph(
        platform.defs, platform.instance, _selection(marts), partition_range=(FIRST, LAST)
    )
    assert run.success, run.step_failures()
    assert _materialized_partitions(run) == {f"marts/{m}": {FIRST, LAST} for m in marts}
    compared = {"daily_revenue", "daily_customer_mix"} <= set(marts)
    cross = run.evaluations(CROSS_MART)
    assert bool(cross) == compared
    assert all(e.passed for e in cross)


@pytest.fixture
def orphan_customer_order(platform, upstream):
    """One completed order of DAY in fct_orders loses its customer (an upstream bug): the mix
    mart counts a customer that daily_revenue, counting distinct customers, does not."""
    day = "2026-03-08"
    order_id, customer_id = platform.warehouse(
        "select order_id, customer_id from marts.fct_orders where is_completed and order_date = ? "
        "order by order_id limit 1",
        [day],
    )[0]
    _set_customer(platform, order_id, None)
    yield day
    _set_customer(platform, order_id, customer_id)


def _set_customer(platform, order_id: int, customer_id: int | None) -> None:
    # Rewritten by CTAS: the table's contract has customer_id NOT NULL, the bug ignores it.
    platform.warehouse(
        "create or replace table marts.fct_orders as select * replace (case when order_id = ? "
        "then ?::bigint else customer_id end as customer_id) from marts.fct_orders",
        [order_id, customer_id],
    )


def test_a_real_disagreement_between_marts_fails_and_marks_neither_materialized(
    platform, orphan_customer_order
):
    day = orphan_customer_order
    run = run_graph(platform.defs, platform.instance, "tag:daily", partition=day)
    assert not run.success
    assert f"marts/daily_customer_mix:{CROSS_MART}" in run.failed_checks()
    message = run.step_failures()["dbt_daily_marts"]
    assert f"marts/daily_customer_mix {CROSS_MART}: 1 failing row" in message
    # the two marts the failed test compares are built in the warehouse but not "done"
    assert _materialized_partitions(run) == {"marts/daily_product_sales": {day}}
    # what the UI's partition bar and a backfill read: failed, not green
    for mart in ("daily_revenue", "daily_customer_mix"):
        assert _partition_status(platform, mart, day) == dg.AssetPartitionStatus.FAILED, mart
    assert _partition_status(platform, "daily_product_sales", day) == (
        dg.AssetPartitionStatus.MATERIALIZED
    )


@pytest.fixture
def missing_fct_orders(platform, upstream):
    platform.warehouse("alter table marts.fct_orders rename to fct_orders_away")
    yield
    platform.warehouse("alter table marts.fct_orders_away rename to fct_orders")


def test_a_dbt_error_reaches_the_run_page_without_colour_codes(platform, missing_fct_orders):
    day = "2026-03-09"
    run = run_graph(platform.defs, platform.instance, "tag:daily", partition=day)
    assert not run.success
    message = run.step_failures()["dbt_daily_marts"]
    assert "Errors parsed from dbt logs" in message and "fct_orders" in message
    assert ANSI_ESC not in message
    # the marts that read fct_orders errored; daily_product_sales does not read it
    assert _materialized_partitions(run) == {"marts/daily_product_sales": {day}}


def test_a_late_payment_on_a_closed_day_is_logged_as_a_restatement(platform, upstream):
    """The day is built, then an order of it is paid late: the late-data sensor re-runs the day,
    and the rebuild records previous and new figures, the cause, on the log and on the run's
    materializations; the daily summary names the restated day."""
    from analytics_assets.defs.automation.sensors import late_data_sensor
    from analytics_assets.defs.dbt.restatements import read_restatements
    from analytics_assets.defs.notify.summary import read_daily_revenue, summary_message

    day = "2026-03-04"
    assert run_graph(platform.defs, platform.instance, "tag:daily", partition=day).success
    before = platform.daily_revenue(day)

    def tick(cursor=None):
        context = dg.build_sensor_context(
            instance=platform.instance, cursor=cursor, definitions=platform.defs
        )
        return late_data_sensor.evaluate_tick(context)

    watching = tick()
    ((order_id, total),) = platform.source(
        "update orders set status = 'completed', paid_at = now(), updated_at = now() "
        "where id = (select min(id) from orders where status = 'pending' "
        "and (created_at at time zone 'UTC')::date = %s) returning id, total",
        (day,),
    )
    assert run_graph(platform.defs, platform.instance, UPSTREAM).success  # ingest + fct_orders
    (request,) = tick(watching.cursor).run_requests
    assert request.tags["dagster/asset_partition_range_start"] == day
    rerun = run_graph(
        platform.defs,
        platform.instance,
        " or ".join(f'key:"{k.to_user_string()}"' for k in request.asset_selection),
        partition_range=(day, day),
    )
    assert rerun.success, rerun.step_failures()

    after = platform.daily_revenue(day)
    assert after[0] == before[0] + 1 and after[2] == before[2] + total
    logged = {
        (r.mart, r.measure): r
        for r in read_restatements(platform.settings)
        if r.date.isoformat() == day
    }
    revenue = logged[("daily_revenue", "total_revenue")]
    assert (revenue.previous, revenue.new) == (before[2], after[2])
    assert revenue.caused_by == "orders updated 1"
    assert (
        logged[("daily_revenue", "order_count")].previous,
        logged[("daily_revenue", "order_count")].new,
    ) == (before[0], after[0])
    # on the asset page: the mart's materialization of that run carries what it restated
    (metadata,) = [
        e.step_materialization_data.materialization.metadata
        for e in rerun.result.all_events
        if e.event_type_value == "ASSET_MATERIALIZATION"
        and e.step_materialization_data.materialization.asset_key.to_user_string()
        == "marts/daily_revenue"
    ]
    assert metadata["restated_days"].value == 1
    assert f"| {day} | daily_revenue | total_revenue | {before[2]} | {after[2]} |" in (
        metadata["restatements"].value
    )
    text, fields = summary_message(
        *read_daily_revenue(platform.settings, dt.date(2026, 3, 9)),
        read_restatements(platform.settings),
    )
    assert f"Restated: {day} revenue {before[2]:,.2f} -> {after[2]:,.2f} (orders updated 1)" in text
    assert [d["date"] for d in fields["restated_days"]] == [day]
