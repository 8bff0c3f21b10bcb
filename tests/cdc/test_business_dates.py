"""The warehouses turn 15-minute buckets into business dates vectorized (Arrow's time zone
conversion, lib/partitions.py); it must agree with the per-instant Python conversion, DST
transitions included."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest

from analytics_assets.lib.partitions import BUCKET_US, business_date, business_dates
from analytics_assets.lib.warehouse.base import after_buckets

ZONES = ["UTC", "America/New_York", "Europe/Berlin", "Asia/Kolkata", "Australia/Lord_Howe"]
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _python_dates(epoch_us, tz: str) -> set[dt.date]:
    return {business_date(EPOCH + dt.timedelta(microseconds=int(v)), tz) for v in epoch_us}


@pytest.mark.parametrize("tz", ZONES)
def test_bucket_dates_match_the_python_conversion(tz):
    start = 1_767_225_600_000_000 // BUCKET_US  # 2026-01-01T00:00Z
    buckets = np.arange(start - 96 * 400, start + 96 * 400, 7, dtype=np.int64)  # ~2 years
    assert business_dates(buckets * BUCKET_US, tz) == _python_dates(buckets * BUCKET_US, tz)


def test_no_buckets_no_dates():
    assert business_dates(np.zeros(0, np.int64), "UTC") == set()


def _after_dates(col, tz):
    return business_dates(after_buckets(col) * BUCKET_US, tz)


def test_the_after_images_get_their_dates_in_the_zone():
    # 2026-03-08 03:30 UTC is 22:30 on the 7th in New York and 12:30 on the 8th in Seoul
    moments = [dt.datetime(2026, 3, 8, 3, 30, tzinfo=dt.UTC), None]
    col = pa.chunked_array([pa.array(moments, pa.timestamp("us", tz="UTC"))])
    assert _after_dates(col, "America/New_York") == {dt.date(2026, 3, 7)}
    assert _after_dates(col, "Asia/Seoul") == {dt.date(2026, 3, 8)}
