"""Both environments' dbt manifests, parsed once per session, and a switch between environments.

`dbt parse` connects to nothing, so the prod (BigQuery) manifest is built offline like the dev one.
Both go under one temp DBT_TARGET_PATH as `<path>/<target>/manifest.json`, where
`get_dbt_project` looks: the way `make prepare` or an image build prepares them.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from analytics_assets.defs.dbt.project import dbt_executable, get_dbt_project
from analytics_assets.lib.partitions import daily_partitions
from analytics_assets.settings import DBT_PROJECT_DIR, get_settings

ENVIRONMENTS = {
    "dev": {"ANALYTICS_ENV": "dev"},
    "prod": {
        "ANALYTICS_ENV": "prod",
        "GCP_PROJECT": "acme-analytics-prod",
        "BIGQUERY_DATASET": "analytics_ci",
    },
}
# Whatever the developer's shell has, these come only from ENVIRONMENTS.
UNSET = (
    "DBT_TARGET",
    "GCP_PROJECT",
    "BIGQUERY_DATASET",
    "BIGQUERY_LOCATION",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "RAW_SCHEMA",
)


def clear_setting_caches() -> None:
    get_settings.cache_clear()
    get_dbt_project.cache_clear()
    daily_partitions.cache_clear()


def _environ(name: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in UNSET}
    return {**env, **ENVIRONMENTS[name], "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"}


@pytest.fixture(scope="session")
def environments() -> dict[str, dict[str, str]]:
    return ENVIRONMENTS


@pytest.fixture(scope="session")
def dbt_target_path(tmp_path_factory) -> Path:
    """dev and prod manifests under one DBT_TARGET_PATH, parsed in parallel (2 cores here)."""
    path = tmp_path_factory.mktemp("dbt_target")
    parses = {
        name: subprocess.Popen(  # noqa: S603 - fixed argv, no shell
            [
                dbt_executable(),
                "parse",
                "--quiet",
                "--target",
                name,
                "--project-dir",
                str(DBT_PROJECT_DIR),
                "--profiles-dir",
                str(DBT_PROJECT_DIR),
                "--target-path",
                str(path / name),
                "--log-path",
                str(path / "logs" / name),
            ],
            cwd=DBT_PROJECT_DIR,
            env=_environ(name),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for name in ENVIRONMENTS
    }
    for name, parse in parses.items():
        output, _ = parse.communicate(timeout=300)
        assert parse.returncode == 0, f"dbt parse --target {name} failed:\n{output}"
    return path


@pytest.fixture(scope="session")
def analytics_env(dbt_target_path) -> Callable[..., contextlib.AbstractContextManager[None]]:
    """`with analytics_env("prod", EXTRA="value"):` — that environment's settings (and extra
    variables) with the manifests above; every settings cache is cleared on the way in and out,
    so nothing leaks into other tests."""

    @contextlib.contextmanager
    def use(name: str, **extra: str) -> Iterator[None]:
        with pytest.MonkeyPatch.context() as mp:
            for var in UNSET:
                mp.delenv(var, raising=False)
            for var, value in {**ENVIRONMENTS[name], **extra}.items():
                mp.setenv(var, value)
            mp.setenv("DBT_TARGET_PATH", str(dbt_target_path))
            clear_setting_caches()
            try:
                yield
            finally:
                clear_setting_caches()

    # `analytics_assets.definitions` builds its module-level `defs` on first import, from the
    # environment of that moment: make sure that is dev, whichever test imports it first.
    with use("dev"):
        importlib.import_module("analytics_assets.definitions")
    return use


@pytest.fixture(scope="session")
def bq_emulator(tmp_path_factory):
    """The BigQuery API emulator server (tests/prod/emulator.py), started once per session by the
    first test that asks for it, stopped at the end."""
    import emulator

    server = emulator.start(tmp_path_factory.mktemp("bqemulator") / "server.log")
    yield server
    server.stop()


@pytest.fixture
def emulated_bigquery(bq_emulator, monkeypatch):
    """prod's BigQuery resource (`bigquery_resource`, the one seam the CDC warehouse and the
    warehouse reader get their client from) pointed at the emulator, for this test."""
    from analytics_assets.lib.warehouse import bigquery as bigquery_module

    def resource(settings):
        return bq_emulator.resource(
            settings.warehouse.gcp_project, settings.warehouse.bigquery_location or "US"
        )

    monkeypatch.setattr(bigquery_module, "bigquery_resource", resource)
    return bq_emulator
