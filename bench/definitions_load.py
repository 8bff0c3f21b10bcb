"""Definitions load: `import analytics_assets.definitions` in a fresh process (target ≤ 2.5 s).

Prints the median of several fresh-process loads, the floor measured in the same run (a fresh
process importing dagster, dagster-dbt's `dbt_assets` and the dbt-core selection engine it loads
to evaluate a selection: `import dagster_dbt` alone is lazy and loads dbt-core only when
`dbt_assets` is used, so that is what any dagster-dbt project pays), and
the ratios of the load against the target and against that floor.

Profile (pyinstrument): `python -m pyinstrument -c "import analytics_assets.definitions"`. The
last profile-driven fix: cron freshness policies are built once per distinct deadline (building
one walks 1,000 cron ticks; the translator built 45 of them, 40 % of the project's own share).
The profile also showed 0.5 s of `compile()`: with PYTHONDONTWRITEBYTECODE set (as on these
machines) Python never caches bytecode, so `make install` compiles it (`--compile-bytecode`) and
`make prepare` compiles the project; the figure "bytecode cached" says whether that was done.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import Result, arg_parser

TARGET_S = 2.5
RUNS = 5
# What any dagster-dbt project pays: dagster, dagster-dbt's dbt_assets, and dbt-core's selection
# engine, which dbt_assets imports to evaluate its select (even the default "fqn:*") whenever
# dbt-core is installed.
FLOOR = "import dagster; from dagster_dbt import DbtCliResource, dbt_assets; import dbt.graph.cli"


def _time(code: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> dict:
    args = arg_parser(__doc__).parse_args(argv)
    runs = 3 if args.quick else RUNS
    result = Result("definitions_load", "Definitions load (fresh process)")
    _time("import analytics_assets.definitions")  # warm the OS file cache and the dbt manifest
    load = statistics.median(_time("import analytics_assets.definitions") for _ in range(runs))
    floor = statistics.median(_time(FLOOR) for _ in range(runs))
    import dagster

    cached = any((Path(dagster.__file__).parent / "__pycache__").glob("*.pyc"))
    result.figure("bytecode cached (make install)", cached)
    result.figure("definitions load s (median)", round(load, 3))
    result.figure("floor: dagster + dbt_assets + dbt selection imports s (median)", round(floor, 3))
    result.ratio("load / 2.5 s target", load / TARGET_S, 1.0)
    result.ratio("load / floor (dagster + dbt_assets + dbt selection)", load / floor, None)
    result.write(args.json)
    return result.record


if __name__ == "__main__":
    main()
