"""How dbt nodes become Dagster assets: keys and groups mirror where the data lives.

The key of a model is `<layer>/<model>` and its group is `<layer>`, where the layer is the first
folder under `models/` — the same rule the project's `generate_schema_name` macro uses for the
warehouse schema, so the UI group and the schema always agree. Sources map onto the CDC assets
through `meta.dagster.asset_key` in the sources YAML (handled by the base translator). A model's
freshness policy comes from `meta.dagster.freshness` in its YAML (see `defs/freshness.py`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DagsterDbtTranslatorSettings, DbtProject

from analytics_assets.defs.freshness import policy_from_dbt_meta
from analytics_assets.settings import get_settings


def model_layer(props: Mapping[str, Any]) -> str:
    """`staging`, `intermediate` or `marts`: the first folder of the model under models/."""
    fqn = props.get("fqn") or []
    return fqn[1] if len(fqn) > 2 else "default"


class AnalyticsDbtTranslator(DagsterDbtTranslator):
    def __init__(self) -> None:
        super().__init__(settings=DagsterDbtTranslatorSettings(enable_code_references=False))

    def get_asset_spec(
        self, manifest: Mapping[str, Any], unique_id: str, project: DbtProject | None
    ) -> dg.AssetSpec:
        spec = super().get_asset_spec(manifest, unique_id, project)
        props = self.get_resource_props(manifest, unique_id)
        if props["resource_type"] == "source":
            return spec
        policy = policy_from_dbt_meta(
            props.get("meta") or {},
            model=props["name"],
            timezone=get_settings().partitions.timezone,
        )
        return spec.replace_attributes(freshness_policy=policy) if policy else spec

    def get_automation_condition(
        self, dbt_resource_props: Mapping[str, Any]
    ) -> dg.AutomationCondition | None:
        """Unpartitioned models follow their parents (declarative automation); the daily marts
        are driven by partition completeness and late-data sensors instead."""
        if dbt_resource_props["resource_type"] != "model":
            return None
        if "daily" in (dbt_resource_props.get("tags") or []):
            return None
        return dg.AutomationCondition.eager()

    def get_asset_key(self, dbt_resource_props: Mapping[str, Any]) -> dg.AssetKey:
        meta_key = (dbt_resource_props.get("meta") or {}).get("dagster", {}).get("asset_key")
        if dbt_resource_props["resource_type"] == "source" or meta_key:
            return super().get_asset_key(dbt_resource_props)
        return dg.AssetKey([model_layer(dbt_resource_props), dbt_resource_props["name"]])

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        if dbt_resource_props["resource_type"] == "source":
            return None
        return model_layer(dbt_resource_props)
