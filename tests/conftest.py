"""Session fixtures: one embedded PostgreSQL server for the whole test session, in a scratch data
directory so tests never touch the developer's `.data/` stack."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from analytics_assets import settings
from analytics_assets.dev import stack


def server_data_dir() -> Path:
    """A data dir for an embedded server, outside pytest's tmp tree: pytest makes
    /tmp/pytest-of-root private (0700) whenever a session starts, which would cut the server's
    system user off from its own files."""
    return Path(tempfile.mkdtemp(prefix="analytics-test-"))


@pytest.fixture
def own_server_dir():
    """A data dir for a test's own, second embedded server."""
    path = server_data_dir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def data_dir():
    path = server_data_dir()
    old = {k: os.environ.get(k) for k in ("ANALYTICS_DATA_DIR", "ANALYTICS_PG_PORT")}
    os.environ["ANALYTICS_DATA_DIR"] = str(path)
    os.environ.pop("ANALYTICS_PG_PORT", None)
    settings.get_settings.cache_clear()
    yield path
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    settings.get_settings.cache_clear()
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_stack(data_dir):
    """The embedded server, started once per session and stopped at the end."""
    info = stack.up(quiet=True)
    for key, value in info.env().items():
        os.environ[key] = value
    settings.get_settings.cache_clear()
    yield info
    stack.down(quiet=True)


@pytest.fixture
def source_db(pg_stack):
    """A fresh, migrated source database per test (a new database, same server)."""
    from graph_runs import scratch_source_database

    with scratch_source_database(pg_stack.url("postgres")) as url:
        yield url


@pytest.fixture
def platform_env(source_db, tmp_path, monkeypatch):
    """Point the whole platform (settings, definitions, dbt) at a fresh source database, a fresh
    DuckDB warehouse and its own replication slot and publication."""
    import uuid

    suffix = uuid.uuid4().hex[:8]
    monkeypatch.setenv("SOURCE_DATABASE_URL", source_db)
    monkeypatch.setenv("WAREHOUSE_PATH", str(tmp_path / "warehouse.duckdb"))
    monkeypatch.setenv("CDC_SLOT", f"slot_{suffix}")
    monkeypatch.setenv("CDC_PUBLICATION", f"pub_{suffix}")
    monkeypatch.setenv("NOTIFY_PATH", str(tmp_path / "notifications.jsonl"))
    settings.get_settings.cache_clear()
    yield settings.get_settings()
    settings.get_settings.cache_clear()
