"""The README's commands work: every `analytics-assets ...` and `dagster ...` line in its shell
blocks runs, in order, on a fresh embedded stack of its own (a new data dir, as on a new machine),
and exits 0.

Not run here, by rule (listed in the log): `make ...` (`make demo` takes minutes,
`make test` is this suite), servers (`dagster dev`, `dagster-webserver`, `dagster-daemon`),
`analytics-assets demo` (what `make demo` runs), lines with <placeholders>, and anything that is not
one of the project's two CLIs. Adjusted, and said so in the log:
- `stack down` runs last (the README lists it among the stack commands);
- a command the README repeats word for word (`.venv/bin/` or not) runs once: the second run would
  assert nothing the first did not (the test runs every CLI from .venv/bin either way);
- `traffic live` runs for 2 seconds instead of the README's minute;
- `traffic history` without `--end` gets one that ends the day after the README's latest partition
  date (and more `--days` if its dates span more), so every partition the README materializes
  holds data whatever today's date is. With an `--end`, every README date must fall in the days
  it loads (a reader who copies the commands gets data, not empty days).
The log goes to $ANALYTICS_TEST_ARTIFACTS/readme/commands.log (default .data/test-artifacts/).
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import duckdb

from analytics_assets.settings import DEFAULT_START_DATE, PROJECT_ROOT

README = PROJECT_ROOT / "README.md"
BIN = Path(sys.executable).parent
CLIS = ("analytics-assets", "dagster")
SERVERS = ("dagster dev", "dagster-webserver", "dagster-daemon")
LIVE_SECONDS = "2"
# Everything the test session put in the environment that points at its own stack.
PROJECT_ENV = re.compile(
    r"^(ANALYTICS_|SOURCE_DATABASE_URL$|WAREHOUSE_PATH$|DAGSTER_HOME$|DAGSTER_PG_|CDC_|NOTIFY_PATH$"
    r"|PARTITION_|CAPTURED_TABLES$|DBT_TARGET$)"
)
DATE = r"\d{4}-\d{2}-\d{2}"


@dataclass
class Command:
    line: str
    argv: list[str]
    apply_env: bool = False  # `eval "$(... stack env)"`: run it and export what it prints


def shell_lines(markdown: str) -> list[str]:
    """Command lines of the fenced bash/sh/shell/console blocks (untyped blocks hold diagrams),
    continuations joined, comments and prompts dropped."""
    lines, block, pending = [], None, ""
    for raw in markdown.splitlines():
        fence = re.match(r"^\s*```\s*(\w*)", raw)
        if fence:
            block = None if block is not None else fence.group(1).lower()
            continue
        if block not in ("bash", "sh", "shell", "console"):
            continue
        text = pending + raw.strip()
        if text.endswith("\\"):
            pending = text[:-1] + " "
            continue
        pending = ""
        text = re.sub(r"^\$\s+", "", text)
        if text and not text.startswith("#"):
            lines.append(text)
    return lines


def _program(word: str) -> str:
    return word.removeprefix(".venv/bin/")


def classify(line: str) -> tuple[Command | None, str]:
    """(command to run, "") or (None, why it is not run)."""
    try:
        argv = shlex.split(line, comments=True)
    except ValueError:
        return None, "not a plain command"
    if not argv:
        return None, "empty"
    if argv[0] == "eval" and len(argv) == 2:
        inner = re.fullmatch(r"\$\((.+ stack env)\)", argv[1])
        if inner:
            return Command(line, shlex.split(inner.group(1)), apply_env=True), ""
    if re.search(r"<[^>]+>", " ".join(argv)):
        return None, "has <placeholders>"
    program = _program(argv[0])
    rest = " ".join([program, *argv[1:]])
    if program == "make":
        return None, "make target (slow or this suite)"
    if any(rest.startswith(server) for server in SERVERS):
        return None, "a server"
    if program not in CLIS:
        return None, "not one of the project's CLIs"
    if program == "analytics-assets" and argv[1:2] == ["demo"]:
        return None, "the demo (what `make demo` runs)"
    return Command(line, argv), ""


def partition_dates(commands: list[Command]) -> set[dt.date]:
    """Every day the README's `--partition` / `--partition-range A...B` arguments name."""
    days = set()
    for command in commands:
        text = " ".join(command.argv)
        for match in re.finditer(rf"--partition(?:-range)?[ =]({DATE})(?:\.\.\.({DATE}))?", text):
            first = dt.date.fromisoformat(match.group(1))
            last = dt.date.fromisoformat(match.group(2) or match.group(1))
            days |= {first + dt.timedelta(days=i) for i in range((last - first).days + 1)}
    return days


def history_windows(commands: list[Command]) -> list[tuple[dt.date, dt.date]]:
    """First and last day of each README `traffic history` that names its `--end`."""
    out = []
    for command in commands:
        argv = command.argv
        if argv[1:3] != ["traffic", "history"] or "--end" not in argv:
            continue
        end = dt.date.fromisoformat(argv[argv.index("--end") + 1])
        days = int(argv[argv.index("--days") + 1]) if "--days" in argv else 30
        out.append((end - dt.timedelta(days=days), end - dt.timedelta(days=1)))
    return out


