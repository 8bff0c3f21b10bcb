"""The pure helper that turns a partition window into dbt arguments."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from analytics_assets.lib.partitions import dbt_build_args, dbt_vars_for_window


def _d(s: str) -> dt.datetime:
    return dt.datetime.fromisoformat(s).replace(tzinfo=dt.UTC)


def test_one_day_window_becomes_min_inclusive_max_exclusive():
    assert dbt_vars_for_window(_d("2026-03-01"), _d("2026-03-02")) == {
        "min_date": "2026-03-01",
        "max_date": "2026-03-02",
    }


def test_range_window_becomes_one_build_with_vars():
    args = dbt_build_args(_d("2026-03-01"), _d("2026-03-06"))
    assert args[0] == "build" and args[1] == "--vars"
    assert json.loads(args[2]) == {"min_date": "2026-03-01", "max_date": "2026-03-06"}


def test_unpartitioned_build_has_no_vars():
    assert dbt_build_args() == ["build"]


def test_empty_window_is_refused():
    with pytest.raises(ValueError, match="empty partition window"):
        dbt_vars_for_window(_d("2026-03-02"), _d("2026-03-02"))
