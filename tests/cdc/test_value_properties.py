"""Property: every value of every common column type arrives in raw exactly on the slot feed,
or by the documented `__raw` rule (lib/values.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import psycopg2
from hypothesis import HealthCheck, given, settings

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from value_cases import (  # noqa: E402
    SETUP,
    WORKLOAD,
    apply_workload,
    assert_same,
    dead_letters,
    raw_text,
    source_text,
)


@settings(
    max_examples=12,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(before=WORKLOAD, after=WORKLOAD)
def test_generated_values_of_every_type_arrive_exactly_through_snapshot_and_stream(
    fresh_cdc_env, before, after
):
    env = fresh_cdc_env()
    env.execute(*SETUP)
    env.tables = ("vals",)
    conn = psycopg2.connect(env.url)
    try:
        apply_workload(conn, before)  # these rows arrive by the snapshot
        env.ingest()
        conn.cursor().execute("delete from vals")
        conn.commit()
        apply_workload(conn, after)  # these through the stream
        assert env.ingest().caught_up
        wh = env.warehouse()
        try:
            assert_same(source_text(conn, json_arrays=False), raw_text(wh.con))
            assert dead_letters(wh.con) == 0
        finally:
            wh.close()
    finally:
        conn.close()
