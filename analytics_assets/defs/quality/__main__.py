"""Run asset checks alone, without materializing their assets: `python -m analytics_assets.defs.quality`.

Dagster 1.13's CLI has no command for that (`dagster asset materialize` always builds the
assets, with their checks), so this runs a check-only subset of the code location's asset job
and records it in the Dagster instance ($DAGSTER_HOME), where the UI shows it like any run.

    python -m analytics_assets.defs.quality list
    python -m analytics_assets.defs.quality run raw/orders:slot_health
    python -m analytics_assets.defs.quality run slot_health            # on every raw table
    python -m analytics_assets.defs.quality run source_reconciliation --partition 2026-03-07
    python -m analytics_assets.defs.quality run staging/stg_app__orders:unique_stg_app__orders_order_id

Exit status 0 when every check passed or only warned, 1 when one failed with ERROR.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


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
                raise SystemExit(f"no check {name}: see `list`")
            out.append(key)
        elif name in by_name:
            out.extend(by_name[name])
        else:
            raise SystemExit(f"no check named {name}: see `list`")
    return sorted(set(out), key=lambda k: k.to_user_string())


def _instance():
    import dagster as dg

    from analytics_assets.settings import get_settings

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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m analytics_assets.defs.quality", description=__doc__.splitlines()[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="every asset check: asset/key:check_name, blocking or not")
    run = sub.add_parser("run", help="run checks alone")
    run.add_argument("checks", nargs="+", help="asset/key:check_name, or a check name")
    run.add_argument("--partition", help="the daily partition, for the per-date checks")
    args = parser.parse_args(argv)
    if args.command == "list":
        from analytics_assets.definitions import defs

        graph = defs.resolve_asset_graph()
        for key in sorted(graph.asset_check_keys, key=lambda k: k.to_user_string()):
            spec = graph.get_check_spec(key)
            flags = ["blocking" if spec.blocking else "non-blocking"]
            if spec.partitions_def is not None:
                flags.append("per partition")
            print(f"{key.to_user_string()}  ({', '.join(flags)})")
        return 0
    return run_checks(args.checks, args.partition)


if __name__ == "__main__":
    sys.exit(main())
