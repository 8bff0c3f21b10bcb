"""`analytics-assets materialize` prints what a person reads: a line per step and a summary, no
Dagster or dbt debug output and no warnings; the full log is in the file it names, and
`--verbose` prints that log instead. Run as a user runs it: the installed command, in its own
process, against the session's embedded server."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import dagster as dg
import psycopg2

from analytics_assets.dev.traffic import generate_history
from analytics_assets.run_report import run_report

CLI = str(Path(sys.executable).with_name("analytics-assets"))


def _cli(*args: str, home: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, DAGSTER_HOME=str(home))
    return subprocess.run(
        [CLI, "materialize", *args], env=env, capture_output=True, text=True, timeout=600
    )


def test_materialize_prints_a_line_per_step_and_a_summary(platform_env, tmp_path):
    conn = psycopg2.connect(platform_env.source.url)
    generate_history(conn, days=2, orders_per_day=10, seed=3)
    conn.close()
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    proc = _cli("--select", "group:raw,staging/stg_app__users", home=home)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert proc.stderr == ""
    assert len(lines) <= 20, proc.stdout
    assert all(line.startswith("[materialize] ") for line in lines), proc.stdout
    text = proc.stdout
    assert re.search(r"cdc_ingest ok in [\d.]+s: 8 asset\(s\)", text), text
    assert re.search(r"dbt_models ok in [\d.]+s: 1 asset\(s\); checks \d+ passed", text), text
    assert "assets materialized: 9 (" in text
    assert re.search(r"checks: \d+ passed, 0 warned, 0 failed", text), text
    assert not re.search(r"DEBUG|Warning|Running with dbt", text), text
    (log_path,) = re.findall(r"full log: (\S+)", text)[-1:]
    log = Path(log_path).read_text()
    assert " - DEBUG - " in log and "STEP_SUCCESS" in log and "Running with dbt=" in log

    verbose = _cli("--select", "group:raw", "--verbose", home=home)
    assert verbose.returncode == 0, verbose.stdout + verbose.stderr
    everything = verbose.stdout + verbose.stderr  # Dagster's console logger writes to stderr
    assert " - DEBUG - " in everything and "RUN_SUCCESS" in everything
    assert re.search(r"\[materialize\] checks: \d+ passed", verbose.stdout)  # and the summary
    assert "Warning" not in everything


def test_the_report_names_each_check_that_warned_or_failed_with_its_reason():
    @dg.asset
    def numbers():
        return 1

    @dg.asset_check(asset=numbers)
    def in_range():
        return dg.AssetCheckResult(passed=True)

    @dg.asset_check(asset=numbers)
    def fresh_enough():
        return dg.AssetCheckResult(
            passed=False, severity=dg.AssetCheckSeverity.WARN, description="3 days old"
        )

    with dg.instance_for_test() as instance:
        result = dg.materialize([numbers, in_range, fresh_enough], instance=instance)
        report = run_report(instance, [result.run_id])
    assert report.check_lines() == [
        "checks: 1 passed, 1 warned, 0 failed",
        "  warned: numbers:fresh_enough: 3 days old",
    ]
    assert set(report.materialized) == {"numbers"}
