"""Another process holds the DuckDB warehouse file open for writing: ingest (library and CLI)
waits a bounded, configurable time, then fails with one line naming that process, and leaves no
partial state; once the other process lets go, ingest succeeds and raw == source."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from analytics_assets.lib.cdc import ingest
from analytics_assets.lib.errors import WarehouseLocked
from analytics_assets.lib.warehouse.duckdb import DuckDBWarehouse

SECRET_DSN = "postgresql://app:Hunter2-secret@db.internal/app"
HOLD = (
    "import duckdb, sys; con = duckdb.connect(sys.argv[2]); "
    "print('locked', flush=True); sys.stdin.read()"  # holds the file until stdin closes
)


@pytest.fixture
def holder(cdc):
    """Start a process that holds `cdc`'s warehouse file; `.release()` lets it go."""
    procs = []
    # a short script path, so the DSN (with a password) on the holder's command line is within
    # what the error shows of it
    script = Path(tempfile.mkstemp(suffix=".py", prefix="hold")[1])
    script.write_text(HOLD)

    class Holder:
        def start(self):
            proc = subprocess.Popen(
                [sys.executable, str(script), SECRET_DSN, str(cdc.tmp / f"{cdc.db}.duckdb")],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            procs.append(proc)
            assert proc.stdout.readline().strip() == "locked"
            self.pid = proc.pid
            return self

        def release(self):
            proc = procs[-1]
            proc.stdin.close()
            proc.wait(timeout=30)

    yield Holder()
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    script.unlink()


def seed(cdc, n: int, start: int = 0) -> None:
    cdc.execute(
        "insert into users (email, full_name, country) select 'user' || g || '@example.com', "
        "'Name ' || g, 'DE' from generate_series(%s, %s) g",
        params=(start + 1, start + n),
    )


def warehouse_counts(cdc) -> dict[str, int]:
    return {
        t: cdc.raw(f"select count(*) from raw.{t}_changes")[0][0]  # noqa: S608
        for t in cdc.tables
    }


def test_locked_warehouse_is_a_clear_bounded_error_then_ingest_succeeds(cdc, holder, cli_env):
    seed(cdc, 500)
    cdc.ingest()
    seed(cdc, 700, start=500)
    cdc.execute("update users set country = 'IT' where id % 3 = 0")
    slot_before, counts_before = cdc.slot_confirmed(), warehouse_counts(cdc)
    path = cdc.tmp / f"{cdc.db}.duckdb"
    holder.start()

    # the library: waits lock_timeout, then names the holder
    t0 = time.monotonic()
    with pytest.raises(WarehouseLocked) as caught:
        DuckDBWarehouse(path, lock_timeout=1.5)
    waited = time.monotonic() - t0
    message = str(caught.value)
    assert 1.4 < waited < 10
    assert f"PID {holder.pid}" in message and str(path) in message and "\n" not in message
    assert "app:***@db.internal" in message and "Hunter2" not in message

    # the CLI: one line, exit 2, no traceback, within the configured bound
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "analytics_assets.cli", "cdc", "ingest", "--quiet"],
        env={**cli_env, "WAREHOUSE_LOCK_TIMEOUT_SECONDS": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    cli_seconds = time.monotonic() - t0
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and f"PID {holder.pid}" in lines[0]
    assert "Traceback" not in proc.stderr and "Hunter2" not in proc.stderr

    # no partial state: the slot did not move (nothing acknowledged)...
    assert cdc.slot_confirmed() == slot_before

    # ...and an ingest that waits long enough goes through once the holder lets go
    outcome = {}

    def run():
        wh = DuckDBWarehouse(path, lock_timeout=60)
        try:
            outcome["result"] = ingest(feed=cdc.feed(), warehouse=wh, measure_lag=False)
        finally:
            wh.close()

    thread = threading.Thread(target=run)
    thread.start()
    time.sleep(1.0)
    assert thread.is_alive(), "the ingest waits for the lock"
    holder.release()
    thread.join(60)
    assert not thread.is_alive()
    assert outcome["result"].tables["users"].changes_by_op == {"c": 700, "u": 400}
    cdc.assert_raw_equals_source()
    cdc.assert_change_log_has_no_duplicates()
    after = warehouse_counts(cdc)
    assert after["users"] == counts_before["users"] + 1100  # nothing lost, nothing twice
    print(
        f"\n[lock] library refused after {waited:.2f}s, CLI after {cli_seconds:.2f}s: {lines[0]}"
        f"\n[lock] rows compared {sum(len(cdc.source_rows(t)) for t in cdc.tables)}"
    )


def test_a_cli_ingest_publishes_the_read_copy_readers_open(cdc, cli_env):
    import duckdb

    seed(cdc, 40)
    proc = subprocess.run(
        [sys.executable, "-m", "analytics_assets.cli", "cdc", "ingest", "--quiet"],
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    warehouse = Path(cli_env["WAREHOUSE_PATH"])
    con = duckdb.connect(str(warehouse.parent / "read" / warehouse.name), read_only=True)
    try:
        assert con.execute("select count(*) from raw.users").fetchone()[0] == 40
    finally:
        con.close()
