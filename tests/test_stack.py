"""The embedded stack: idempotent up/down, recovery after a crash, clear errors."""

from __future__ import annotations

import os
import signal
import time

import psutil
import psycopg2
import pytest

from analytics_assets import cli
from analytics_assets.dev import stack


@pytest.fixture
def own_stack(own_server_dir, monkeypatch):
    """A second server in its own data dir, so the session's shared server is not disturbed."""
    monkeypatch.setenv("ANALYTICS_DATA_DIR", str(own_server_dir / "data"))
    monkeypatch.delenv("ANALYTICS_PG_PORT", raising=False)
    yield
    stack.down(quiet=True)


def _query(info, sql):
    conn = psycopg2.connect(info.url("postgres"))
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetchone()[0]
    finally:
        conn.close()


def test_up_up_down_up_is_idempotent(own_stack):
    first = stack.up(quiet=True)
    pid = psutil.Process(int((first.pgdata / "postmaster.pid").read_text().split()[0]))
    second = stack.up(quiet=True)
    assert second == first
    assert pid.is_running(), "a second `up` must not restart the server"
    assert _query(first, "show wal_level") == "logical"
    assert (
        _query(first, "select count(*) from pg_database where datname in ('app', 'dagster')") == 2
    )
    assert stack.down(quiet=True) is True
    assert stack.status() is None
    assert stack.down(quiet=True) is False
    third = stack.up(quiet=True)
    assert _query(third, "select 1") == 1


def test_killed_server_is_recovered_by_stack_up(own_stack):
    info = stack.up(quiet=True)
    conn = psycopg2.connect(info.url("app"))
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("create table survivor (id int primary key)")
        cur.execute("insert into survivor values (1)")
    conn.close()
    pid = int((info.pgdata / "postmaster.pid").read_text().split()[0])
    os.kill(pid, signal.SIGKILL)
    deadline = time.time() + 10
    while psutil.pid_exists(pid) and time.time() < deadline:
        time.sleep(0.1)
    assert stack.status() is None
    recovered = stack.up(quiet=True)
    conn = psycopg2.connect(recovered.url("app"))
    with conn.cursor() as cur:
        cur.execute("select count(*) from survivor")
        assert cur.fetchone()[0] == 1
    conn.close()


def test_env_without_a_running_stack_says_what_to_do(own_stack, capsys):
    assert cli.main(["stack", "env"]) == cli.EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert "stack up" in err and "Traceback" not in err


def test_busy_port_is_a_clear_error(own_stack, monkeypatch):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        monkeypatch.setenv("ANALYTICS_PG_PORT", str(s.getsockname()[1]))
        with pytest.raises(stack.StackError, match="in use"):
            stack.up(quiet=True)
