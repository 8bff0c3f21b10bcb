"""Every module of the CDC reading side imports on its own, in a fresh interpreter: an import
circle (e.g. lib/cdc.py -> a feed -> lib/cdc.py) fails here whichever module a process loads
first, instead of hiding behind the import order of the code location."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

LIB = Path(__file__).resolve().parents[2] / "analytics_assets" / "lib"
MODULES = sorted(
    "analytics_assets.lib." + p.relative_to(LIB).with_suffix("").as_posix().replace("/", ".")
    for pattern in ("feeds/*.py", "pgoutput*.py", "debezium*.py", "pg.py", "cdc.py", "errors.py")
    for p in LIB.glob(pattern)
    if p.name != "__init__.py"
)


def test_the_reading_side_modules_are_found():
    assert "analytics_assets.lib.feeds.slot" in MODULES and "analytics_assets.lib.cdc" in MODULES


@pytest.mark.parametrize("module", MODULES)
def test_module_imports_in_a_fresh_interpreter(module):
    done = subprocess.run(
        [sys.executable, "-c", f"import {module}"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr.strip().splitlines()[-1:]
