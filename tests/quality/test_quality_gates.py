"""Blocking semantics end to end: bad data written into the embedded source (and a duplicate key
forced into raw) fails the ERROR dbt tests, the marts are not updated, every failed check carries
its (masked) failing rows, the run says which checks failed and why; after the fix, good data
flows again. WARN checks never block.

One module-scoped platform and three runs (baseline, bad, fixed), each over the whole graph for
one daily partition: CDC -> dbt_models (staging..fct_orders) -> dbt_daily_marts, with all checks.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from graph_runs import run_graph
from quality_platform import DAY

EVERYTHING = "not kind:postgres"  # all materializable assets (app_db/* are observed, not built)
BAD_TOTAL = Decimal("-5.00")
MISSING_USER = 987_654
MISSING_ORDER = 987_655
BAD_EMAIL = "dora.at.example.com"
FIXED_TOTALS = (Decimal("12.50"), Decimal("7.25"))

STG_ORDERS = "staging/stg_app__orders"
STG_USERS = "staging/stg_app__users"
STG_ITEMS = "staging/stg_app__order_items"
TOTAL_RANGE = "accepted_range_stg_app__orders_total__0"
USER_EXISTS = "relationships_stg_app__orders_user_id__id__source_app_users_"
ITEM_ORDER_EXISTS = "relationships_stg_app__order_items_order_id__id__source_app_orders_"
ORDER_UNIQUE = "unique_stg_app__orders_order_id"
EMAIL_PATTERN = "matches_pattern_stg_app__users_email___s_s_s_"


def _meta(evaluation, key):
    value = evaluation.metadata[key]
    return getattr(value, "value", value)


@pytest.fixture(scope="module")
def baseline(platform):
    run = run_graph(platform.defs, platform.instance, EVERYTHING, partition=DAY)
    assert run.success, run.step_failures()
    return run, platform.daily_revenue()


@pytest.fixture(scope="module")
def bad_run(platform, baseline):
    """A negative total and an order of a user who does not exist (both completed, on DAY), a
    user with a malformed email, a copy of an existing raw order (duplicate key) and an order
    line of an order that never existed (a real orphan: WARN)."""
    ids = platform.source(
        "insert into orders (user_id, total, status, created_at, paid_at) values "
        "((select min(id) from users), %s, 'completed', %s, %s), "
        "(%s, %s, 'completed', %s, %s) returning id",
        (
            BAD_TOTAL,
            f"{DAY} 10:00+00",
            f"{DAY} 10:01+00",
            MISSING_USER,
            FIXED_TOTALS[1],
            f"{DAY} 11:00+00",
            f"{DAY} 11:01+00",
        ),
    )
    user = platform.source(
        "insert into users (email, full_name, country) values (%s, 'Dora Explorer', 'ES') "
        "returning id",
        (BAD_EMAIL,),
    )[0][0]
    platform.source(
        "insert into order_items (order_id, product_id, quantity, unit_price) "
        "values (%s, (select min(id) from products), 1, 1.00)",
        (MISSING_ORDER,),
    )
    duplicate = platform.warehouse("select min(id) from raw.orders")[0][0]
    platform.warehouse("insert into raw.orders select * from raw.orders where id = ?", [duplicate])
    run = run_graph(platform.defs, platform.instance, EVERYTHING, partition=DAY)
    return run, {"orders": [r[0] for r in ids], "user": user, "duplicate": duplicate}


@pytest.fixture(scope="module")
def fixed_run(platform, bad_run):
    """Fix the source and raw; add a WARN-only problem (a new source column) on the way."""
    _, bad = bad_run
    negative, orphan = bad["orders"]
    platform.source(
        "update orders set total = %s, updated_at = now() where id = %s",
        (FIXED_TOTALS[0], negative),
    )
    platform.source(
        "insert into users (id, email, full_name, country) values (%s, 'zed@example.com', "
        "'Zed', 'DE')",
        (MISSING_USER,),
    )
    platform.source(
        "update users set email = 'dora@example.com', updated_at = now() where id = %s",
        (bad["user"],),
    )
    platform.warehouse(
        "delete from raw.orders where rowid = (select max(rowid) from raw.orders where id = ?)",
        [bad["duplicate"]],
    )
    platform.source("alter table products add column if not exists color text")
    try:
        run = run_graph(platform.defs, platform.instance, EVERYTHING, partition=DAY)
    finally:
        platform.source("alter table products drop column if exists color")
    return run


# -- the bad run -----------------------------------------------------------------------------------


def test_bad_data_fails_the_error_tests_and_no_mart_is_updated(platform, baseline, bad_run):
    _, before = baseline
    run, bad = bad_run
    assert not run.success
    failed = run.failed_checks()
    for check in (TOTAL_RANGE, USER_EXISTS, ORDER_UNIQUE):
        assert f"{STG_ORDERS}:{check}" in failed
    assert f"{STG_USERS}:{EMAIL_PATTERN}" in failed
    # dbt skipped every model downstream of the failed tests; Dagster skipped the daily marts op
    assert "marts/fct_orders" not in run.materialized()
    assert "marts/daily_revenue" not in run.materialized()
    assert "dbt_daily_marts" not in run.started_steps()
    assert platform.daily_revenue() == before
    in_fct = platform.warehouse(
        "select count(*) from marts.fct_orders where order_id in (?, ?)", bad["orders"]
    )
    assert in_fct == [(0,)]


def test_the_run_says_which_checks_failed_and_why(bad_run):
    run, _ = bad_run
    message = run.step_failures()["dbt_models"]
    assert "blocking dbt tests failed" in message
    assert f"{STG_ORDERS} {TOTAL_RANGE}: 1 failing row" in message
    assert "value_to_check=-5.00" in message
    assert f"{STG_ORDERS} {USER_EXISTS}" in message
    assert f"{STG_USERS} {EMAIL_PATTERN}" in message


def test_negative_total_check_carries_the_failing_row(bad_run):
    run, _ = bad_run
    evaluation = run.evaluation(TOTAL_RANGE, STG_ORDERS)
    assert not evaluation.passed and evaluation.severity.value == "ERROR"
    assert _meta(evaluation, "failing_rows") == 1
    assert _meta(evaluation, "failing_rows_sample") == [{"value_to_check": "-5.00"}]
    assert _meta(evaluation, "audit_table").startswith("dbt_test__audit.")


def test_order_of_a_missing_user_fails_the_relationship_with_evidence(bad_run):
    run, _ = bad_run
    evaluation = run.evaluation(USER_EXISTS, STG_ORDERS)
    assert not evaluation.passed and evaluation.severity.value == "ERROR"
    assert _meta(evaluation, "failing_rows") == 1
    assert str(MISSING_USER) in str(_meta(evaluation, "failing_rows_sample"))


def test_duplicate_key_forced_into_raw_fails_uniqueness(bad_run):
    run, bad = bad_run
    evaluation = run.evaluation(ORDER_UNIQUE, STG_ORDERS)
    assert not evaluation.passed
    sample = _meta(evaluation, "failing_rows_sample")
    assert sample == [{"unique_field": bad["duplicate"], "n_records": 2}]


def test_malformed_email_evidence_is_masked(bad_run):
    run, _ = bad_run
    evaluation = run.evaluation(EMAIL_PATTERN, STG_USERS)
    assert not evaluation.passed and evaluation.severity.value == "ERROR"
    sample = _meta(evaluation, "failing_rows_sample")
    assert sample == [{"failing_value": "d***"}]
    assert BAD_EMAIL not in str(evaluation.metadata) and BAD_EMAIL not in evaluation.description


def test_warn_severity_test_failure_carries_evidence_too(bad_run):
    run, _ = bad_run
    evaluation = run.evaluation(ITEM_ORDER_EXISTS, STG_ITEMS)
    assert not evaluation.passed and evaluation.severity.value == "WARN"
    assert _meta(evaluation, "failing_rows") == 1
    assert str(MISSING_ORDER) in str(_meta(evaluation, "failing_rows_sample"))


# -- after the fix ---------------------------------------------------------------------------------


def test_good_data_flows_again_after_the_fix(platform, baseline, fixed_run):
    _, before = baseline
    run = fixed_run
    assert run.success, run.step_failures()
    assert {"marts/fct_orders", "marts/daily_revenue"} <= run.materialized()
    after = platform.daily_revenue()
    assert after[0] == before[0] + 2
    assert after[2] == before[2] + sum(FIXED_TOTALS)
    assert not {c for c in run.failed_checks() if c.startswith(STG_ORDERS + ":")}
    assert run.evaluation("source_reconciliation", "marts/daily_revenue").passed


def test_warn_checks_never_block(fixed_run):
    run = fixed_run
    drift = run.evaluation("schema_drift", "raw/products")
    assert not drift.passed and drift.severity.value == "WARN"
    assert "products.color" in drift.description
    assert run.success and "marts/daily_revenue" in run.materialized()


def test_a_dbt_test_runs_alone_without_building_its_model(platform, fixed_run):
    duplicate = platform.warehouse("select max(id) from raw.orders")[0][0]
    platform.warehouse("insert into raw.orders select * from raw.orders where id = ?", [duplicate])
    try:
        run = run_graph(
            platform.defs, platform.instance, "", checks_only=f"{STG_ORDERS}:{ORDER_UNIQUE}"
        )
    finally:
        platform.warehouse(
            "delete from raw.orders where rowid = (select max(rowid) from raw.orders where id = ?)",
            [duplicate],
        )
    evaluation = run.evaluation(ORDER_UNIQUE, STG_ORDERS)
    assert not evaluation.passed and _meta(evaluation, "failing_rows") == 1
    assert run.materialized() == set()
    assert "1 blocking dbt test failed" in run.step_failures()["dbt_models"]
