"""Our CLI refuses what a user can get wrong, in one line, before any run or ingest starts.

The successful path (a partition and a range actually materialized through Dagster's command) is
run by tests/test_readme.py, which executes the README's `analytics-assets materialize` lines.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys

import pytest

from analytics_assets import cli, settings
from analytics_assets.lib.errors import ConfigError
from analytics_assets.materialize import partition_window


@pytest.fixture
def instance_env(monkeypatch, tmp_path):
    """An instance location, so the checks under test run without starting anything."""
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    settings.get_settings.cache_clear()  # settings are cached: read DAGSTER_HOME again
    yield
    monkeypatch.undo()
    settings.get_settings.cache_clear()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--select", "tag:daily", "--partition", "2026-13-01"], "is not a date: use YYYY-MM-DD"),
        (["--select", "tag:daily", "--partition", "14/02/2026"], "is not a date"),
        (
            ["--select", "tag:daily", "--partition-range", "2026-02-05...2026-02-01"],
            "did you mean 2026-02-01...2026-02-05?",
        ),
        (
            ["--select", "tag:daily", "--partition-range", "2026-02-01..2026-02-05"],
            "is not START...END (three dots)",
        ),
        (
            ["--select", "tag:daily", "--partition", "2025-12-31"],
            "before the first daily partition",
        ),
        (["--select", "tag:daily", "--partition", "2999-01-01"], "has no daily partition yet"),
        (["--select", "tag:nosuch", "--partition", "2026-02-01"], "matches no asset"),
        (["--select", "marts/nosuch"], "is not a valid selection"),
        (["--select", "tag:daily"], "add --partition YYYY-MM-DD or --partition-range"),
        (["--select", "group:raw", "--partition", "2026-02-01"], "none of the selected assets"),
        (
            ["--select", "*", "--partition-range", "2026-02-01...2026-02-03"],
            "a partition range runs daily marts only",
        ),
    ],
)
def test_bad_arguments_are_one_line_and_start_nothing(args, expected, instance_env, capsys):
    code = cli.main(["materialize", *args])
    out, err = capsys.readouterr()
    assert code == cli.EXIT_USER_ERROR
    assert expected in err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in out + err
    assert "RUN_START" not in out + err


def test_stack_not_running_says_how_to_start_it(monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.setenv("ANALYTICS_DATA_DIR", str(tmp_path))  # no server there
    settings.get_settings.cache_clear()
    try:
        code = cli.main(["materialize", "--select", "tag:daily", "--partition", "2026-02-01"])
    finally:
        monkeypatch.undo()
        settings.get_settings.cache_clear()
    err = capsys.readouterr().err
    assert code == cli.EXIT_USER_ERROR
    assert "analytics-assets stack up" in err


def test_partition_bounds_follow_the_clock():
    today = dt.date(2026, 3, 10)
    assert partition_window("2026-03-09", None, today=today) == (
        dt.date(2026, 3, 9),
        dt.date(2026, 3, 9),
    )
    with pytest.raises(ConfigError, match="newest is 2026-03-09"):
        partition_window("2026-03-10", None, today=today)  # today has not ended
    assert partition_window(None, "2026-01-01...2026-03-09", today=today) == (
        dt.date(2026, 1, 1),
        dt.date(2026, 3, 9),
    )
    assert partition_window(None, None, today=today) is None


def test_unknown_table_for_ingest_is_one_line_before_any_work(capsys):
    code = cli.main(["cdc", "ingest", "--tables", "orders,nosuch", "--quiet"])
    err = capsys.readouterr().err
    assert code == cli.EXIT_USER_ERROR
    assert err.strip() == (
        "error: --tables: nosuch not captured; captured: users, products, orders, order_items "
        "(CAPTURED_TABLES)"
    )


def _zone_error(zone: str) -> str:
    return (
        f"error: PARTITION_TIMEZONE={zone!r} is not a time zone: use an IANA name such as UTC, "
        "Asia/Seoul or America/New_York."
    )


def test_an_unknown_partition_timezone_is_one_line_and_exit_2():
    env = dict(os.environ, PARTITION_TIMEZONE="Mars/Olympus")
    proc = subprocess.run(
        [sys.executable, "-m", "analytics_assets.cli", "stack", "status"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [_zone_error("Mars/Olympus")]
    assert "Traceback" not in proc.stdout + proc.stderr


@pytest.mark.parametrize("zone", ["America", "utc", "Asia/Seoul'; drop table x; --", "../etc"])
def test_a_folder_a_wrong_case_or_sql_is_not_a_time_zone(zone, monkeypatch, capsys):
    monkeypatch.setenv("PARTITION_TIMEZONE", zone)
    settings.get_settings.cache_clear()
    try:
        code = cli.main(["stack", "status"])
    finally:
        monkeypatch.undo()
        settings.get_settings.cache_clear()
    out, err = capsys.readouterr()
    assert code == cli.EXIT_USER_ERROR
    assert err.strip().splitlines() == [_zone_error(zone)]
    assert "Traceback" not in out + err


def test_a_reader_that_goes_away_ends_the_output_quietly():
    # `analytics-assets check list | head`: the reader is gone before the list is written
    proc = subprocess.Popen(
        [sys.executable, "-m", "analytics_assets.cli", "check", "list"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    proc.stdout.close()
    stderr = proc.stderr.read()
    assert proc.wait(timeout=120) == 0, stderr
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr, stderr
