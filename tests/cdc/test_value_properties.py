"""Property: every value of every common column type arrives in raw exactly on the slot feed,
or by the documented `__raw` rule (lib/values.py), with pgoutput's values as text (the table
has types the binary path does not read) and as binary (those columns made text)."""

from __future__ import annotations

import sys
from pathlib import Path

import psycopg2
import pytest
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

# the columns whose types the binary path does not read (lib/pgoutput_binary.py)
AS_TEXT = "alter table vals " + ", ".join(
    f"alter column {c} type text" for c in ("t", "iv", "ai", "at", "e")
)


@pytest.mark.parametrize("value_format", ["text", "binary"])
@settings(
    max_examples=10,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(before=WORKLOAD, after=WORKLOAD)
def test_generated_values_of_every_type_arrive_exactly_through_snapshot_and_stream(
    fresh_cdc_env, value_format, before, after
):
    env = fresh_cdc_env()
    env.execute(*SETUP)
    if value_format == "binary":
        env.execute(AS_TEXT)
    env.tables = ("vals",)
    conn = psycopg2.connect(env.url)
    try:
        apply_workload(conn, before)  # these rows arrive by the snapshot
        env.ingest()
        conn.cursor().execute("delete from vals")
        conn.commit()
        apply_workload(conn, after)  # these through the stream
        feed = env.feed()
        assert env.ingest(feed=feed).caught_up
        assert feed.value_format == value_format
        wh = env.warehouse()
        try:
            assert_same(source_text(conn, json_arrays=False), raw_text(wh.con))
            assert dead_letters(wh.con) == 0
        finally:
            wh.close()
    finally:
        conn.close()
