"""The quality checks' and the daily summary's warehouse reader in prod mode, through the real
`google-cloud-bigquery` client over HTTP against the BigQuery API emulator (tests/prod/emulator.py),
compared with the same readings on a dev DuckDB file holding the same rows.

The tables are those of test_warehouse_reader.py (`build`), loaded into the emulator from the
DuckDB file's Arrow as Parquet load jobs, so BigQuery holds them with its own column types
(NUMERIC, TIMESTAMP, BYTES, DATE) and the reader gets typed values back, where the fake answered
every column as a STRING. The reader gets its client through prod's seam (`bigquery_resource`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from decimal import Decimal

import duckdb
import pytest
from emulator import load_from_duckdb
from test_warehouse_reader import DAY, HOSTILE, build, post_summary_in_prod

from analytics_assets.defs.notify.summary import DayRevenue, WarehouseNotReady, read_daily_revenue
from analytics_assets.defs.quality import dead_letters, reconciliation, volume
from analytics_assets.defs.quality.warehouse import (
    connect,
    last_confirmed,
    raw_columns,
    relation_exists,
    warehouse_watermark,
)
from analytics_assets.settings import get_settings

ENV = ("ANALYTICS_ENV", "GCP_PROJECT", "BIGQUERY_DATASET", "RAW_SCHEMA", "WAREHOUSE_PATH")


@dataclasses.dataclass
class Warehouses:
    dev: object
    prod: object
    client: object
    raw: str
    marts: str

    def both(self, fn):
        out = []
        for settings in (self.dev, self.prod):
            with connect(settings) as con:
                out.append(fn(con))
        return tuple(out)


@pytest.fixture(scope="module")
def loaded(bq_emulator, tmp_path_factory):
    """The dev file and the emulator's datasets, built once for this module's readings (which
    only read)."""
    path = tmp_path_factory.mktemp("reader") / "warehouse.duckdb"
    prefix = bq_emulator.dataset("analytics_ci")
    raw = bq_emulator.dataset("raw_prod")
    client = bq_emulator.client()
    with duckdb.connect(str(path)) as con:
        build(con, "raw", "marts")
        load_from_duckdb(client, con, "raw", raw)
        load_from_duckdb(client, con, "marts", f"{prefix}_marts")
    yield path, prefix, raw, client
    for dataset in (raw, f"{prefix}_marts"):
        client.delete_dataset(dataset, delete_contents=True, not_found_ok=True)


@pytest.fixture
def warehouses(loaded, emulated_bigquery, monkeypatch):
    path, prefix, raw, client = loaded
    for name in ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WAREHOUSE_PATH", str(path))
    monkeypatch.setenv("BIGQUERY_DATASET", prefix)
    get_settings.cache_clear()
    dev = get_settings()
    prod = dataclasses.replace(
        dev,
        env="prod",
        warehouse=dataclasses.replace(dev.warehouse, gcp_project="test-project", raw_schema=raw),
    )
    yield Warehouses(dev, prod, client, raw, f"{prefix}_marts")
    get_settings.cache_clear()


def test_checks_read_the_same_figures_from_the_emulator_as_from_duckdb(warehouses):
    since = {"orders": dt.datetime(2026, 3, 9, 10, 30, tzinfo=dt.UTC), "users": None}
    source = reconciliation.orders_table(
        [
            (1, "completed", "10.50", True, dt.datetime(2026, 3, 9, 8, 0, tzinfo=dt.UTC)),
            (2, "completed", "4.25", True, dt.datetime(2026, 3, 9, 9, 0, tzinfo=dt.UTC)),
            (3, "completed", "99.00", True, dt.datetime(2026, 3, 9, 11, 55, tzinfo=dt.UTC)),
        ]
    )
    cutoff = dt.datetime(2026, 3, 9, 11, 35, tzinfo=dt.UTC)

    def readings(con):
        return (
            warehouse_watermark(con, ["orders", "users"]),
            warehouse_watermark(con, ["orders", "users", "products"]),
            last_confirmed(con, ["orders", "users"]),
            dead_letters.read(con, since),
            volume.read_window(con, DAY),
            reconciliation.compute(con, source, DAY, cutoff),
            list(raw_columns(con, "orders")),
            raw_columns(con, "missing"),
            relation_exists(con, "marts", "daily_revenue"),
            relation_exists(con, "raw", HOSTILE),
        )

    dev, prod = warehouses.both(readings)
    assert prod == dev
    known, _, confirmed, quarantine, window, figures, columns, missing, mart, hostile = prod
    assert known.applied_through_lsn == 151
    assert known.commit_ts == dt.datetime(2026, 3, 9, 11, 30, tzinfo=dt.UTC)
    assert confirmed["users"] == dt.datetime(2026, 3, 9, 12, 6, tzinfo=dt.UTC)
    assert (quarantine["orders"].count, quarantine["orders"].new) == (3, 2)
    assert window[DAY] == (2, Decimal("14.75"))
    assert figures.expected_revenue == figures.actual_revenue == Decimal("14.75")
    assert columns == ["id", "status", "total", "created_at", "deleted_at"]
    assert missing is None and mart and not hostile
    # the emulator typed the columns as BigQuery does (the fake answered STRING for all)
    orders = warehouses.client.get_table(f"{warehouses.raw}.orders")
    types = {f.name: f.field_type for f in orders.schema}
    assert types["total"] == "NUMERIC" and types["created_at"] == "TIMESTAMP"


def test_daily_summary_reads_the_emulated_mart(warehouses):
    dev, prod = (read_daily_revenue(s, DAY) for s in (warehouses.dev, warehouses.prod))
    assert prod == dev
    assert prod == (
        DayRevenue(DAY, Decimal("14.75"), 2, 2),
        DayRevenue(dt.date(2026, 3, 8), Decimal("1000.00"), 50, 40),
    )
    # the marts dataset does not exist
    missing = dataclasses.replace(
        warehouses.prod,
        warehouse=dataclasses.replace(
            warehouses.prod.warehouse, bigquery_dataset="no_such_dataset"
        ),
    )
    with pytest.raises(WarehouseNotReady, match="not built yet"):
        read_daily_revenue(missing, DAY)


def test_daily_summary_sensor_posts_from_the_emulator_in_prod(warehouses, tmp_path, monkeypatch):
    """A sensor tick with ANALYTICS_ENV=prod reads the summary from the emulated BigQuery and
    posts it; the notifier writes to a local file (Slack is out of reach)."""
    line = post_summary_in_prod(warehouses.raw, tmp_path, monkeypatch)
    assert line["fields"]["date"] == DAY.isoformat() and line["fields"]["revenue"] == "14.75"
