"""The DuckDB adapter turns 15-minute buckets into business dates vectorized (Arrow's time zone
conversion); it must agree with the per-bucket Python conversion, DST transitions included."""

from __future__ import annotations

import numpy as np
import pytest

from analytics_assets.lib.warehouse.duckdb import BUCKET_US, _bucket_date, _bucket_dates

ZONES = ["UTC", "America/New_York", "Europe/Berlin", "Asia/Kolkata", "Australia/Lord_Howe"]


@pytest.mark.parametrize("tz", ZONES)
def test_bucket_dates_match_the_python_conversion(tz):
    start = 1_767_225_600_000_000 // BUCKET_US  # 2026-01-01T00:00Z
    buckets = np.arange(start - 96 * 400, start + 96 * 400, 7, dtype=np.int64)  # ~2 years
    assert _bucket_dates(buckets, tz) == {_bucket_date(int(b), tz) for b in buckets}


def test_no_buckets_no_dates():
    assert _bucket_dates(np.zeros(0, np.int64), "UTC") == set()
