"""Every dbt model as an asset: daily marts partitioned by day, the rest unpartitioned.

Each materialization carries dbt's adapter response (rows, bytes billed, slot ms on BigQuery):
see `adapter_response.py`. Each failing dbt test carries its failing rows, masked: see
`defs/quality/dbt_evidence.py`. Tests that compare with a daily mart the run does not build are
left out, and a model whose blocking test failed is not reported materialized: see `selection.py`.
"""

import functools
import json
from collections.abc import Mapping
from typing import Any

import dagster as dg
from dagster import AssetExecutionContext
from dagster_dbt import DbtCliResource, dbt_assets

from analytics_assets.defs.dbt.adapter_response import (
    DEBUG_LOG_ARGS,
    stream_with_adapter_response,
)
from analytics_assets.defs.dbt.project import get_dbt_project
from analytics_assets.defs.dbt.restatements import with_restatements
from analytics_assets.defs.dbt.selection import (
    DAILY_TAG,
    FAST_PATH_ARGS,
    FAST_PATH_TAG,
    exclude_args,
    left_out_tests,
    materialize_what_passed,
)
from analytics_assets.defs.dbt.translator import AnalyticsDbtTranslator
from analytics_assets.defs.quality.dbt_evidence import with_failure_evidence
from analytics_assets.lib.partitions import daily_partitions, dbt_build_args
from analytics_assets.settings import get_settings

DAILY_SELECTOR = f"tag:{DAILY_TAG}"
# Runs of the daily marts (closes, late data, backfills) share this pool (dagster.yaml).
DAILY_MARTS_POOL = "daily_marts"


@functools.cache
def _manifest() -> Mapping[str, Any]:
    return json.loads(get_dbt_project().manifest_path.read_text())


def _build(
    context: AssetExecutionContext,
    dbt: DbtCliResource,
    args: list[str],
    candidates: set[str] | None = None,
    daily: bool = False,
):
    """`dbt build` of the selected models, minus the tests that compare with a model of
    `candidates` (default: a daily mart) this run does not build; materializations only for the
    models that passed their gates; on the daily marts, the closed days this build restated
    (`restatements.py`). A lag-driven run (the fast path) leaves out unit tests."""
    manifest = _manifest()
    translator = AnalyticsDbtTranslator()
    built = {
        uid
        for uid, props in manifest["nodes"].items()
        if props["resource_type"] == "model"
        and translator.get_asset_key(props) in context.selected_asset_keys
    }
    left_out = left_out_tests(manifest, built, candidates)
    for test in left_out:
        context.log.info(
            f"dbt test {test.name} not run: it compares with {', '.join(test.unbuilt)}, "
            "which this run does not build"
        )
    fast = FAST_PATH_ARGS if context.run.tags.get(FAST_PATH_TAG) == "true" else ()
    invocation = dbt.cli([*args, *exclude_args(left_out), *fast, *DEBUG_LOG_ARGS], context=context)
    events = materialize_what_passed(stream_with_adapter_response(invocation), invocation)
    if daily:
        events = with_restatements(events, invocation, context.log)
    yield from _published_first(context, with_failure_evidence(events, invocation))


def _published_first(context: AssetExecutionContext, events):
    """`events` (held until dbt exits), after publishing the warehouse's read copy: readers
    see a model by the time Dagster says it is materialized."""
    from analytics_assets.lib.read_copy import publish_or_warn

    def publish():
        publish_or_warn(get_settings(), context.log)

    published = False
    try:
        for event in events:
            if not published:
                publish()
                published = True
            yield event
    finally:
        if not published:
            publish()


def build_dbt_assets() -> list[dg.AssetsDefinition]:
    project = get_dbt_project()
    translator = AnalyticsDbtTranslator()

    @dbt_assets(
        manifest=project.manifest_path,
        project=project,
        select=DAILY_SELECTOR,
        name="dbt_daily_marts",
        partitions_def=daily_partitions(),
        backfill_policy=dg.BackfillPolicy.single_run(),
        dagster_dbt_translator=translator,
        pool=DAILY_MARTS_POOL,
    )
    def dbt_daily_marts(context: AssetExecutionContext, dbt: DbtCliResource):
        window = context.partition_time_window
        context.log.info(f"dbt build for {window.start:%Y-%m-%d} .. {window.end:%Y-%m-%d}")
        yield from _build(context, dbt, dbt_build_args(window.start, window.end), daily=True)

    @dbt_assets(
        manifest=project.manifest_path,
        project=project,
        exclude=DAILY_SELECTOR,
        name="dbt_models",
        dagster_dbt_translator=translator,
    )
    def dbt_models(context: AssetExecutionContext, dbt: DbtCliResource):
        # any model this run does not build may be stale: every one is a candidate
        models = {u for u, n in _manifest()["nodes"].items() if n["resource_type"] == "model"}
        yield from _build(context, dbt, dbt_build_args(), models)

    return [dbt_daily_marts, dbt_models]