def adjust(command: Command, dates: set[dt.date]) -> tuple[list[str], str]:
    """The argv to run and a note on what differs from the README."""
    argv = list(command.argv)
    argv[0] = str(BIN / _program(argv[0]))
    words = argv[1:]
    notes = []
    if words[:2] == ["traffic", "live"] and "--seconds" in words:
        index = argv.index("--seconds") + 1
        notes.append(f"--seconds {argv[index]} -> {LIVE_SECONDS}")
        argv[index] = LIVE_SECONDS
    if words[:2] == ["traffic", "history"] and "--end" not in words and dates:
        end = max(dates) + dt.timedelta(days=1)
        argv += ["--end", end.isoformat()]
        notes.append(f"added --end {end} so the history covers the README's dates")
        span = (end - min(dates)).days
        days = int(argv[argv.index("--days") + 1]) if "--days" in argv else 30
        if span > days:
            if "--days" in argv:
                argv[argv.index("--days") + 1] = str(span)
            else:
                argv += ["--days", str(span)]
            notes.append(f"--days {days} -> {span} (the README's dates span {span} days)")
    return argv, "; ".join(notes)


def split_compound(line: str) -> list[str]:
    """`a; b && c  # note` -> [a, b, c] (quotes respected, comment dropped)."""
    lexer = shlex.shlex(line, posix=False, punctuation_chars=";&|")
    lexer.whitespace_split = True
    parts, current = [], []
    for token in lexer:
        if token in (";", "&&"):
            parts.append(" ".join(current))
            current = []
        else:
            current.append(token)
    parts.append(" ".join(current))
    return [p for p in parts if p.strip()]


def artifacts_dir() -> Path:
    root = os.environ.get("ANALYTICS_TEST_ARTIFACTS") or PROJECT_ROOT / ".data/test-artifacts"
    path = Path(root) / "readme"
    path.mkdir(parents=True, exist_ok=True)
    return path


def test_readme_commands_run_on_a_fresh_stack(own_server_dir):
    planned, skipped = [], []
    for line in shell_lines(README.read_text()):
        for part in split_compound(line):
            command, why = classify(part)
            if command is None:
                skipped.append(f"{part}    [{why}]")
            else:
                planned.append(command)
    down = [c for c in planned if c.argv[1:3] == ["stack", "down"]]
    planned = [c for c in planned if c not in down]
    assert any(c.argv[1:3] == ["stack", "up"] for c in planned), "the README starts the stack"
    assert any(c.argv[1:3] == ["asset", "materialize"] for c in planned), (
        "the README shows `dagster asset materialize`"
    )
    dates = partition_dates(planned)
    today = dt.datetime.now(dt.UTC).date()
    for day in sorted(dates):
        assert dt.date.fromisoformat(DEFAULT_START_DATE) <= day < today, (
            f"README partition {day} is outside {DEFAULT_START_DATE}..yesterday"
        )
    for first, last in history_windows(planned):
        outside = sorted(d.isoformat() for d in dates if not first <= d <= last)
        assert not outside, (
            f"README partitions {outside} hold no data: its `traffic history` loads {first}..{last}"
        )

    env = {k: v for k, v in os.environ.items() if not PROJECT_ENV.match(k)}
    env["ANALYTICS_DATA_DIR"] = str(own_server_dir)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    with open(artifacts_dir() / "commands.log", "w") as log:
        log.write("not run:\n" + "".join(f"  {s}\n" for s in skipped) + "\n")
        try:
            ran: set[tuple[str, ...]] = set()
            for command in planned:
                words = (_program(command.argv[0]), *command.argv[1:])
                if words in ran and not command.apply_env:
                    log.write(f"$ {command.line}\n  not run again: the same command ran above\n")
                    continue
                ran.add(words)
                _run(command, env, dates, log)
            _assert_marts_hold(env, dates)
        except BaseException:
            _stack_down(env)  # the server must not outlive a failed test
            raise
        for command in down:
            _run(command, env, set(), log)
        if not down:
            _stack_down(env)


def _stack_down(env: dict[str, str]) -> None:
    subprocess.run(
        [str(BIN / "analytics-assets"), "stack", "down"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        timeout=120,
    )


def _run(command: Command, env: dict[str, str], dates: set[dt.date], log) -> None:
    argv, note = adjust(command, dates)
    started = time.monotonic()
    proc = subprocess.run(
        argv, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    log.write(f"$ {command.line}\n  exit {proc.returncode} in {time.monotonic() - started:.1f}s")
    log.write(f"  ({note})\n" if note else "\n")
    log.flush()
    assert proc.returncode == 0, (
        f"README command failed (exit {proc.returncode}): {command.line}\n"
        f"{(proc.stderr or proc.stdout)[-3000:]}"
    )
    if command.apply_env:
        env.update(_exports(proc.stdout))


def _exports(output: str) -> dict[str, str]:
    values = {}
    for line in output.splitlines():
        words = shlex.split(line)
        if len(words) == 2 and words[0] == "export" and "=" in words[1]:
            key, value = words[1].split("=", 1)
            values[key] = value
    assert values, f"`stack env` printed no exports:\n{output}"
    return values


def _assert_marts_hold(env: dict[str, str], dates: set[dt.date]) -> None:
    """Every partition the README materializes is in marts.daily_revenue, with orders."""
    if not dates:
        return
    con = duckdb.connect(env["WAREHOUSE_PATH"], read_only=True)
    try:
        rows = dict(
            con.execute("select revenue_date, order_count from marts.daily_revenue").fetchall()
        )
    finally:
        con.close()
    missing = sorted(d.isoformat() for d in dates if not rows.get(d))
    assert not missing, f"README partitions without data in marts.daily_revenue: {missing}"
