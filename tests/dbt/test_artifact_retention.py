"""dbt's per-invocation target folders stay bounded: DBT_ARTIFACT_RUNS_KEPT newest, whatever ran
before. Real dbt invocations through the project's resource (`dbt deps`: the cheapest command
that still makes dagster-dbt write a run folder)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from analytics_assets import settings
from analytics_assets.defs.dbt.project import dbt_cli_resource
from analytics_assets.lib.retention import DBT_RUN_FOLDER, keep_newest

OLD_RUNS = 30


def _run_folders(base: Path) -> list[Path]:
    return sorted(p for p in base.iterdir() if DBT_RUN_FOLDER.match(p.name))


def test_dbt_run_folders_stay_at_the_configured_bound_after_many_runs(tmp_path, monkeypatch):
    base = tmp_path / "target"
    (base / "dev").mkdir(parents=True)  # the parsed manifest's folder: never pruned
    (base / "dev" / "manifest.json").write_text("{}")
    now = time.time()
    # what earlier runs left: OLD_RUNS folders, oldest first
    for i in range(OLD_RUNS):
        folder = base / f"dbt_models-{i:07x}-abcdef0"
        folder.mkdir()
        (folder / "run_results.json").write_text("{}")
        os.utime(folder, (now - 3600 + i, now - 3600 + i))
    monkeypatch.setenv("DBT_TARGET_PATH", str(base))
    monkeypatch.setenv("DBT_ARTIFACT_RUNS_KEPT", "3")
    settings.get_settings.cache_clear()
    try:
        dbt = dbt_cli_resource()
        for _ in range(2):
            assert dbt.cli(["deps"], raise_on_error=True).wait().is_successful()
            assert len(_run_folders(base)) <= 3
    finally:
        settings.get_settings.cache_clear()
    names = [p.name for p in _run_folders(base)]
    new = [n for n in names if not n.startswith("dbt_models-")]
    assert len(names) == 3 and len(new) == 2, names  # both invocations' folders, newest old one
    assert f"dbt_models-{OLD_RUNS - 1:07x}-abcdef0" in names
    assert (base / "dev" / "manifest.json").exists()


def test_keep_newest_deletes_by_age_not_by_name(tmp_path):
    now = time.time()
    paths = []
    for i, name in enumerate(["c", "a", "b", "d"]):
        path = tmp_path / name
        path.write_text(name)
        os.utime(path, (now + i, now + i))
        paths.append(path)
    removed = keep_newest(paths, 2)
    assert sorted(p.name for p in removed) == ["a", "c"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b", "d"]
