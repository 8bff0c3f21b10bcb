"""Running the asset graph in-process against the embedded stack: a scratch source database, the
platform pointed at it, runs of an asset selection (optionally for a partition or a range), and
what a run did (materializations, check evaluations, step failures).

Shared by the tests that drive whole runs (tests/quality; test_end_to_end.py does the same by
hand). Module-scoped fixtures use the context managers so one built warehouse serves a module.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import psycopg2
import pytest

from analytics_assets import settings


def new_database(admin_url: str, prefix: str = "t_") -> tuple[str, str]:
    """Create an empty database on the embedded server; returns its name and URL."""
    name = f"{prefix}{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(admin_url)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'create database "{name}"')
    admin.close()
    return name, admin_url.rsplit("/", 1)[0] + "/" + name


def drop_database(admin_url: str, name: str) -> None:
    """Drop a test database and the replication slots on it (ending any reader first)."""
    admin = psycopg2.connect(admin_url)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(
            "select pg_terminate_backend(active_pid) from pg_replication_slots "
            "where database = %s and active",
            (name,),
        )
        cur.execute(
            "select pg_drop_replication_slot(slot_name) from pg_replication_slots "
            "where database = %s and not active",
            (name,),
        )
        cur.execute(f'drop database if exists "{name}" with (force)')
    admin.close()


@contextlib.contextmanager
def scratch_source_database(admin_url: str) -> Iterator[str]:
    """A fresh, migrated source database on the embedded server; dropped (with its slots)
    afterwards. `admin_url` points at the server's `postgres` database."""
    from analytics_assets.dev.schema import migrate

    name, url = new_database(admin_url)
    conn = psycopg2.connect(url)
    migrate(conn)
    conn.close()
    try:
        yield url
    finally:
        drop_database(admin_url, name)


@contextlib.contextmanager
def platform_environment(source_url: str, workdir: Path, **extra: str) -> Iterator[object]:
    """Point settings, definitions and dbt at `source_url`, a DuckDB warehouse in `workdir`, and a
    slot and publication of their own. Yields the resolved settings."""
    suffix = uuid.uuid4().hex[:8]
    env = {
        "SOURCE_DATABASE_URL": source_url,
        "WAREHOUSE_PATH": str(workdir / "warehouse.duckdb"),
        "CDC_SLOT": f"slot_{suffix}",
        "CDC_PUBLICATION": f"pub_{suffix}",
        "NOTIFY_PATH": str(workdir / "notifications.jsonl"),
        **extra,
    }
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        settings.get_settings.cache_clear()
        try:
            yield settings.get_settings()
        finally:
            settings.get_settings.cache_clear()


def load_history(url: str, *, days: int, orders_per_day: int, seed: int, end: dt.datetime) -> None:
    from analytics_assets.dev.traffic import generate_history

    conn = psycopg2.connect(url)
    try:
        generate_history(conn, days=days, orders_per_day=orders_per_day, seed=seed, end=end)
    finally:
        conn.close()


@dataclass
class Run:
    result: dg.ExecuteInProcessResult

    @property
    def success(self) -> bool:
        return self.result.success

    def materialized(self) -> set[str]:
        return {
            e.asset_key.to_user_string()
            for e in self.result.all_events
            if e.event_type_value == "ASSET_MATERIALIZATION"
        }

    def evaluations(self, check: str, asset: str | None = None) -> list:
        """Evaluations of the check named `check` (on `asset`, if given), in run order."""
        out = []
        for event in self.result.all_events:
            if event.event_type_value != "ASSET_CHECK_EVALUATION":
                continue
            data = event.asset_check_evaluation_data
            if data.check_name == check and (
                asset is None or data.asset_key.to_user_string() == asset
            ):
                out.append(data)
        return out

    def evaluation(self, check: str, asset: str | None = None):
        found = self.evaluations(check, asset)
        assert len(found) == 1, f"{check} on {asset}: {len(found)} evaluations"
        return found[0]

    def failed_checks(self) -> set[str]:
        return {
            f"{e.asset_check_evaluation_data.asset_key.to_user_string()}:"
            f"{e.asset_check_evaluation_data.check_name}"
            for e in self.result.all_events
            if e.event_type_value == "ASSET_CHECK_EVALUATION"
            and not e.asset_check_evaluation_data.passed
        }

    def step_failures(self) -> dict[str, str]:
        """step key -> the user's error message (the root cause, not Dagster's wrapper)."""
        out = {}
        for event in self.result.all_events:
            if event.event_type_value != "STEP_FAILURE":
                continue
            error = event.step_failure_data.error
            while error.cause is not None:
                error = error.cause
            out[event.step_key] = error.message
        return out

    def started_steps(self) -> set[str]:
        """Steps that ran (a step whose upstream failed never starts)."""
        return {e.step_key for e in self.result.all_events if e.event_type_value == "STEP_START"}


def run_graph(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    selection: str,
    *,
    partition: str | None = None,
    partition_range: tuple[str, str] | None = None,
    checks_only: str | None = None,
) -> Run:
    """Run the assets `selection` picks (an asset selection string) with their checks, in one run.

    Unpartitioned and daily assets may be mixed: the unpartitioned ones run once, the daily ones
    for `partition` or `partition_range` (one dbt invocation for the range). `checks_only` (a
    check selection string such as `raw/orders:slot_health`) runs only those checks."""
    job = defs.get_implicit_global_asset_job_def()
    graph = defs.resolve_asset_graph()
    if checks_only is not None:
        check_keys = {dg.AssetCheckKey.from_user_string(s.strip()) for s in checks_only.split(",")}
        job = job.get_subset(asset_selection=set(), asset_check_selection=check_keys)
    else:
        keys = dg.AssetSelection.from_string(selection).resolve(graph)
        job = job.get_subset(asset_selection=set(keys))
    tags = {}
    if partition_range is not None:
        tags = {
            "dagster/asset_partition_range_start": partition_range[0],
            "dagster/asset_partition_range_end": partition_range[1],
        }
    result = job.execute_in_process(
        instance=instance, partition_key=partition, tags=tags, raise_on_error=False
    )
    return Run(result)


def dagster_executable() -> str:
    import sys

    return os.path.join(os.path.dirname(sys.executable), "dagster")
