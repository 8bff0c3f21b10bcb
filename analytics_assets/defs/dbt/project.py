"""The dbt project, its target (from ANALYTICS_ENV) and a manifest prepared ahead of load."""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import shutil
import sys
from pathlib import Path

from dagster_dbt import DbtCliResource, DbtProject
from packaging import version

from analytics_assets.lib.partitions import dbt_zone_vars
from analytics_assets.lib.retention import prune_dbt_run_folders
from analytics_assets.settings import DBT_PROJECT_DIR, dbt_profile_environment, get_settings

PARTIAL_PARSE_FILE = "partial_parse.msgpack"
# beside each invocation's parse: `parse_key`, what dbt compares before it reuses a parse
PARSE_KEY_FILE = "partial_parse.key"


def dbt_executable() -> str:
    """`dbt` from the venv Dagster runs in, even when that venv's bin is not on PATH; started
    warm (`analytics-dbt`, lib/dbt_warm.py) unless DBT_WARM_START is false."""
    bin_dir = Path(sys.executable).parent
    if get_settings().dbt.warm_start and (bin_dir / "analytics-dbt").exists():
        return str(bin_dir / "analytics-dbt")
    beside = bin_dir / "dbt"
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
    """dagster-dbt's resource, minus two things each dbt invocation paid for in the run worker:
    a `dbt --version` subprocess (it loads all of dbt-core; when the executable is the dbt of
    this very environment, its version is the installed dbt-core package's), and a dbt adapter
    built in-process (profile, project and dbt's macros loaded) that only serves
    `fetch_row_counts` and `fetch_column_metadata`, which this project does not use: row counts
    and costs come from dbt's own adapter response (`adapter_response.py`)."""

    def cli(self, args, *, target_path: Path | None = None, context=None, **kwargs):
        """Each invocation writes its own target folder (3-5 MB): the oldest go first, so the
        folders left are this one and the DBT_ARTIFACT_RUNS_KEPT - 1 newest before it. Pruned
        before the new one starts, so this invocation's own folder is never among them.

        The folder starts with the project's `partial_parse.msgpack` (written by the parse
        beside the manifest), so dbt re-reads only what changed instead of parsing the whole
        project: dagster-dbt looks for that file in DBT_TARGET_PATH itself, not in the
        per-target folder this project parses into. dbt still parses in full when the file
        does not fit (other vars, a changed profile or file)."""
        base = artifacts_base()
        prune_dbt_run_folders(
            base if base.is_absolute() else Path(self.project_dir) / base,
            get_settings().dbt.artifact_runs_kept - 1,
        )
        target_path = target_path or self._get_unique_target_path(context=context)
        _seed_partial_parse(Path(self.project_dir), target_path, parse_key(args, self.target))
        return super().cli(args, target_path=target_path, context=context, **kwargs)

    def _initialize_dbt_core_adapter(self, args):
        return None

    @functools.cached_property
    def _cli_version(self) -> version.Version:
        if Path(self.dbt_executable).parent == Path(sys.executable).parent:
            return version.parse(importlib.metadata.version("dbt-core"))
        return super()._cli_version


def parse_key(args, target: str | None) -> str:
    """What dbt checks before it reuses a parse, besides the files: the `--vars` (a daily mart's
    window is vars), the target and the profile's variables. Two invocations with the same key
    can share a parse; the fast path's dbt step (same vars every time) then never re-parses
    after a daily build."""
    args = list(args)
    at = args.index("--vars") + 1 if "--vars" in args else None
    blob = json.dumps([args[at] if at else None, target, dbt_profile_environment()])
    return hashlib.sha1(blob.encode()).hexdigest()


def _seed_partial_parse(project_dir: Path, target_path: Path, key: str) -> None:
    """Start the invocation's folder from the newest parse made with the same `key`: the
    project's (`make prepare`) or a recent invocation's (dbt parses anew when the project's does
    not fit, say with a WAREHOUSE_PATH the stack sets, so only the first run pays). With none,
    the newest of any key, as dbt then decides for itself. The folder records its own key."""
    base = artifacts_base()
    base = base if base.is_absolute() else project_dir / base
    # where get_dbt_project parses (not the cached project: the settings may have changed)
    parses = [base / get_settings().dbt.target / PARTIAL_PARSE_FILE]
    parses += base.glob(f"*/{PARTIAL_PARSE_FILE}")
    found = [p for p in parses if p.exists()]
    same = [p for p in found if _key_of(p.parent) == key]
    newest = max(same or found, key=lambda p: p.stat().st_mtime, default=None)
    folder = target_path if target_path.is_absolute() else project_dir / target_path
    folder.mkdir(parents=True, exist_ok=True)
    (folder / PARSE_KEY_FILE).write_text(key)
    if newest is not None and not (folder / PARTIAL_PARSE_FILE).exists():
        shutil.copyfile(newest, folder / PARTIAL_PARSE_FILE)


def _key_of(folder: Path) -> str | None:
    try:
        return (folder / PARSE_KEY_FILE).read_text()
    except OSError:
        return None


def dbt_cli_resource() -> DbtCliResource:
    return AnalyticsDbtCliResource(
        project_dir=str(DBT_PROJECT_DIR),
        profiles_dir=str(DBT_PROJECT_DIR),
        target=get_settings().dbt.target,
        dbt_executable=dbt_executable(),
    )
