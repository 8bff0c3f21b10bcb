"""`ANALYTICS_ENV=prod` loads the same asset graph as dev, with BigQuery kinds and relation names.

BigQuery is never contacted: the prod manifest is parsed offline (see conftest.py) and
`build_definitions()` loads each environment from its own manifest.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import dagster as dg
import pytest

from analytics_assets.defs.dbt.project import get_dbt_project


@dataclass
class Loaded:
    graph: Any  # dagster's AssetGraph
    manifest: dict


def _load(analytics_env, dbt_target_path, name: str) -> Loaded:
    with analytics_env(name):
        from analytics_assets.definitions import build_definitions

        graph = build_definitions().resolve_asset_graph()
        project = get_dbt_project()
        # Loaded from the manifest parsed for this environment, not from a parse of its own.
        assert project.manifest_path == dbt_target_path / name / "manifest.json"
        return Loaded(graph, json.loads(project.manifest_path.read_text()))


@pytest.fixture(scope="module")
def dev(analytics_env, dbt_target_path) -> Loaded:
    return _load(analytics_env, dbt_target_path, "dev")


@pytest.fixture(scope="module")
def prod(analytics_env, dbt_target_path) -> Loaded:
    return _load(analytics_env, dbt_target_path, "prod")


def _dbt_keys(loaded: Loaded) -> list[dg.AssetKey]:
    graph = loaded.graph
    return [k for k in graph.get_all_asset_keys() if "dbt" in graph.get(k).kinds]


def test_prod_loads_the_same_graph_as_dev(dev, prod):
    assert prod.graph.get_all_asset_keys() == dev.graph.get_all_asset_keys()
    for key in dev.graph.get_all_asset_keys():
        dev_node, prod_node = dev.graph.get(key), prod.graph.get(key)
        assert prod_node.parent_keys == dev_node.parent_keys, key
        assert prod_node.group_name == dev_node.group_name, key
        assert prod_node.partitions_def == dev_node.partitions_def, key


def test_prod_manifest_is_built_for_bigquery_offline(prod):
    assert prod.manifest["metadata"]["adapter_type"] == "bigquery"


def test_every_dbt_asset_is_a_bigquery_table_in_the_dataset_of_its_layer(prod, environments):
    project = environments["prod"]["GCP_PROJECT"]
    dataset = environments["prod"]["BIGQUERY_DATASET"]
    models = {
        node["name"]
        for node in prod.manifest["nodes"].values()
        if node["resource_type"] == "model" and node["config"]["materialized"] != "ephemeral"
    }
    keys = _dbt_keys(prod)
    assert {key.path[-1] for key in keys} == models
    for key in keys:
        node = prod.graph.get(key)
        layer, model = key.path[0], key.path[-1]
        assert "bigquery" in node.kinds and "duckdb" not in node.kinds, key
        assert node.metadata["dagster/table_name"] == f"{project}.{dataset}_{layer}.{model}"
        relation = prod.manifest["nodes"][f"model.analytics.{model}"]["relation_name"]
        assert relation == f"`{project}`.`{dataset}_{layer}`.`{model}`"


def test_raw_cdc_assets_are_bigquery_in_prod_and_duckdb_in_dev(dev, prod):
    raw = [key for key in prod.graph.get_all_asset_keys() if key.path[0] == "raw"]
    assert raw
    for key in raw:
        assert prod.graph.get(key).kinds == {"bigquery"}, key
        assert dev.graph.get(key).kinds == {"duckdb"}, key
    for key in _dbt_keys(dev):
        kinds = dev.graph.get(key).kinds
        assert "duckdb" in kinds and "bigquery" not in kinds, key
