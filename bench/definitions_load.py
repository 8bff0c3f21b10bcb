"""Definitions load: `import analytics_assets.definitions` in a fresh process (target ≤ 2.5 s).

Prints the median of several fresh-process loads, the floor measured in the same run (a fresh
process importing only dagster and dagster_dbt, which the project cannot load faster than), and
the ratios of the load against the target and against that floor.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

TARGET_S = 2.5
RUNS = 5


def _time(code: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> dict:
    _time("import analytics_assets.definitions")  # warm the OS file cache and the dbt manifest
    load = statistics.median(_time("import analytics_assets.definitions") for _ in range(RUNS))
    floor = statistics.median(_time("import dagster, dagster_dbt") for _ in range(RUNS))
    result = {
        "definitions_load_s": round(load, 3),
        "floor_import_dagster_dbt_s": round(floor, 3),
        "ratio_vs_target": round(load / TARGET_S, 3),
        "ratio_vs_floor": round(load / floor, 3),
        "target_met": load <= TARGET_S,
    }
    for key, value in result.items():
        print(f"{key}: {value}")
    return result


if __name__ == "__main__":
    main()
