"""Killing an ingest process at an exact moment: the process runs with CDC_PAUSE_AT (lib/cdc.py
`pause_at`), stops at the named stage and says so in a file with its PID; the test waits for
that file (no sleeping for a guess) and SIGKILLs the PID, so no `finally` block runs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

INGEST_CLI = [sys.executable, "-m", "analytics_assets.cli", "cdc", "ingest", "--quiet"]
PAUSE_TIMEOUT = 300.0  # a bound for a stuck process, far above what reaching a stage takes


class PausePoint:
    """`<dir>` for CDC_PAUSE_AT=`<stage>:<hit>:<dir>`; `wait()` returns the paused PID."""

    def __init__(self, directory: Path, stage: str, hit: int = 1):
        directory.mkdir(parents=True)
        self.directory = directory
        self.spec = f"{stage}:{hit}:{directory}"

    def paused_pid(self) -> int | None:
        path = self.directory / "paused"
        return int(path.read_text()) if path.exists() else None

    def wait(self, alive=lambda: True) -> int:
        """The PID of the paused process, once there is one; fails if `alive()` turns false
        first (the process ended without reaching the stage)."""
        deadline = time.monotonic() + PAUSE_TIMEOUT
        while (pid := self.paused_pid()) is None:
            assert alive(), "the process ended before it reached the pause point"
            assert time.monotonic() < deadline, f"nothing paused at {self.spec}"
            time.sleep(0.05)
        return pid


def kill_cli_ingest_at(env: dict, point: PausePoint) -> None:
    """Run `analytics-assets cdc ingest` until it reaches `point`, then SIGKILL it."""
    proc = subprocess.Popen(
        INGEST_CLI,
        env={**env, "CDC_PAUSE_AT": point.spec},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        pid = point.wait(alive=lambda: proc.poll() is None)
        assert pid == proc.pid
        os.kill(pid, signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()


def cli_ingest(env: dict) -> subprocess.CompletedProcess:
    """A clean `analytics-assets cdc ingest` to the end."""
    return subprocess.run(INGEST_CLI, env=env, capture_output=True, text=True, timeout=600)
