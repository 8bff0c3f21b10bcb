"""Fixtures for the browser test: Debian's headless Chromium driven by Playwright, a Dagster
instance on the embedded Postgres server, and the webserver and daemon serving the project."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import dagster as dg
import psycopg2
import pytest

from analytics_assets.settings import PROJECT_ROOT

CHROMIUM = "/usr/bin/chromium"
# As root Chromium needs --no-sandbox; the rest keeps it from calling home during the test.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SERVER_START_TIMEOUT = 120.0


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    """Screenshots and the server log land here and stay after the run."""
    root = Path(os.environ.get("ANALYTICS_TEST_ARTIFACTS") or PROJECT_ROOT / ".data/test-artifacts")
    path = root / "ui"
    shutil.rmtree(path, ignore_errors=True)  # no stale failure.png from an earlier run
    path.mkdir(parents=True)
    return path


@pytest.fixture(scope="module")
def browser():
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(
            f"{CHROMIUM} is missing: run `bash .ci/install-browser` (installs Debian's chromium "
            "and chromium-driver), then run the tests again.",
            pytrace=False,
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail(
            "the `playwright` package is missing: `make install` (it is in the [dev] extra).",
            pytrace=False,
        )
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def dagster_storage_db(pg_stack):
    """A fresh database on the embedded server for Dagster's run, event and schedule storage."""
    name = f"dagster_ui_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(pg_stack.url("postgres"))
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'create database "{name}"')
    yield name
    with admin.cursor() as cur:
        cur.execute(f'drop database if exists "{name}" with (force)')
    admin.close()


@pytest.fixture
def dagster_home(platform_env, dagster_storage_db, tmp_path, monkeypatch):
    """DAGSTER_HOME with the project's own dagster.yaml (Postgres storage on the embedded server,
    queued run coordinator, concurrency limits), in a fresh database; set for this process too,
    so in-process runs and the servers share one instance."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(PROJECT_ROOT / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("DAGSTER_PG_DB", dagster_storage_db)
    with dg.DagsterInstance.get():  # creates the storage schema before any server starts
        pass
    return home


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Service:
    """A Dagster process (webserver, daemon or a CLI command) run from the project root, in its
    own process group with the code server and run workers it starts, and stopped as a whole."""

    def __init__(self, name: str, args: list[str], log_path: Path):
        self.name = name
        self.log_path = log_path
        self._log = open(log_path, "w")  # closed in stop()
        executable = os.path.join(os.path.dirname(sys.executable), name)
        self.proc = subprocess.Popen(
            [executable, *args],
            cwd=PROJECT_ROOT,
            env=dict(os.environ),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def log_tail(self, lines: int = 40) -> str:
        self._log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def wait_http(self, url: str, timeout: float = SERVER_START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(url, timeout=2) as resp:
                    if resp.status == 200:
                        return
            time.sleep(0.5)
        pytest.fail(f"{self.name} did not answer within {timeout:.0f}s:\n{self.log_tail()}")

    def wait_exit(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{self.name} did not finish within {timeout:.0f}s:\n{self.log_tail()}")

    def terminate(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()

    def stop(self) -> None:
        """SIGTERM (the process stops its code server), then SIGKILL to whatever of its process
        group is left."""
        try:
            if self.proc.poll() is None:
                self.proc.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(timeout=20)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        finally:
            self._log.close()


class DagsterServices:
    """`dagster dev` in two steps: the webserver first, the daemon when the test says so (after
    pausing the automation, so no sensor starts a run the test did not ask for)."""

    def __init__(self, artifacts_dir: Path):
        self.artifacts_dir = artifacts_dir
        self.running: list[Service] = []
        self._webserver: Service | None = None
        self.url = ""

    def start_webserver(self) -> None:
        """Starts it without waiting (it loads the code location while the test prepares)."""
        port = free_port()
        args = ["-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)]
        self._webserver = self._start("dagster-webserver", args)
        self.url = f"http://127.0.0.1:{port}"

    def wait_webserver(self) -> str:
        self._webserver.wait_http(f"{self.url}/server_info")
        return self.url

    def start_daemon(self) -> None:
        self._start("dagster-daemon", ["run", "-w", "workspace.yaml"])

    def start_cli(self, args: list[str], log_name: str) -> Service:
        """A `dagster ...` command in the background (stopped at teardown if still running)."""
        return self._start("dagster", args, log_name)

    def _start(self, name: str, args: list[str], log_name: str | None = None) -> Service:
        service = Service(name, args, self.artifacts_dir / f"{log_name or name}.log")
        self.running.append(service)
        return service

    def stop(self) -> None:
        for service in self.running:
            service.terminate()
        for service in reversed(self.running):
            service.stop()


@pytest.fixture
def dagster_services(dagster_home, artifacts_dir):
    """Stopped at teardown, before the storage database is dropped."""
    services = DagsterServices(artifacts_dir)
    yield services
    services.stop()
