"""`analytics-dbt` (lib/dbt_warm.py) is `dbt`, forked from a warm server: the same output and exit
status as `dbt` itself, the command's environment and working directory, and a signal sent to
the command reaches the dbt it runs. Each test has its own server (its own TMPDIR)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from analytics_assets.lib.warehouse import turns
from analytics_assets.lib.warehouse.duckdb import connect_waiting
from tests.dbt.test_dbt_project import PROJECT_DIR, _without_gcp_settings, project_args
from tests.raw_tables import create_raw_tables

WARM = Path(sys.executable).with_name("analytics-dbt")
COLD = Path(sys.executable).with_name("dbt")


def _wait_until(condition, what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


class Server:
    """Commands run with their own TMPDIR, hence their own warm server."""

    def __init__(self, tmp: Path):
        self.tmpdir = Path(tempfile.mkdtemp(prefix="dw", dir="/tmp"))  # short: a socket path
        self.tmp = tmp
        self.env = _without_gcp_settings(dict(os.environ))
        self.env.update(TMPDIR=str(self.tmpdir), DBT_SEND_ANONYMOUS_USAGE_STATS="false")

    def command(self, executable: Path, *args: str) -> list[str]:
        return [str(executable), *args, *project_args(self.tmp)]

    def run(self, executable: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run(  # noqa: S603 - fixed argv
            self.command(executable, *args),
            cwd=PROJECT_DIR,
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=300,
        )

    def sockets(self) -> list[Path]:
        return list(self.tmpdir.glob("analytics-dbt-*/*.sock"))

    def listening(self) -> bool:
        for path in self.sockets():
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                try:
                    probe.connect(str(path))
                    return True
                except OSError:
                    pass
        return False

    def served(self) -> list[str]:
        logs = list(self.tmpdir.glob("analytics-dbt-*/*.sock.log"))
        return logs[0].read_text().splitlines() if logs else []

    def stop(self) -> None:
        from analytics_assets.lib.dbt_warm import stop_server

        for path in self.sockets():
            stop_server(path)


@pytest.fixture
def server(tmp_path):
    started = Server(tmp_path)
    # the first command finds no server: it runs dbt as usual and starts one
    first = started.run(WARM, "ls", "--select", "tag:realtime", "-q")
    assert first.returncode == 0, first.stdout + first.stderr
    _wait_until(started.listening, "the warm dbt server to listen")
    started.first = first
    yield started
    started.stop()


def test_a_warm_command_prints_and_exits_as_dbt_does(server):
    warm = server.run(WARM, "ls", "--select", "tag:realtime", "-q")
    assert warm.returncode == 0, warm.stdout + warm.stderr
    assert warm.stdout == server.first.stdout
    assert "revenue_minutely" in warm.stdout
    assert warm.stderr == ""
    assert any("exit 0: dbt ls --select tag:realtime" in line for line in server.served())

    bad_warm = server.run(WARM, "ls", "--select", "nonsense:x")
    bad_cold = server.run(COLD, "ls", "--select", "nonsense:x")
    assert bad_warm.returncode == bad_cold.returncode != 0
    assert "nonsense" in bad_warm.stdout + bad_warm.stderr
    assert any(f"exit {bad_cold.returncode}: dbt ls" in line for line in server.served())


def test_a_warm_command_runs_in_its_own_environment(server, tmp_path):
    """The profile reads WAREHOUSE_PATH from the command's environment, not the server's."""
    warehouse = tmp_path / "mine.duckdb"
    create_raw_tables(warehouse)
    done = server.run(WARM, "run", "--select", "stg_app__orders", WAREHOUSE_PATH=str(warehouse))
    assert done.returncode == 0, done.stdout + done.stderr
    import duckdb

    with duckdb.connect(str(warehouse), read_only=True) as con:
        assert con.execute("select count(*) from staging.stg_app__orders").fetchone()[0] >= 0


@contextlib.contextmanager
def _command_in_progress(server: Server, tmp_path: Path):
    """A warm `dbt run` whose dbt waits for the warehouse this test holds (stdout: a pipe)."""
    warehouse = tmp_path / "held.duckdb"
    create_raw_tables(warehouse)
    mine = connect_waiting(warehouse, 5)
    try:
        command = subprocess.Popen(  # noqa: S603 - fixed argv
            server.command(WARM, "run", "--select", "stg_app__orders"),
            cwd=PROJECT_DIR,
            env={**server.env, "WAREHOUSE_PATH": str(warehouse)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        _wait_until(lambda: turns._someone_waiting(warehouse), "dbt to wait for the warehouse")
        yield command, warehouse
    finally:
        mine.close()


def _ended(server: Server, code: int) -> bool:
    return any(f"exit {code}: dbt run" in line for line in server.served())


def test_a_signal_to_the_command_reaches_the_dbt_it_runs(server, tmp_path):
    with _command_in_progress(server, tmp_path) as (command, _):
        command.send_signal(signal.SIGTERM)
        output, _ = command.communicate(timeout=60)
        assert command.returncode == 128 + signal.SIGTERM, output
        _wait_until(lambda: _ended(server, 128 + signal.SIGTERM), "the server to see it end")


def test_a_command_killed_outright_takes_its_dbt_along(server, tmp_path):
    """A run worker killed with SIGKILL cannot forward anything: the server sees the command's
    end of the socket close and kills its dbt, which would otherwise go on waiting for (or
    holding) the warehouse after its run is gone."""
    with _command_in_progress(server, tmp_path) as (command, warehouse):
        command.kill()
        command.communicate(timeout=60)
        _wait_until(
            lambda: _ended(server, 128 + signal.SIGKILL),
            "the server to kill the dbt of the command that went away",
        )
        assert not turns._someone_waiting(warehouse), "no dbt waits for the warehouse any more"


def test_a_command_gone_before_its_request_is_in_leaves_the_server_serving(server):
    (path,) = server.sockets()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as half:
        half.connect(str(path))
        socket.send_fds(half, [b"R"], [0, 1, 2])
        half.sendall(b"\0\0")  # half of the request's length, then gone
    warm = server.run(WARM, "ls", "--select", "tag:realtime", "-q")
    assert warm.returncode == 0, warm.stdout + warm.stderr
    assert warm.stdout == server.first.stdout
    assert any("exit 0: dbt ls --select tag:realtime" in line for line in server.served())
