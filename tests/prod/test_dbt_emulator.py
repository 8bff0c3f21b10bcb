"""`dbt build --target emulator`: the dbt project through dbt-bigquery, over HTTP, against the
BigQuery API emulator (tests/prod/emulator.py), on the raw tables of tests/raw_tables.py loaded
into it; then one daily partition window built twice (idempotent). The marts are compared with
the same aggregates computed by DuckDB straight from the same raw rows.

Left out, each because of the emulator, not BigQuery (docs/production.md, "The BigQuery API
emulator"):
- unit test `test_daily_revenue_counts_completed_orders_only`, disabled on the `emulator` target:
  the emulator's ROUND of a NUMERIC quotient returns 21.667 for round(65.00 / 3, 2) (BigQuery:
  21.67), so `avg_order_value` is compared in cents below;
- the column list of a contract-enforced model's CREATE TABLE ... AS (the emulator cannot parse
  it; dbt/macros/emulator_target.sql drops it on this target only, dbt's contract assertion of
  names and types still runs).
"""

from __future__ import annotations

import json
import os
import subprocess
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest
from emulator import load_from_duckdb

from analytics_assets.defs.dbt.project import dbt_executable
from analytics_assets.settings import DBT_PROJECT_DIR
from tests.dbt.test_dbt_project import DIRECT_DAILY_REVENUE, WINDOW_VARS
from tests.raw_tables import create_raw_tables

DISABLED = {"unit_test.analytics.daily_revenue.test_daily_revenue_counts_completed_orders_only"}


class EmulatorDbt:
    def __init__(self, emulator, tmp: Path):
        self.tmp = tmp
        self.client = emulator.client()
        self.prefix = emulator.dataset("analytics_ci")
        self.raw = emulator.dataset("raw")
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("GOOGLE_", "DBT_"))},
            "GCP_PROJECT": "test-project",
            "BIGQUERY_DATASET": self.prefix,
            "RAW_SCHEMA": self.raw,
            "BIGQUERY_API_ENDPOINT": emulator.endpoint,
            "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
            "DBT_USE_COLORS": "false",
        }

    def dbt(self, command: str, *args: str) -> dict[str, str]:
        """`dbt <command> --target emulator ...`; the status of each node it ran."""
        target = self.tmp / "target"
        result = subprocess.run(  # noqa: S603 - fixed argv
            [
                dbt_executable(),
                command,
                "--target",
                "emulator",
                *args,
                "--project-dir",
                str(DBT_PROJECT_DIR),
                "--profiles-dir",
                str(DBT_PROJECT_DIR),
                "--target-path",
                str(target),
                "--log-path",
                str(self.tmp / "logs"),
            ],
            cwd=DBT_PROJECT_DIR,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, f"dbt {command} failed:\n{result.stdout[-6000:]}"
        results = json.loads((target / "run_results.json").read_text())["results"]
        return {r["unique_id"]: r["status"] for r in results}

    def query(self, sql: str) -> list[tuple]:
        return [tuple(r.values()) for r in self.client.query(sql).result()]

    def daily_revenue(self) -> dict:
        rows = self.query(
            "select revenue_date, unique_customers, order_count, total_revenue, avg_order_value "  # noqa: S608
            f"from `{self.prefix}_marts`.`daily_revenue`"
        )
        # in cents: the emulator's ROUND(NUMERIC, 2) keeps a third decimal (module docstring)
        return {r[0]: (*r[1:4], r[4].quantize(Decimal("0.01"))) for r in rows}


@pytest.fixture(scope="module")
def dbt_emulator(bq_emulator, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dbt_emulator")
    runner = EmulatorDbt(bq_emulator, tmp)
    raw = tmp / "warehouse.duckdb"
    create_raw_tables(raw)
    with duckdb.connect(str(raw)) as con:
        load_from_duckdb(runner.client, con, "raw", runner.raw)
        runner.direct = {r[0]: r[1:] for r in con.execute(DIRECT_DAILY_REVENUE).fetchall()}
    yield runner
    for ds in runner.client.list_datasets():
        if ds.dataset_id.startswith((runner.prefix, runner.raw)):
            runner.client.delete_dataset(ds.dataset_id, delete_contents=True)


def test_dbt_build_runs_every_supported_node_on_the_emulator(dbt_emulator):
    statuses = dbt_emulator.dbt("build")
    manifest = json.loads((dbt_emulator.tmp / "target" / "manifest.json").read_text())
    nodes = {
        uid
        for uid, n in {**manifest["nodes"], **manifest["unit_tests"]}.items()
        if n["resource_type"] in ("model", "test", "unit_test")
        and not (n["resource_type"] == "model" and n["config"]["materialized"] == "ephemeral")
    }
    assert set(manifest["disabled"]) == DISABLED  # the one node the emulator target leaves out
    assert set(statuses) == nodes  # everything else ran ...
    assert set(statuses.values()) == {"success", "pass"}  # ... and passed
    assert dbt_emulator.daily_revenue() == dbt_emulator.direct

    # One daily partition window (the daily marts and what they read), run twice: it replaces
    # its dates only, and the second run changes nothing.
    raw_orders = f"`{dbt_emulator.raw}`.`orders`"
    dbt_emulator.query(f"update {raw_orders} set total = 45.00 where id = 7")  # noqa: S608
    before = dbt_emulator.daily_revenue()
    for _ in range(2):
        ran = dbt_emulator.dbt("run", "--select", "+tag:daily", "--vars", WINDOW_VARS)
        assert set(ran.values()) == {"success"}
        after = dbt_emulator.daily_revenue()
        changed = {d for d in after if after[d] != before.get(d)}
        assert {str(d) for d in changed} == {"2024-03-04"}  # inside [min_date, max_date)
        assert after[max(changed)][2] == Decimal("45.00")
