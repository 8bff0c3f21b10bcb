"""Keep the newest N of the folders or files runs leave behind, so disk use stays bounded."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterable
from pathlib import Path

# dagster-dbt names each invocation's target folder `<op>-<run id[:7]>-<uuid[:7]>`, or only
# `<uuid[:7]>` outside a run; the project's own folders (the parsed `dev`/`prod` manifests) never
# look like that.
DBT_RUN_FOLDER = re.compile(r"^(?:[A-Za-z0-9_]+-[0-9a-f]{7}-)?[0-9a-f]{7}$")


def keep_newest(paths: Iterable[Path], keep: int) -> list[Path]:
    """Delete all but the `keep` most recently modified of `paths`; returns what was deleted.
    A path that vanishes meanwhile (another process pruning) is skipped."""
    dated = []
    for path in paths:
        try:
            dated.append((path.stat().st_mtime, path.name, path))
        except FileNotFoundError:
            continue
    dated.sort(reverse=True)
    removed = []
    for _, _, path in dated[max(keep, 0) :]:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def prune_dbt_run_folders(base: Path, keep: int) -> list[Path]:
    """Keep the newest `keep` per-invocation dbt target folders under `base`."""
    if not base.is_dir():
        return []
    runs = [p for p in base.iterdir() if p.is_dir() and DBT_RUN_FOLDER.match(p.name)]
    return keep_newest(runs, keep)
