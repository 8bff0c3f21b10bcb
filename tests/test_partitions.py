"""The business day (lib/partitions.py): dates of instants in the zone, a date's instants, and
the pure helper that turns a partition window into dbt arguments."""

from __future__ import annotations

import datetime as dt
import json
from zoneinfo import ZoneInfo

import pytest
import yaml

from analytics_assets import settings
from analytics_assets.defs.automation import logic
from analytics_assets.lib.partitions import (
    DBT_TIMEZONE_VAR,
    business_date,
    daily_partitions,
    day_bounds,
    dbt_build_args,
    dbt_vars_for_window,
    last_ended_day,
)

NEW_YORK = ZoneInfo("America/New_York")
SEOUL = ZoneInfo("Asia/Seoul")


def _d(s: str) -> dt.datetime:
    return dt.datetime.fromisoformat(s).replace(tzinfo=dt.UTC)


def test_one_day_window_becomes_min_inclusive_max_exclusive():
    assert dbt_vars_for_window(_d("2026-03-01"), _d("2026-03-02"), "UTC") == {
        "min_date": "2026-03-01",
        "max_date": "2026-03-02",
    }


def test_range_window_becomes_one_build_with_vars():
    args = dbt_build_args(_d("2026-03-01"), _d("2026-03-06"), timezone="UTC")
    assert args[0] == "build" and args[1] == "--vars"
    assert json.loads(args[2]) == {
        "min_date": "2026-03-01",
        "max_date": "2026-03-06",
        "partition_timezone": "UTC",
    }


def test_unpartitioned_build_gets_the_zone_and_no_window():
    assert dbt_build_args(timezone="Asia/Seoul") == [
        "build",
        "--vars",
        json.dumps({DBT_TIMEZONE_VAR: "Asia/Seoul"}),
    ]


def test_empty_window_is_refused():
    with pytest.raises(ValueError, match="empty partition window"):
        dbt_vars_for_window(_d("2026-03-02"), _d("2026-03-02"))


def test_a_seoul_partition_window_gives_seoul_dates_whatever_zone_its_instants_carry():
    start = dt.datetime(2026, 3, 7, tzinfo=SEOUL)  # 2026-03-06 15:00 UTC
    end = dt.datetime(2026, 3, 8, tzinfo=SEOUL)
    for window in ((start, end), (start.astimezone(dt.UTC), end.astimezone(dt.UTC))):
        args = dbt_build_args(*window, timezone="Asia/Seoul")
        assert json.loads(args[2]) == {
            "min_date": "2026-03-07",
            "max_date": "2026-03-08",
            "partition_timezone": "Asia/Seoul",
        }


def test_dagster_partition_windows_become_the_same_dates_in_their_zone(monkeypatch):
    monkeypatch.setenv("PARTITION_TIMEZONE", "America/New_York")
    settings.get_settings.cache_clear()
    daily_partitions.cache_clear()
    try:
        window = daily_partitions().time_window_for_partition_key("2026-03-08")
        assert json.loads(dbt_build_args(window.start, window.end)[2]) == {
            "min_date": "2026-03-08",
            "max_date": "2026-03-09",
            "partition_timezone": "America/New_York",
        }
        assert (window.start, window.end) == day_bounds(dt.date(2026, 3, 8))
    finally:
        settings.get_settings.cache_clear()
        daily_partitions.cache_clear()


@pytest.mark.parametrize(
    ("day", "hours"),
    [("2026-03-07", 24), ("2026-03-08", 23), ("2026-11-01", 25)],
)
def test_a_new_york_business_day_has_23_24_or_25_hours(day, hours):
    start, end = day_bounds(dt.date.fromisoformat(day), "America/New_York")
    assert end - start == dt.timedelta(hours=hours)
    assert start == dt.datetime.combine(dt.date.fromisoformat(day), dt.time(), NEW_YORK)
    assert end == logic.partition_end(day, "America/New_York")


def test_an_instant_belongs_to_its_local_date():
    late = dt.datetime(2026, 3, 7, 14, 30, tzinfo=dt.UTC)  # 23:30 in Seoul
    early = dt.datetime(2026, 3, 7, 15, 30, tzinfo=dt.UTC)  # 00:30 in Seoul
    assert business_date(late, "Asia/Seoul") == dt.date(2026, 3, 7)
    assert business_date(early, "Asia/Seoul") == dt.date(2026, 3, 8)
    assert business_date(early, "UTC") == dt.date(2026, 3, 7)
    start, end = day_bounds(dt.date(2026, 3, 8), "Asia/Seoul")
    assert start <= early < end
    with pytest.raises(ValueError, match="no time zone"):
        business_date(dt.datetime(2026, 3, 7, 12), "UTC")


def test_the_last_ended_day_is_yesterday_in_the_zone():
    now = dt.datetime(2026, 3, 10, 16, tzinfo=dt.UTC)  # 01:00 on 03-11 in Seoul
    assert last_ended_day(now, "Asia/Seoul") == dt.date(2026, 3, 10)
    assert last_ended_day(now, "UTC") == dt.date(2026, 3, 9)


def test_dbt_and_the_settings_default_to_the_same_zone(monkeypatch):
    monkeypatch.delenv("PARTITION_TIMEZONE", raising=False)
    settings.get_settings.cache_clear()
    try:
        default = settings.get_settings().partitions.timezone
    finally:
        settings.get_settings.cache_clear()
    project = yaml.safe_load((settings.DBT_PROJECT_DIR / "dbt_project.yml").read_text())
    assert project["vars"][DBT_TIMEZONE_VAR] == default == "UTC"
