"""Run every benchmark and regenerate BENCHMARKS.md (`make bench`; `--quick` for small sizes).

Each benchmark runs in its own process (`bench/<name>.py --json <file>`), prints its figures as
it goes and leaves one result record; this script gathers the records, with the machine (CPUs,
RAM, CPU model, load average) and the date, into BENCHMARKS.md. Ratios compare each figure with
a limit or with a baseline measured in the same run, so they can be compared across machines;
bare times are context. A benchmark that fails is reported as failed and the others still run.

    python bench/run_all.py            # full sizes (~25 min on 2 cores)
    python bench/run_all.py --quick    # small sizes (~10 min)
    python bench/run_all.py --only sensor_tick definitions_load   # re-run two, keep the rest

Every run stores its records in bench/results.json; `--only` re-runs the chosen benchmarks and
keeps the other records from there, so BENCHMARKS.md always shows every benchmark, each section
with the date, commit and load of the run that produced it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
RESULTS = BENCH / "results.json"

# (id, script, full-size arguments, quick arguments)
# One-off comparisons the code's comments cite, kept as written (no benchmark re-runs them)
DESIGN_MEASUREMENTS = Path(__file__).with_name("design_measurements.md")

BENCHMARKS = [
    (
        "cdc_apply",
        "cdc_throughput.py",
        ["--changes", "500000"],
        ["--changes", "100000", "--kafka-records", "20000"],
    ),
    ("cdc_backlog", "cdc_throughput.py", ["--backlog", "2000000"], ["--backlog", "300000"]),
    ("cdc_vs_extract", "cdc_vs_extract.py", ["--rows", "5000000"], ["--quick"]),
    # 30 separate dbt runs take ~10 min alone on 2 busy cores: the full run measures 10 and
    # extrapolates per run (bench/backfill_scaling.py defaults to 30 when run by itself)
    ("backfill_scaling", "backfill_scaling.py", ["--separate", "10"], ["--quick"]),
    ("sensor_tick", "sensor_tick.py", [], ["--quick"]),
    ("definitions_load", "definitions_load.py", [], ["--quick"]),
    ("dbt_warm", "dbt_warm.py", [], ["--quick"]),
    # a scratch Dagster instance (daemon + run workers) under live traffic: warm-up, 5 min of
    # traffic (quick: 1 min), catch-up
    ("freshness_under_load", "freshness_under_load.py", [], ["--quick"]),
]

# benchmarks the issue asks for that have no script yet: {id: (title, why)}
NOT_IMPLEMENTED: dict[str, tuple[str, str]] = {}

# Measurements behind a choice in the code (the code's comment points here); kept as written on
# every regeneration, each with where it was measured.


def machine() -> dict:
    info = {"nproc": os.cpu_count(), "python": platform.python_version()}
    try:
        mem = Path("/proc/meminfo").read_text().splitlines()[0].split()
        info["ram_gb"] = round(int(mem[1]) / 2**20, 1)
    except (OSError, IndexError, ValueError):
        info["ram_gb"] = None
    info["cpu_model"] = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info["os"] = f"{platform.system()} {platform.release()}"
    try:
        info["commit"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip() + (
            " (+ uncommitted changes)"
            if subprocess.run(
                ["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True
            ).stdout.strip()
            else ""
        )
    except OSError:
        info["commit"] = "?"
    return info


def run_one(bench_id: str, script: str, args: list[str], tmp: Path) -> dict:
    out = tmp / f"{bench_id}.json"
    cmd = [sys.executable, str(BENCH / script), *args, "--json", str(out)]
    print(f"\n=== {bench_id}: {' '.join(cmd[1:])}", flush=True)
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    proc = subprocess.run(
        cmd, cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    seconds = time.perf_counter() - started
    print(proc.stdout, end="", flush=True)
    if proc.returncode != 0 or not out.exists():
        tail = "\n".join(proc.stdout.strip().splitlines()[-15:])
        return {"name": bench_id, "failed": True, "error": tail, "seconds": seconds}
    record = json.loads(out.read_text())
    record["name"] = bench_id
    record["seconds"] = seconds
    record["load_avg"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    return record


def _fmt(value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.3f}".rstrip("0").rstrip(".") if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def _target(r: dict) -> str:
    if r.get("target") is None:
        return "(baseline)"
    return f"{'≤' if r['better'] == 'lower' else '≥'} {_fmt(r['target'])}"


def _met(r: dict) -> str:
    return {True: "met", False: "**missed**", None: "—"}[r.get("met")]


def _ran(rec: dict) -> str:
    """When, at which commit and at which sizes a record was measured."""
    ran = rec.get("ran") or {}
    if not ran:
        return ""
    sizes = "quick sizes" if ran.get("quick") else "full sizes"
    return f", run {ran['date']} UTC at commit {ran['commit']} ({sizes})"


def render(records: list[dict], info: dict) -> str:
    dates = sorted((r.get("ran") or {}).get("date", "") for r in records)
    dates = [d for d in dates if d]
    if not dates:
        when = "unknown"
    else:
        when = dates[0] if dates[0] == dates[-1] else f"{dates[0]} to {dates[-1]}"
    lines = [
        "# Benchmarks",
        "",
        "Generated by `make bench` (`python bench/run_all.py`, or `--only <ids>` to re-run some "
        "and keep the rest from bench/results.json); do not edit by hand, re-run it. Each ratio "
        "compares a figure with a limit or with a baseline measured in the same run; bare times "
        "are context for this machine only.",
        "",
        f"- Runs: {when} UTC (each section says when it ran, at which commit and sizes)",
        f"- Machine: {info['nproc']} CPUs ({info['cpu_model']}), {info['ram_gb']} GB RAM, "
        f"{info['os']}, Python {info['python']}",
        "- The machine may be shared: each benchmark's load average is shown with it",
        "",
        "## Summary",
        "",
        "| benchmark | ratio | value | target | |",
        "|---|---|---|---|---|",
    ]
    for rec in records:
        if rec.get("failed"):
            lines.append(f"| {rec['name']} | — | failed | — | **failed** |")
            continue
        for r in rec["ratios"]:
            lines.append(
                f"| {rec['title']} | {r['name']} | {_fmt(r['value'])} | {_target(r)} | {_met(r)} |"
            )
    for title, _ in NOT_IMPLEMENTED.values():
        lines.append(f"| {title.split(' (')[0]} | — | not implemented yet | — | — |")
    for rec in records:
        lines += ["", f"## {rec.get('title', rec['name'])}", ""]
        if rec.get("failed"):
            lines += ["Failed:", "", "```", rec["error"], "```"]
            continue
        lines += [
            f"`bench/{dict((b[0], b[1]) for b in BENCHMARKS)[rec['name']]}` — "
            f"{rec['seconds']:.0f} s, load average {rec['load_avg'][0]} → {rec['load_avg'][1]}"
            f"{_ran(rec)}",
            "",
            "| figure | value |",
            "|---|---|",
        ]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in rec["figures"].items()]
        lines += ["", "| ratio | value | target | |", "|---|---|---|---|"]
        lines += [
            f"| {r['name']} | {_fmt(r['value'])} | {_target(r)} | {_met(r)} |"
            for r in rec["ratios"]
        ]
        if rec["notes"]:
            lines += [""] + [f"- {n}" for n in rec["notes"]]
    for title, text in NOT_IMPLEMENTED.values():
        lines += ["", f"## {title}", "", text]
    lines += ["", "## Design measurements", "", DESIGN_MEASUREMENTS.read_text().rstrip()]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes")
    parser.add_argument("--only", nargs="+", help="benchmark ids to run")
    parser.add_argument("--output", default=str(ROOT / "BENCHMARKS.md"))
    args = parser.parse_args()
    chosen = [b for b in BENCHMARKS if not args.only or b[0] in args.only]
    unknown = set(args.only or ()) - {b[0] for b in BENCHMARKS}
    if unknown:
        raise SystemExit(
            f"unknown benchmarks {sorted(unknown)}; known: {[b[0] for b in BENCHMARKS]}"
        )
    started = dt.datetime.now(dt.UTC)
    info = machine()
    ran = {"date": f"{started:%Y-%m-%d %H:%M}", "commit": info["commit"], "quick": args.quick}
    records = []
    with tempfile.TemporaryDirectory(prefix="bench_") as tmp:
        for bench_id, script, full, quick in chosen:
            record = run_one(bench_id, script, quick if args.quick else full, Path(tmp))
            records.append({**record, "ran": ran})
    kept = {}
    if args.only and RESULTS.exists():
        kept = {r["name"]: r for r in json.loads(RESULTS.read_text())["records"]}
    kept.update({r["name"]: r for r in records})
    order = [b[0] for b in BENCHMARKS]
    every = sorted(
        (r for r in kept.values() if r["name"] in order), key=lambda r: order.index(r["name"])
    )
    RESULTS.write_text(json.dumps({"machine": info, "records": every}, indent=1) + "\n")
    Path(args.output).write_text(render(every, info))
    print(f"\nwrote {args.output} and {RESULTS.relative_to(ROOT)}")
    failed = [r["name"] for r in records if r.get("failed")]
    if failed:
        raise SystemExit(f"benchmarks failed: {failed}")


if __name__ == "__main__":
    main()
