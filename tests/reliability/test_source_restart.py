"""The source PostgreSQL restarts (or its postmaster is killed) in the middle of an ingest run:
the run fails with one clear error within a bounded time, and the next run loses nothing and
duplicates nothing."""

from __future__ import annotations

import os
import signal
import threading
import time

import psutil
import pytest
from reliability_helpers import load_backlog, logged_changes

from analytics_assets.dev import stack
from analytics_assets.lib.errors import SourceUnavailable

ROWS = 20000


def stop(how: str) -> None:
    if how == "kill9":
        info = stack.status()
        pid = int((info.pgdata / "postmaster.pid").read_text().split()[0])
        os.kill(pid, signal.SIGKILL)
        psutil.wait_procs([psutil.Process(pid)], timeout=10)
    else:
        stack.down(quiet=True)


def ingest_bounded(cdc, timeout: float, **kw):
    """Run an ingest on a thread; fail the test if it does not end within `timeout`."""
    outcome: dict = {}

    def run():
        try:
            outcome["result"] = cdc.ingest(**kw)
        except BaseException as exc:  # noqa: BLE001 - inspected by the test
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    t0 = time.monotonic()
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"ingest hung for more than {timeout}s"
    outcome["seconds"] = time.monotonic() - t0
    return outcome


@pytest.mark.parametrize(
    "how, back",
    [
        ("fast", "at once"),  # pg_ctl stop -m fast + start: backends terminated by the server
        ("kill9", "at once"),  # the postmaster killed: crash recovery on the next start
        ("fast", "after the failure"),  # still down when the ingest notices
    ],
)
def test_source_restart_mid_ingest_fails_clearly_then_resumes_without_loss(own_cdc, how, back):
    cdc = own_cdc
    expected = ROWS + load_backlog(cdc, ROWS, batch_size=1000)  # the snapshot, then the rest
    faults = []

    def after_first_batch(progress):
        if not faults:
            faults.append(progress["batch"])
            stop(how)
            if back == "at once":
                stack.up(quiet=True)

    failed = ingest_bounded(cdc, 120, batch_size=1000, progress=after_first_batch)
    assert faults == [1], "the fault hit after the first committed batch"
    error = failed.get("error")
    assert isinstance(error, SourceUnavailable), repr(error)
    message = str(error)
    assert "\n" not in message and "source" in message and "run the ingest again" in message
    assert failed["seconds"] < 60
    if back != "at once":
        stack.up(quiet=True)
    applied_before = logged_changes(cdc)
    assert ROWS < applied_before <= expected  # the first batch stayed committed

    done = ingest_bounded(cdc, 120, batch_size=1000)
    assert "error" not in done, repr(done.get("error"))
    cdc.assert_raw_equals_source()
    cdc.assert_change_log_has_no_duplicates()
    assert logged_changes(cdc) == expected  # nothing lost, nothing applied twice
    print(
        f"\n[fault] {how}/{back}: {type(error).__name__} after {failed['seconds']:.2f}s: "
        f"{message}\n[fault] rows compared {sum(len(cdc.source_rows(t)) for t in cdc.tables)}, "
        f"changes logged {applied_before} before the resume, {logged_changes(cdc)} of "
        f"{expected} after it, resumed in "
        f"{done['seconds']:.2f}s"
    )


def test_source_restart_during_the_initial_snapshot_resumes_without_loss(own_cdc):
    """Killed while the snapshot is being applied (its rows are already spooled from the
    exported snapshot): the snapshot commits, the stream part fails with the one line, and the
    next ingest streams on from the slot, which survived the crash; no second snapshot."""
    cdc = own_cdc
    cdc.execute(
        "insert into users (email) select 'u' || g || '@example.com' from generate_series(1, %s) g",
        params=(ROWS,),
    )
    cdc.execute(
        "insert into orders (user_id, total, status) select g, g, 'new' "
        "from generate_series(1, %s) g",
        params=(ROWS,),
    )
    faults = []

    def kill_after_first_snapshot_batch(stage: str) -> None:
        if stage == "snapshot" and not faults:
            faults.append(stage)
            stop("kill9")
            stack.up(quiet=True)

    failed = ingest_bounded(cdc, 120, batch_size=5000, fault=kill_after_first_snapshot_batch)
    assert isinstance(failed.get("error"), SourceUnavailable), repr(failed.get("error"))
    assert "\n" not in str(failed["error"])
    done = ingest_bounded(cdc, 120, batch_size=5000)
    assert "error" not in done, repr(done.get("error"))
    cdc.assert_raw_equals_source()
    cdc.assert_change_log_has_no_duplicates()
    assert done["result"].snapshot_tables == []
    assert logged_changes(cdc) == 2 * ROWS  # every row once, as a snapshot row
    print(
        f"\n[fault] kill9 during the snapshot: {failed['error']}\n[fault] rows compared "
        f"{2 * ROWS}, changes logged {logged_changes(cdc)} of {2 * ROWS}"
    )
