"""Writers take turns on the dev DuckDB warehouse (lib/warehouse/turns.py): a dbt invocation that
opens the file per node lets another writer in between its nodes and waits for its own turn
instead of failing, and a process publishing the read copy keeps the file while it copies."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import duckdb
import pytest

from analytics_assets.lib.read_copy import publish_read_copy
from analytics_assets.lib.warehouse import turns
from analytics_assets.lib.warehouse.duckdb import connect_waiting
from analytics_assets.settings import get_settings
from tests.dbt.test_dbt_project import (
    PROJECT_DIR,
    _dbt_executable,
    _without_gcp_settings,
    project_args,
)
from tests.raw_tables import create_raw_tables

# Another writer as an ingest is: its own process; takes its turn, says so, holds the file until
# stdin closes.
WRITER = (
    "import sys; from pathlib import Path\n"
    "from analytics_assets.lib.warehouse.duckdb import connect_waiting\n"
    "con = connect_waiting(Path(sys.argv[1]), 300)\n"
    "con.execute('create table if not exists writer_was_here as select 1 as x')\n"
    "print('got', flush=True); sys.stdin.read(); con.close()\n"
)
TRY_OPEN = "import duckdb, sys; duckdb.connect(sys.argv[1]).close()"


def _wait_until(condition, what: str, timeout: float = 120.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


@pytest.fixture
def warehouse(tmp_path: Path) -> Path:
    path = tmp_path / "warehouse.duckdb"
    create_raw_tables(path)
    return path


def test_dbt_waits_for_its_turn_instead_of_failing(warehouse, tmp_path):
    mine = connect_waiting(warehouse, 5)  # held first: dbt must wait, not fail
    env = _without_gcp_settings(dict(os.environ))
    env.update(
        WAREHOUSE_PATH=str(warehouse),
        DBT_DUCKDB_KEEP_OPEN="False",
        DBT_SEND_ANONYMOUS_USAGE_STATS="false",
    )
    dbt = subprocess.Popen(  # noqa: S603 - fixed argv
        [
            _dbt_executable(),
            "run",
            "--select",
            "staging",
            *project_args(tmp_path),
        ],
        cwd=PROJECT_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        _wait_until(lambda: turns._someone_waiting(warehouse), "dbt to wait for its turn")
        mine.execute("create table writer_was_here as select 1 as x")
        mine.close()
        output, _ = dbt.communicate(timeout=300)
    finally:
        if dbt.poll() is None:
            dbt.kill()
            dbt.wait()
    assert dbt.returncode == 0, output
    assert "ERROR=0" in output, output
    with duckdb.connect(str(warehouse), read_only=True) as con:
        views = con.execute(
            "select count(*) from information_schema.tables where table_schema = 'staging'"
        ).fetchone()[0]
        assert con.execute("select x from writer_was_here").fetchall() == [(1,)]
    assert views >= 4


# A writer that opens the file once per step, as dbt does node by node with keep_open false:
# for each line on stdin it waits for its turn (politely), opens, writes, says so, closes.
PER_NODE = (
    "import sys, duckdb; from pathlib import Path\n"
    "from analytics_assets.lib.warehouse import turns\n"
    "path = Path(sys.argv[1])\n"
    "for n, _ in enumerate(sys.stdin, 1):\n"
    "    con = turns.connect(path, 300, polite=True)\n"
    "    con.execute(f'create table node_{n} as select {n} x')\n"
    "    print(f'node {n} done', flush=True)\n"
    "    con.close()\n"
)


def test_a_per_node_writer_lets_a_waiting_writer_in_before_its_next_node(warehouse):
    nodes = subprocess.Popen(  # noqa: S603 - fixed argv
        [sys.executable, "-c", PER_NODE, str(warehouse)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        nodes.stdin.write("1\n")
        nodes.stdin.flush()
        assert nodes.stdout.readline().strip() == "node 1 done"
        # node 2 is asked for at once; this process joins the line before it starts, and the
        # per-node writer lets it go first whenever the file is let go
        got = {}
        waiter = threading.Thread(target=lambda: got.update(con=connect_waiting(warehouse, 300)))
        with turns._announced(warehouse):
            nodes.stdin.write("2\n")
            nodes.stdin.flush()
            waiter.start()
            waiter.join(timeout=300)
        con = got["con"]
        try:
            tables = con.execute("select table_name from information_schema.tables").fetchall()
        finally:
            con.close()
        assert ("node_2",) not in tables, "the per-node writer went first"
        assert ("node_1",) in tables
        assert nodes.stdout.readline().strip() == "node 2 done"
    finally:
        nodes.stdin.close()
        nodes.wait(timeout=60)


def test_publishing_the_read_copy_keeps_the_file_locked_for_its_writer(warehouse, platform_env):
    settings = get_settings()
    con = connect_waiting(warehouse, 5)
    try:
        publish_read_copy(
            type(settings)(**{**settings.__dict__, "warehouse": _at(settings, warehouse)}), con
        )
        # the copy was read while this process held the file, and it still holds it
        other = subprocess.run(
            [sys.executable, "-c", TRY_OPEN, str(warehouse)], capture_output=True, text=True
        )
        assert other.returncode != 0 and "lock" in other.stderr.lower(), other.stderr
    finally:
        con.close()
    assert subprocess.run([sys.executable, "-c", TRY_OPEN, str(warehouse)]).returncode == 0


def _at(settings, path: Path):
    import dataclasses

    return dataclasses.replace(
        settings.warehouse, path=path, read_path=path.parent / "read" / path.name
    )


def test_a_turn_not_given_in_time_is_refused_naming_the_holder(warehouse):
    holder = subprocess.Popen(  # noqa: S603 - fixed argv
        [sys.executable, "-c", WRITER, str(warehouse)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "got"
        with pytest.raises(turns.Refused, match=f"PID {holder.pid}"):
            turns.connect(warehouse, 0.2)
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    turns.connect(warehouse, 60).close()


# A writer in a loop: each turn opens the file, adds one to a counter, closes.
INCREMENT = (
    "import sys; from pathlib import Path\n"
    "from analytics_assets.lib.warehouse.duckdb import connect_waiting\n"
    "for _ in range(int(sys.argv[2])):\n"
    "    con = connect_waiting(Path(sys.argv[1]), 300)\n"
    "    con.execute('update counter set n = n + 1')\n"
    "    con.close()\n"
)


def test_writers_in_a_tight_loop_all_get_their_turns_and_lose_no_write(warehouse):
    # DuckDB opens and closes the file twice before it locks it: a waiter must survive losing
    # that race to another, not fail
    with duckdb.connect(str(warehouse)) as con:
        con.execute("create table counter as select 0 as n")
    writers = [
        subprocess.Popen([sys.executable, "-c", INCREMENT, str(warehouse), "150"])  # noqa: S603
        for _ in range(3)
    ]
    assert [w.wait(timeout=600) for w in writers] == [0, 0, 0]
    with duckdb.connect(str(warehouse), read_only=True) as con:
        assert con.execute("select n from counter").fetchone() == (450,)
