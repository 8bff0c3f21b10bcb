"""The Kafka feed's ingest process killed with SIGKILL while reading, inside the warehouse
transaction and between the warehouse commit and the offset commit (CDC_PAUSE_AT parks it
there, see tests/kill_helpers.py), then a clean ingest: raw equals the source, no position and
no Debezium event twice, and the group's offsets end at the topics' ends."""

from __future__ import annotations

import os

from kill_helpers import PausePoint, cli_ingest, kill_cli_ingest_at
from test_kafka_feed import mixed_workload


def logged_changes(kenv) -> int:
    """Rows in the change logs that exist so far (a table's log appears with its first batch)."""
    tables = [
        r[0] for r in kenv.raw("select table_name from duckdb_tables() where schema_name = 'raw'")
    ]
    return sum(
        kenv.raw(f"select count(*) from raw.{t}")[0][0]  # noqa: S608 - captured names
        for t in tables
        if t.endswith("_changes")
    )


def test_kafka_ingest_killed_at_each_moment_loses_and_duplicates_nothing(kenv, tmp_path):
    kenv.tables = ("users", "orders")
    con = kenv.connector(partitions={"users": 2, "orders": 1})
    try:
        mixed_workload(con, rounds=8)
    finally:
        con.close()
    env = {
        **os.environ,
        "CDC_FEED": "kafka",
        "CDC_TOPIC_PREFIX": kenv.prefix,
        "KAFKA_BOOTSTRAP_SERVERS": kenv.bootstrap,
        "KAFKA_GROUP_ID": kenv.group,
        "CAPTURED_TABLES": ",".join(kenv.tables),
        "SOURCE_DATABASE_URL": kenv.url,
        "WAREHOUSE_PATH": str(kenv.tmp / f"{kenv.db}.duckdb"),
        "CDC_BATCH_SIZE": "12",
    }
    logged = 0
    for stage in ("decoded", "applied", "committed"):
        kill_cli_ingest_at(env, PausePoint(tmp_path / stage, stage, hit=2))
        now = logged_changes(kenv)
        assert now > logged, f"{stage}: the first batch committed before the kill"
        logged = now

    clean = cli_ingest(env)
    assert clean.returncode == 0, clean.stderr
    kenv.assert_raw_equals_source()
    kenv.assert_change_log_has_no_duplicates()
    assert kenv.group_committed() == kenv.high_watermarks()
