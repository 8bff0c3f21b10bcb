"""dbt started warm: the same short dbt command (`dbt ls` of the near-real-time models, on the
project's partial parse) run as a new `dbt` process and as `analytics-dbt`, forked from its warm
server (lib/dbt_warm.py), alternating, several times each. Prints the medians, the CPU each
command cost (the command and its children), and warm / cold (target <= 0.5: the import dbt
pays in a new process is most of a short invocation).

    python bench/dbt_warm.py [--quick]
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT, Result, arg_parser

TARGET = 0.5
RUNS = 7
COMMAND = ["ls", "--select", "tag:realtime", "--quiet"]


def _run(executable: Path, target: Path, env: dict) -> tuple[float, float]:
    """Wall and CPU seconds of one command (CPU: this child and what it waited for)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(  # noqa: S603 - fixed argv
        [str(executable), *COMMAND, "--target-path", str(target)],
        cwd=ROOT / "dbt",
        env=env,
        check=True,
        capture_output=True,
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main(argv: list[str] | None = None) -> dict:
    args = arg_parser(__doc__).parse_args(argv)
    runs = 3 if args.quick else RUNS
    result = Result("dbt_warm", "dbt started warm (short command: dbt ls)")
    bin_dir = Path(sys.executable).parent
    cold, warm = bin_dir / "dbt", bin_dir / "analytics-dbt"
    with tempfile.TemporaryDirectory(prefix="dbtwarm", dir="/tmp") as tmp:
        target = Path(tmp) / "target"
        env = {**os.environ, "TMPDIR": tmp, "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"}
        _run(cold, target, env)  # parses once: every later command reads the partial parse
        _run(warm, target, env)  # starts this run's server
        from analytics_assets.lib.dbt_warm import stop_server

        deadline = time.monotonic() + 120
        while not list(Path(tmp).glob("analytics-dbt-*/*.sock")):
            assert time.monotonic() < deadline, "the warm dbt server did not start"
            time.sleep(0.05)
        cold_runs, warm_runs = [], []
        for _ in range(runs):
            cold_runs.append(_run(cold, target, env))
            warm_runs.append(_run(warm, target, env))
        for sock in Path(tmp).glob("analytics-dbt-*/*.sock"):
            stop_server(sock)
    cold_wall = statistics.median(w for w, _ in cold_runs)
    warm_wall = statistics.median(w for w, _ in warm_runs)
    result.figure("runs of each", runs)
    result.figure("dbt (new process) s, median", round(cold_wall, 3))
    result.figure("analytics-dbt (forked warm) s, median", round(warm_wall, 3))
    result.figure(
        "dbt (new process) CPU s, median", round(statistics.median(c for _, c in cold_runs), 3)
    )
    result.figure(
        "analytics-dbt command CPU s, median (the fork's CPU is the server's)",
        round(statistics.median(c for _, c in warm_runs), 3),
    )
    result.ratio("warm / cold (wall, median)", warm_wall / cold_wall, TARGET)
    result.note("the forked child's CPU counts under the server, not the command: compare walls")
    result.write(args.json)
    return result.record


if __name__ == "__main__":
    main()
