"""Two ingest runs at once for the same tables: only one consumes. The other waits for the
warehouse and then finds nothing to do, or stops with one line naming the ingest that runs
(warehouse file lock, or the slot's ingest lock). Either way raw == source, nothing twice.

The refusal is provoked deterministically: the first ingest is paused (SIGSTOP) once it holds
the locks, so the second meets them however loaded the machine is."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import psycopg2
import psycopg2.extras
import pytest
from reliability_helpers import load_backlog, logged_changes

from analytics_assets.lib.errors import IngestBusy

ROWS = 40_000


CLI_INGEST = [sys.executable, "-m", "analytics_assets.cli", "cdc", "ingest", "--quiet"]


def _start(env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        CLI_INGEST,
        env={**env, "CDC_BATCH_SIZE": "2000"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(proc: subprocess.Popen) -> subprocess.CompletedProcess:
    out, err = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def two_cli_ingests(env: dict) -> list[subprocess.CompletedProcess]:
    procs = [_start(env) for _ in range(2)]
    return [_finish(proc) for proc in procs]


def _wait_for_ingest_lock(cdc, proc: subprocess.Popen) -> None:
    """Until `proc` holds the slot's ingest lock, which it takes after opening the warehouse."""
    session = f"analytics_assets_cdc pid {proc.pid}"
    deadline = time.monotonic() + 300
    while not cdc.query(
        "select 1 from pg_locks l join pg_stat_activity a on a.pid = l.pid "
        "where l.locktype = 'advisory' and l.granted and a.application_name = %s",
        (session,),
    ):
        assert proc.poll() is None, _finish(proc).stderr
        assert time.monotonic() < deadline, "the first ingest never took the ingest lock"
        time.sleep(0.05)


def ingest_while_another_holds_the_warehouse(cdc, env: dict):
    """The first ingest is stopped (SIGSTOP) while it holds the warehouse and the ingest lock;
    the second runs to its end meanwhile; then the first goes on. No timing involved."""
    first = _start(env)
    try:
        _wait_for_ingest_lock(cdc, first)
        os.kill(first.pid, signal.SIGSTOP)
        try:
            second = _finish(_start(env))
        finally:
            os.kill(first.pid, signal.SIGCONT)
        return _finish(first), second
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()


def applied(proc: subprocess.CompletedProcess) -> int:
    match = re.search(r"\[cdc\] (\d+) changes applied", proc.stdout)
    assert match, proc.stdout + proc.stderr
    return int(match.group(1))


@pytest.mark.parametrize("wait", ["no wait", "wait"])
def test_two_ingest_processes_at_once_one_consumes(cdc, cli_env, wait):
    streamed = load_backlog(cdc, ROWS)
    before = logged_changes(cdc)
    t0 = time.monotonic()
    if wait == "wait":
        # both at once: whichever opens the warehouse first drains the feed; the other waits
        first, second = two_cli_ingests({**cli_env, "WAREHOUSE_LOCK_TIMEOUT_SECONDS": "120"})
    else:
        first, second = ingest_while_another_holds_the_warehouse(
            cdc, {**cli_env, "WAREHOUSE_LOCK_TIMEOUT_SECONDS": "0"}
        )
    seconds = time.monotonic() - t0
    codes = sorted([first.returncode, second.returncode])
    ok = [p for p in (first, second) if p.returncode == 0]
    busy = [p for p in (first, second) if p.returncode != 0]
    if wait == "wait":
        assert codes == [0, 0], first.stderr + second.stderr
        # one drained the feed, the other waited for the warehouse and found nothing to do
        assert sorted(applied(p) for p in ok) == [0, streamed]
    else:
        assert (first.returncode, second.returncode) == (0, 2), first.stderr + second.stderr
        assert applied(first) == streamed
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in second.stderr, second.stderr
        assert re.search(r"another (ingest|process)", lines[0]) and "PID" in lines[0], lines[0]
    cdc.assert_raw_equals_source()
    cdc.assert_change_log_has_no_duplicates()
    assert logged_changes(cdc) == before + streamed  # consumed once: nothing lost, nothing twice
    print(
        f"\n[busy] {wait}: exits {codes} in {seconds:.2f}s; "
        + (f"refused: {busy[0].stderr.strip()}" if busy else "second found nothing to do")
        + f"\n[busy] rows compared {sum(len(cdc.source_rows(t)) for t in cdc.tables)}, "
        f"changes {logged_changes(cdc) - before} of {streamed}"
    )


def test_a_second_ingest_on_the_same_slot_is_refused_by_the_ingest_lock(cdc, tmp_path):
    """Two ingests into different warehouse files (so no file lock stops the second): the slot's
    ingest lock does, naming the first one's session and client process."""
    cdc.execute("insert into users (email) values ('a@example.com')")
    cdc.ingest()
    first = cdc.feed()
    try:
        first.needs_snapshot(["users"], {})  # the first ingest has started: it holds the lock
        from analytics_assets.lib.cdc import ingest
        from analytics_assets.lib.warehouse.duckdb import DuckDBWarehouse

        other = DuckDBWarehouse(tmp_path / "other.duckdb")
        try:
            with pytest.raises(IngestBusy) as caught:
                ingest(feed=cdc.feed(), warehouse=other, measure_lag=False)
        finally:
            other.close()
    finally:
        first.close()
    message = str(caught.value)
    assert "\n" not in message and cdc.slot in message
    assert f"analytics_assets_cdc pid {os.getpid()}" in message  # which process: this one
    assert cdc.ingest().changes == 0  # released with close(): the next ingest runs
    cdc.assert_raw_equals_source()


def test_slot_streamed_by_another_session_is_ingest_busy(cdc):
    """A foreign consumer streams the project's slot: the ingest says who, in one line."""
    cdc.execute("insert into users (email) values ('a@example.com')")
    cdc.ingest()
    cdc.execute("insert into users (email) values ('b@example.com')")
    repl = psycopg2.connect(
        cdc.url, connection_factory=psycopg2.extras.LogicalReplicationConnection
    )
    try:
        with repl.cursor() as cur:
            cur.start_replication(
                slot_name=cdc.slot,
                decode=False,
                options={"proto_version": "1", "publication_names": cdc.publication},
            )
            pid = repl.get_backend_pid()
            with pytest.raises(IngestBusy) as caught:
                cdc.ingest()
    finally:
        repl.close()
    message = str(caught.value)
    assert f"backend PID {pid}" in message and "\n" not in message
    cdc.ingest()  # the consumer is gone: the change arrives, once
    cdc.assert_raw_equals_source()
    cdc.assert_change_log_has_no_duplicates()
