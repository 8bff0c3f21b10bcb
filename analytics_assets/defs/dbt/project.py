"""The dbt project, its target (from ANALYTICS_ENV) and a manifest prepared ahead of load."""

from __future__ import annotations

import functools
import importlib.metadata
import json
import shutil
import sys
from pathlib import Path

from dagster_dbt import DbtCliResource, DbtProject
from packaging import version

from analytics_assets.lib.partitions import dbt_zone_vars
from analytics_assets.lib.retention import prune_dbt_run_folders
from analytics_assets.settings import DBT_PROJECT_DIR, get_settings


def dbt_executable() -> str:
    """`dbt` from the venv Dagster runs in, even when that venv's bin is not on PATH."""
    beside = Path(sys.executable).parent / "dbt"
    return str(beside) if beside.exists() else (shutil.which("dbt") or "dbt")


def artifacts_base() -> Path:
    """Where dbt artifacts go: `DBT_TARGET_PATH` (relative to dbt/) or `target`. dagster-dbt puts
    each run's artifacts under the same folder, so one variable moves both, e.g. onto a writable
    volume when the image's filesystem is read-only."""
    return get_settings().dbt.target_path


@functools.cache
def get_dbt_project() -> DbtProject:
    target = get_settings().dbt.target
    project = DbtProject(
        project_dir=DBT_PROJECT_DIR,
        profiles_dir=DBT_PROJECT_DIR,
        target=target,
        # One manifest per target: dev and prod relation names differ.
        target_path=artifacts_base() / target,
    )
    if not project.manifest_path.exists():
        # Parse once; later loads read the manifest (`make prepare` does this ahead of time).
        args = ["parse", "--quiet", "--vars", json.dumps(dbt_zone_vars())]
        dbt_cli_resource().cli(args, target_path=project.target_path).wait()
    return project


class AnalyticsDbtCliResource(DbtCliResource):
    """dagster-dbt's resource, minus one `dbt --version` subprocess per dbt invocation (3-7 s
    here: it loads all of dbt-core): when the executable is the dbt of this very environment, its
    version is the installed dbt-core package's."""

    def cli(self, args, **kwargs):
        """Each invocation writes its own target folder (3-5 MB): the oldest go first, so the
        folders left are this one and the DBT_ARTIFACT_RUNS_KEPT - 1 newest before it. Pruned
        before the new one starts, so this invocation's own folder is never among them."""
        base = artifacts_base()
        prune_dbt_run_folders(
            base if base.is_absolute() else Path(self.project_dir) / base,
            get_settings().dbt.artifact_runs_kept - 1,
        )
        return super().cli(args, **kwargs)

    @functools.cached_property
    def _cli_version(self) -> version.Version:
        if Path(self.dbt_executable).parent == Path(sys.executable).parent:
            return version.parse(importlib.metadata.version("dbt-core"))
        return super()._cli_version


def dbt_cli_resource() -> DbtCliResource:
    return AnalyticsDbtCliResource(
        project_dir=str(DBT_PROJECT_DIR),
        profiles_dir=str(DBT_PROJECT_DIR),
        target=get_settings().dbt.target,
        dbt_executable=dbt_executable(),
    )
