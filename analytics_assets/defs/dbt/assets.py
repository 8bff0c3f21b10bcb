"""Every dbt model as an asset: daily marts partitioned by day, the rest unpartitioned.

Each materialization carries dbt's adapter response (rows, bytes billed, slot ms on BigQuery):
see `adapter_response.py`. Each failing dbt test carries its failing rows, masked: see
`defs/quality/dbt_evidence.py`.
"""

import dagster as dg
from dagster import AssetExecutionContext
from dagster_dbt import DbtCliResource, dbt_assets

from analytics_assets.defs.dbt.adapter_response import (
    DEBUG_LOG_ARGS,
    stream_with_adapter_response,
)
from analytics_assets.defs.dbt.project import get_dbt_project
from analytics_assets.defs.quality.dbt_evidence import with_failure_evidence
from analytics_assets.lib.dbt_translator import AnalyticsDbtTranslator
from analytics_assets.lib.partitions import daily_partitions, dbt_build_args

DAILY_SELECTOR = "tag:daily"


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
    )
    def dbt_daily_marts(context: AssetExecutionContext, dbt: DbtCliResource):
        window = context.partition_time_window
        context.log.info(f"dbt build for {window.start:%Y-%m-%d} .. {window.end:%Y-%m-%d}")
        args = [*dbt_build_args(window.start, window.end), *DEBUG_LOG_ARGS]
        invocation = dbt.cli(args, context=context)
        yield from with_failure_evidence(stream_with_adapter_response(invocation), invocation)

    @dbt_assets(
        manifest=project.manifest_path,
        project=project,
        exclude=DAILY_SELECTOR,
        name="dbt_models",
        dagster_dbt_translator=translator,
    )
    def dbt_models(context: AssetExecutionContext, dbt: DbtCliResource):
        args = [*dbt_build_args(), *DEBUG_LOG_ARGS]
        invocation = dbt.cli(args, context=context)
        yield from with_failure_evidence(stream_with_adapter_response(invocation), invocation)

    return [dbt_daily_marts, dbt_models]
