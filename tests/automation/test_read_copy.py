"""Readers are not locked out: a separate reader process reads the warehouse's read copy while
lag-driven runs hold the DuckDB file, and sees each run's data once the run has reported it."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys

import dagster as dg
import psycopg2
import pytest

from analytics_assets import settings
from analytics_assets.defs.automation.sensors import cdc_lag_sensor
from analytics_assets.dev.traffic import generate_history
from analytics_assets.lib import cdc as cdc_module

END = dt.datetime(2026, 3, 10, tzinfo=dt.UTC)

# A reader as a BI tool or notebook would be: its own process, one command per line on stdin.
# `probe` tries the warehouse file itself; `read` opens the read copy and reads raw and the mart.
READER = """
import json, sys
import duckdb
from analytics_assets.lib.read_copy import connect_read_copy
from analytics_assets.settings import get_settings

for line in sys.stdin:
    if line.strip() == "probe":
        try:
            duckdb.connect(str(get_settings().warehouse.path), read_only=True).close()
            print(json.dumps("free"), flush=True)
        except duckdb.IOException as exc:
            print(json.dumps("locked" if "lock" in str(exc).lower() else str(exc)), flush=True)
        continue
    con = connect_read_copy(get_settings())
    try:
        orders = con.execute("select count(*) from raw.orders where not _is_deleted").fetchone()[0]
        minutely = con.execute("select sum(order_count) from marts.revenue_minutely").fetchone()[0]
    finally:
        con.close()
    print(json.dumps([orders, int(minutely)]), flush=True)
"""

# What revenue_minutely counts, from the source: live, not cancelled, in the two days up to the
# newest such order.
RECENT_ORDERS = """
with live as (select * from orders where status != 'cancelled' and deleted_at is null)
select
    (select count(*) from orders where deleted_at is null),
    (select count(*) from live where created_at >= (select max(created_at) from live) - interval '2 days')
"""


class Reader:
    def __init__(self):
        self.proc = subprocess.Popen(
            [sys.executable, "-c", READER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def ask(self, command: str):
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, f"the reader process died on {command!r}"
        return json.loads(line)

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


@pytest.fixture
def platform(platform_env, monkeypatch, tmp_path):
    monkeypatch.setenv("CDC_LAG_MAX_PENDING", "1")
    monkeypatch.setenv("CDC_LAG_MAX_SECONDS", "3600")
    monkeypatch.setenv("CDC_MAX_IDLE_MINUTES", "600")
    monkeypatch.setenv("CDC_PAUSE_AT", f"applied:1:{tmp_path}")  # replaced below: see `held`
    settings.get_settings.cache_clear()
    conn = psycopg2.connect(platform_env.source.url)
    generate_history(conn, days=2, orders_per_day=15, seed=6, end=END)
    conn.close()
    from analytics_assets.definitions import build_definitions

    defs = build_definitions()
    with dg.instance_for_test() as instance:
        yield defs, instance, platform_env


def _source(url, sql, params=None):
    conn = psycopg2.connect(url)
    with conn.cursor() as cur:
        cur.execute(sql, params)
        rows = cur.fetchall() if cur.description else []
    conn.commit()
    conn.close()
    return rows


def _lag_driven_run(defs, instance) -> None:
    """One tick of the lag sensor and the run it requests, as the daemon would launch it."""
    context = dg.build_sensor_context(instance=instance, definitions=defs)
    (request,) = cdc_lag_sensor.evaluate_tick(context).run_requests
    job = defs.get_implicit_global_asset_job_def().get_subset(
        asset_selection=set(request.asset_selection)
    )
    assert job.execute_in_process(instance=instance, tags=request.tags).success


def test_a_reader_process_reads_throughout_lag_driven_runs_and_sees_each_one(platform, monkeypatch):
    defs, instance, env = platform
    reader = Reader()
    during: list[tuple] = []

    def held(stage: str) -> None:
        """Called by the ingest at each stage; at `applied` its transaction is open and the run
        holds the warehouse: the reader process reads right then."""
        if stage == "applied" and len(during) < runs:
            during.append((reader.ask("probe"), reader.ask("read")))

    # the kill tests' pause hook, turned into a synchronous hand-over to the reader
    monkeypatch.setattr(cdc_module, "pause_at", lambda spec: held)
    try:
        runs = 0
        _lag_driven_run(defs, instance)  # the snapshot and the first build
        seen = [reader.ask("read")]
        assert seen[0] == [list(r) for r in _source(env.source.url, RECENT_ORDERS)][0]
        for n in range(1, 3):
            runs = n
            _source(
                env.source.url,
                "insert into orders (user_id, status, total, created_at, updated_at) "
                "select user_id, 'paid', %s, now(), now() from orders order by id limit 3; "
                "update orders set status = 'cancelled' "
                "where id = (select min(id) from orders where status != 'cancelled')",
                (10 * n,),
            )
            _lag_driven_run(defs, instance)
            probe, read = during[-1]
            assert probe == "locked", "the run held the warehouse file while the reader read"
            assert read == seen[-1], "the reader got the last published state, not an error"
            seen.append(reader.ask("read"))
            assert seen[-1] == [list(r) for r in _source(env.source.url, RECENT_ORDERS)][0]
            assert seen[-1] != seen[-2]
        assert len(during) == 2
    finally:
        reader.close()
