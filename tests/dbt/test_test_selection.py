"""Which dbt tests a run leaves out, and which models a failed `dbt build` may not call
materialized: rule by rule, on the project's real manifest (no dbt run)."""

from __future__ import annotations

import json

import pytest

from analytics_assets.defs.dbt.selection import (
    exclude_args,
    left_out_tests,
    withheld_models,
)

CROSS_MART = "assert_daily_customer_mix_adds_up_to_daily_revenue"
REVENUE_VS_ORDERS = "assert_daily_revenue_matches_completed_orders"
PRODUCT_RELATIONSHIP = (
    "relationships_daily_product_sales_product_id__product_id__ref_stg_app__products_"
)
MARTS = ("daily_revenue", "daily_product_sales", "daily_customer_mix")


@pytest.fixture(scope="module")
def manifest():
    from analytics_assets.defs.dbt.project import get_dbt_project

    return json.loads(get_dbt_project().manifest_path.read_text())


def _ids(manifest, *names):
    by_name = {
        n["name"]: uid for uid, n in manifest["nodes"].items() if n["resource_type"] == "model"
    }
    return {by_name[name] for name in names}


def _left_out(manifest, *names):
    return {t.name: t.unbuilt for t in left_out_tests(manifest, _ids(manifest, *names))}


def test_one_mart_alone_leaves_out_the_test_that_compares_it_with_another_mart(manifest):
    assert _left_out(manifest, "daily_revenue") == {CROSS_MART: ("daily_customer_mix",)}
    assert _left_out(manifest, "daily_customer_mix") == {CROSS_MART: ("daily_revenue",)}
    assert _left_out(manifest, "daily_product_sales") == {}


def test_marts_built_together_keep_every_test_including_against_upstream_models(manifest):
    assert _left_out(manifest, *MARTS) == {}
    assert _left_out(manifest, "daily_revenue", "daily_customer_mix") == {}


def test_unpartitioned_models_leave_out_the_tests_that_read_a_daily_mart(manifest):
    upstream = [
        n["name"]
        for n in manifest["nodes"].values()
        if n["resource_type"] == "model" and "daily" not in n["tags"]
    ]
    left_out = _left_out(manifest, *upstream)
    assert left_out[REVENUE_VS_ORDERS] == ("daily_revenue",)
    assert left_out[PRODUCT_RELATIONSHIP] == ("daily_product_sales",)
    assert CROSS_MART not in left_out  # reads no model that run builds: dbt never selects it


def test_exclusion_names_each_test_by_its_fqn(manifest):
    left_out = left_out_tests(manifest, _ids(manifest, "daily_revenue"))
    assert exclude_args(left_out) == ["--exclude", f"analytics.{CROSS_MART}"]
    assert exclude_args([]) == []


def test_a_failed_error_test_withholds_every_model_it_reads(manifest):
    cross = next(uid for uid, n in manifest["nodes"].items() if n["name"] == CROSS_MART)
    revenue, mix = (next(iter(_ids(manifest, name))) for name in MARTS[::2])
    results = {
        "results": [
            {"unique_id": next(iter(_ids(manifest, "daily_product_sales"))), "status": "success"},
            {"unique_id": revenue, "status": "success"},
            {"unique_id": mix, "status": "success"},
            {"unique_id": cross, "status": "fail"},
        ]
    }
    assert withheld_models(manifest, results) == {revenue: CROSS_MART, mix: CROSS_MART}
    passed = {"results": [*results["results"][:3], {"unique_id": cross, "status": "pass"}]}
    assert withheld_models(manifest, passed) == {}
    warned = {"results": [*results["results"][:3], {"unique_id": cross, "status": "warn"}]}
    assert withheld_models(manifest, warned) == {}


def _models(manifest):
    return {uid for uid, n in manifest["nodes"].items() if n["resource_type"] == "model"}


def test_a_run_of_some_unpartitioned_models_leaves_out_tests_that_read_one_it_does_not_build(
    manifest,
):
    built = _ids(manifest, "stg_app__order_items")
    left_out = {t.name: t.unbuilt for t in left_out_tests(manifest, built, _models(manifest))}
    relationship = (
        "relationships_stg_app__order_items_product_id__product_id__ref_stg_app__products_"
    )
    assert left_out == {relationship: ("stg_app__products",)}


def test_the_fast_path_runs_every_data_test_of_its_models_and_none_that_reads_another(manifest):
    """What dbt's eager selection would run for revenue_minutely and stg_app__orders, minus what
    the run leaves out: only tests whose models are all built in the run (sources are ingested
    by the same run)."""
    built = _ids(manifest, "revenue_minutely", "stg_app__orders")
    left_out = {t.name for t in left_out_tests(manifest, built, _models(manifest))}
    run = {
        n["name"]: set(n["depends_on"]["nodes"])
        for n in manifest["nodes"].values()
        if n["resource_type"] == "test"
        and set(n["depends_on"]["nodes"]) & built
        and n["name"] not in left_out
    }
    assert all({p for p in parents if p.startswith("model.")} <= built for parents in run.values())
    assert "unique_revenue_minutely_revenue_minute" in run
    assert "relationships_stg_app__orders_user_id__id__source_app_users_" in run
    assert len(run) == 16
