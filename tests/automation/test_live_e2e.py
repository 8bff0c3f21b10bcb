"""End to end: live traffic into the source while `dagster dev` (webserver + daemon) runs the
project's sensors; the raw tables and revenue_minutely catch up without anyone clicking."""

from __future__ import annotations

import datetime as dt
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import duckdb
import psycopg2
import pytest

from analytics_assets.dev.traffic import generate_history, run_live


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _warehouse(path, query):
    try:
        con = duckdb.connect(str(path), read_only=True)
    except duckdb.IOException:
        return None  # a run holds the write lock right now
    try:
        return con.execute(query).fetchall()
    except duckdb.CatalogException:
        return None
    finally:
        con.close()


def _source(url, query):
    conn = psycopg2.connect(url)
    with conn.cursor() as cur:
        cur.execute(query)
        rows = cur.fetchall()
    conn.close()
    return rows


@pytest.fixture
def dagster_dev(platform_env, tmp_path, monkeypatch):
    monkeypatch.setenv("CDC_LAG_MAX_PENDING", "1")
    monkeypatch.setenv("CDC_LAG_MAX_SECONDS", "1")
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = dict(os.environ, DAGSTER_HOME=str(home))
    log = open(tmp_path / "dagster_dev.log", "w")
    proc = subprocess.Popen(
        [
            os.path.join(os.path.dirname(sys.executable), "dagster"),
            "dev",
            "-w",
            "workspace.yaml",
            "-h",
            "127.0.0.1",
            "-p",
            str(_free_port()),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))),
    )
    yield proc, tmp_path / "dagster_dev.log"
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    log.close()


def test_sensors_keep_raw_and_revenue_minutely_caught_up_under_live_traffic(
    platform_env, dagster_dev
):
    url, warehouse = platform_env.source.url, platform_env.warehouse.path
    conn = psycopg2.connect(url)
    generate_history(conn, days=2, orders_per_day=30, seed=8)
    stop = threading.Event()
    traffic = threading.Thread(
        target=run_live,
        args=(conn,),
        kwargs={"rate": 20, "seconds": 40, "seed": 3, "stop": stop.is_set},
        daemon=True,
    )
    traffic.start()
    _, log_path = dagster_dev
    deadline = time.time() + 420
    caught_up = False
    try:
        traffic.join(timeout=60)
        expected_orders = None
        while time.time() < deadline:
            expected_orders = _source(url, "select count(*) from orders")[0][0]
            newest = _source(url, "select date_trunc('minute', max(created_at)) from orders")[0][0]
            raw = _warehouse(warehouse, "select count(*) from raw.orders where not _is_deleted")
            minute = _warehouse(warehouse, "select max(revenue_minute) from marts.revenue_minutely")
            if raw and minute and raw[0][0] == expected_orders and minute[0][0] is not None:
                got = (
                    minute[0][0].replace(tzinfo=dt.UTC)
                    if minute[0][0].tzinfo is None
                    else minute[0][0]
                )
                if got >= newest:
                    caught_up = True
                    break
            time.sleep(5)
    finally:
        stop.set()
        conn.close()
    assert caught_up, (
        f"not caught up: source {expected_orders} orders; see the daemon log:\n"
        + log_path.read_text()[-3000:]
    )
