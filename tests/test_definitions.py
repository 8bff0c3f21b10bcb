"""The code location loads, and its asset graph is a reviewed snapshot.

A change to the graph (a new model, a moved group, a lost dependency) fails this test until the
snapshot is regenerated with `UPDATE_SNAPSHOTS=1 make test` and the diff is reviewed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import dagster as dg

from analytics_assets.defs.freshness import describe_policy

SNAPSHOT = Path(__file__).parent / "snapshots" / "asset_graph.json"


def graph_snapshot(defs: dg.Definitions) -> dict:
    graph = defs.resolve_asset_graph()
    out = {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        partitions = node.partitions_def
        out[key.to_user_string()] = {
            "group": node.group_name,
            "partitions": type(partitions).__name__ if partitions else None,
            "backfill_policy": str(node.backfill_policy.policy_type.value)
            if node.backfill_policy
            else None,
            "deps": sorted(p.to_user_string() for p in node.parent_keys),
            "checks": sorted(c.name for c in graph.get_check_keys_for_assets([key])),
            "materializable": node.is_materializable,
            "freshness": describe_policy(node.freshness_policy),
            "automation": node.automation_condition.get_label()
            if node.automation_condition
            else None,
        }
    return out


def test_definitions_load_and_match_the_snapshot():
    from analytics_assets.definitions import defs

    actual = graph_snapshot(defs)
    if os.environ.get("UPDATE_SNAPSHOTS") or not SNAPSHOT.exists():
        SNAPSHOT.write_text(json.dumps(actual, indent=2, sort_keys=True) + "\n")
    expected = json.loads(SNAPSHOT.read_text())
    assert actual == expected


def test_every_raw_table_is_fed_by_its_source_and_feeds_staging():
    from analytics_assets.definitions import defs

    graph = defs.resolve_asset_graph()
    for table in ("users", "products", "orders", "order_items"):
        raw = dg.AssetKey(["raw", table])
        assert dg.AssetKey(["app_db", table]) in graph.get(raw).parent_keys
        children = {k.to_user_string() for k in graph.get(raw).child_keys}
        assert f"staging/stg_app__{table}" in children


def test_daily_marts_are_partitioned_and_backfill_in_one_run():
    from analytics_assets.definitions import defs

    graph = defs.resolve_asset_graph()
    for name in ("daily_revenue", "daily_product_sales", "daily_customer_mix"):
        node = graph.get(dg.AssetKey(["marts", name]))
        assert isinstance(node.partitions_def, dg.DailyPartitionsDefinition)
        assert node.backfill_policy == dg.BackfillPolicy.single_run()
    staging = graph.get(dg.AssetKey(["staging", "stg_app__orders"]))
    assert staging.partitions_def is None


def test_every_model_a_daily_marts_test_reads_is_upstream_of_the_marts():
    """A run of the daily marts and their parents (`+tag:daily`) in a new warehouse builds every
    model their tests read: daily_product_sales checks its products against the catalogue."""
    import json

    from analytics_assets.definitions import defs
    from analytics_assets.defs.dbt.project import get_dbt_project
    from analytics_assets.defs.dbt.translator import AnalyticsDbtTranslator

    nodes = json.loads(get_dbt_project().manifest_path.read_text())["nodes"]
    key = AnalyticsDbtTranslator().get_asset_key
    daily = {u for u, n in nodes.items() if n["resource_type"] == "model" and "daily" in n["tags"]}
    upstream = dg.AssetSelection.tag("daily", "").upstream().resolve(defs.resolve_asset_graph())
    read_by_tests = {
        key(nodes[d])
        for n in nodes.values()
        if n["resource_type"] == "test" and daily & set(n["depends_on"]["nodes"])
        for d in n["depends_on"]["nodes"]
        if d.startswith("model.")
    }
    assert read_by_tests, "the daily marts have tests reading models"
    assert sorted(k.to_user_string() for k in read_by_tests - upstream) == []
