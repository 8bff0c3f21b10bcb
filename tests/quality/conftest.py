"""A platform per test module, so a module builds its warehouse once and its tests share it."""

from __future__ import annotations

import pytest
from quality_platform import build_platform


@pytest.fixture(scope="module")
def platform(pg_stack, tmp_path_factory):
    with build_platform(pg_stack.url("postgres"), tmp_path_factory.mktemp("quality")) as p:
        yield p
