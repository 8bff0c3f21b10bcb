"""Fixtures for the fault tests: a test's own embedded server (so restarting or killing it never
disturbs the session's shared server) holding a migrated `app` database, driven through the CDC
helpers of tests/cdc."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import dagster as dg
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "cdc"))

from cdc_helpers import CdcEnv  # noqa: E402
from graph_runs import drop_database, new_database  # noqa: E402

from analytics_assets import settings  # noqa: E402
from analytics_assets.dev import stack  # noqa: E402
from analytics_assets.dev.schema import migrate  # noqa: E402
from analytics_assets.settings import PROJECT_ROOT  # noqa: E402


@pytest.fixture
def own_stack(own_server_dir, monkeypatch):
    """A second embedded server in its own data dir; its port stays fixed across restarts."""
    monkeypatch.setenv("ANALYTICS_DATA_DIR", str(own_server_dir / "data"))
    monkeypatch.delenv("ANALYTICS_PG_PORT", raising=False)
    settings.get_settings.cache_clear()
    info = stack.up(quiet=True)
    monkeypatch.setenv("ANALYTICS_PG_PORT", str(info.port))
    yield info
    stack.down(quiet=True)
    settings.get_settings.cache_clear()


@pytest.fixture
def own_cdc(own_stack, tmp_path) -> CdcEnv:
    """The own server's `app` database, migrated, as a CDC test environment."""
    import psycopg2

    conn = psycopg2.connect(own_stack.source_url)
    migrate(conn)
    conn.close()
    return CdcEnv(own_stack.source_url, stack.SOURCE_DB, tmp_path)


@pytest.fixture
def cdc(source_db, tmp_path) -> CdcEnv:
    """A fresh, migrated source database on the session server, as a CDC test environment."""
    return CdcEnv(source_db, source_db.rsplit("/", 1)[1], tmp_path)


@pytest.fixture
def cli_env(cdc):
    """The environment of an `analytics-assets cdc ingest` process pointed at `cdc`'s source,
    slot, publication and warehouse file."""
    import os

    env = dict(os.environ)
    env.update(
        SOURCE_DATABASE_URL=cdc.url,
        WAREHOUSE_PATH=str(cdc.tmp / f"{cdc.db}.duckdb"),
        CDC_SLOT=cdc.slot,
        CDC_PUBLICATION=cdc.publication,
        CAPTURED_TABLES=",".join(cdc.tables),
    )
    return env


@pytest.fixture
def dagster_instance(platform_env, pg_stack, tmp_path, monkeypatch):
    """The project's dev dagster.yaml (DAGSTER_HOME) on a fresh storage database, the platform
    pointed at a fresh source, its warehouse file where the CDC helpers look for it
    (`<tmp>/<db>.duckdb`); any lagging change makes the lag sensor start an ingest."""
    storage, _ = new_database(pg_stack.url("postgres"), prefix="dagster_")
    db = platform_env.source.url.rsplit("/", 1)[1]
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(PROJECT_ROOT / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("DAGSTER_PG_DB", storage)
    monkeypatch.setenv("WAREHOUSE_PATH", str(tmp_path / f"{db}.duckdb"))
    monkeypatch.setenv("CDC_LAG_MAX_PENDING", "1")
    monkeypatch.setenv("CDC_BATCH_SIZE", "1000")
    settings.get_settings.cache_clear()
    with dg.DagsterInstance.get() as inst:
        yield inst
    drop_database(pg_stack.url("postgres"), storage)
