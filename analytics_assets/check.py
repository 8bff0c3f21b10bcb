"""`analytics-assets check`: run asset checks alone, without materializing their assets.

Dagster 1.13's CLI has no command for that (`dagster asset materialize` always builds the
assets, with their checks), so this runs a check-only subset of the code location's asset job
and records it in the Dagster instance ($DAGSTER_HOME), where the UI shows it like any run.

    analytics-assets check list
    analytics-assets check run raw/orders:slot_health
    analytics-assets check run slot_health            # on every raw table
    analytics-assets check run source_reconciliation --partition 2026-03-07
    analytics-assets check run staging/stg_app__orders:unique_stg_app__orders_order_id

Exit status 0 when every check passed or only warned, 1 when one failed with ERROR, 2 for a
check name that does not exist.
"""

from __future__ import annotations

from collections.abc import Sequence

from analytics_assets.lib.errors import ConfigError
from analytics_assets.settings import get_settings


def resolve(names: Sequence[str], available) -> list:
    """`asset/key:check` exactly, or a bare check name for every check of that name."""
    import dagster as dg

    by_name: dict[str, list] = {}
    for key in available:
        by_name.setdefault(key.name, []).append(key)
    out = []
    for name in names:
        if ":" in name:
            key = dg.AssetCheckKey.from_user_string(name)
            if key not in available:
                raise ConfigError(f"no check {name}: see `analytics-assets check list`")
            out.append(key)
        elif name in by_name:
            out.extend(by_name[name])
        else:
            raise ConfigError(f"no check named {name}: see `analytics-assets check list`")
    return sorted(set(out), key=lambda k: k.to_user_string())


def _instance():
    import dagster as dg

    if get_settings().dagster_home:
        return dg.DagsterInstance.get(), True
    return dg.DagsterInstance.ephemeral(), False


def run_checks(names: Sequence[str], partition: str | None) -> int:
    from analytics_assets.definitions import defs

    graph = defs.resolve_asset_graph()
    keys = resolve(names, set(graph.asset_check_keys))
    job = defs.get_implicit_global_asset_job_def().get_subset(
        asset_selection=set(), asset_check_selection=set(keys)
    )
    instance, recorded = _instance()
    try:
        result = job.execute_in_process(
            instance=instance,
            partition_key=partition,
            raise_on_error=False,
            # the verdicts are printed below; Dagster's step log stays in the instance
            run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
        )
        failed = False
        for event in result.all_events:
            if event.event_type_value != "ASSET_CHECK_EVALUATION":
                continue
            data = event.asset_check_evaluation_data
            verdict = "PASS" if data.passed else data.severity.value
            failed |= verdict == "ERROR"
            where = f" [{data.partition}]" if data.partition else ""
            print(
                f"{verdict:<5} {data.asset_check_key.to_user_string()}{where}: {data.description}"
            )
        for event in result.all_events:
            if event.event_type_value == "STEP_FAILURE" and not failed:
                print(f"FAILED step {event.step_key}: {event.step_failure_data.error.message}")
                failed = True
        where = f"run {result.run_id}" + ("" if recorded else " (not recorded: DAGSTER_HOME unset)")
        print(where)
        return 1 if failed or not result.success else 0
    finally:
        instance.dispose()


def list_checks() -> int:
    from analytics_assets.definitions import defs

    graph = defs.resolve_asset_graph()
    for key in sorted(graph.asset_check_keys, key=lambda k: k.to_user_string()):
        spec = graph.get_check_spec(key)
        flags = ["blocking" if spec.blocking else "non-blocking"]
        if spec.partitions_def is not None:
            flags.append("per partition")
        print(f"{key.to_user_string()}  ({', '.join(flags)})")
    return 0
