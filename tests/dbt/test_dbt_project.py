"""End-to-end tests of the dbt project against a throwaway DuckDB warehouse.

The raw layer is created by hand (`tests/raw_tables.py`) with the same shape CDC writes (source
columns plus `_lsn`, `_seq`, `_op`, `_is_deleted`, `_commit_ts`, `_loaded_at`), so these tests pin
the contract between the CDC tables and the models without running Postgres.

dbt runs as a subprocess: each invocation gets a fresh process, so the DuckDB file lock is
released between runs and the test can read the warehouse in between. Target and log paths go
to a temp dir so the project's own `target/` is never touched.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from tests.raw_tables import create_raw_tables

PROJECT_DIR = Path(__file__).resolve().parents[2] / "dbt"

WINDOW_VARS = "{min_date: '2024-03-03', max_date: '2024-03-05'}"


def _dbt_executable() -> str:
    beside_python = Path(sys.executable).with_name("dbt")
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("dbt")
    if found is None:
        pytest.skip("dbt is not installed")
    return found


# Unset for every run: the tests must pass with no GCP setting at all.
GCP_AND_TARGET_ENV = {
    "DBT_TARGET",
    "GCP_PROJECT",
    "BIGQUERY_DATASET",
    "BIGQUERY_LOCATION",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "RAW_SCHEMA",
}


def _without_gcp_settings(environ: dict[str, str]) -> dict[str, str]:
    return {key: value for key, value in environ.items() if key not in GCP_AND_TARGET_ENV}


def project_args(tmp: Path, target_path: Path | None = None) -> list[str]:
    """The project, and target/ and logs/ under `tmp`: what every dbt command line here ends with."""
    return [
        "--project-dir",
        str(PROJECT_DIR),
        "--profiles-dir",
        str(PROJECT_DIR),
        "--target-path",
        str(target_path or tmp / "target"),
        "--log-path",
        str(tmp / "logs"),
    ]


class DbtProject:
    """Runs dbt against one temp warehouse, with target/ and logs/ under the temp dir."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.warehouse = tmp / "warehouse.duckdb"
        self.target_path = tmp / "target"

    def run(self, *args: str, target_path: Path | None = None) -> subprocess.CompletedProcess:
        command = [_dbt_executable(), *args, *project_args(self.tmp, target_path)]
        env = _without_gcp_settings(dict(os.environ))
        env.update(
            WAREHOUSE_PATH=str(self.warehouse),
            DBT_SEND_ANONYMOUS_USAGE_STATS="false",
            DBT_USE_COLORS="false",
        )
        result = subprocess.run(  # noqa: S603 - fixed argv, no shell
            command, cwd=PROJECT_DIR, env=env, capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0, (
            f"dbt {' '.join(args)} failed:\n{result.stdout}{result.stderr}"
        )
        return result

    def statuses(self) -> dict[str, str]:
        results = json.loads((self.target_path / "run_results.json").read_text())
        return {r["unique_id"]: r["status"] for r in results["results"]}

    def manifest(self) -> dict:
        return json.loads((self.target_path / "manifest.json").read_text())

    def query(self, sql: str) -> list[tuple]:
        with duckdb.connect(str(self.warehouse), read_only=True) as con:
            return con.execute(sql).fetchall()

    def execute(self, sql: str) -> None:
        with duckdb.connect(str(self.warehouse)) as con:
            con.execute(sql)

    def keyed(self, sql: str) -> dict:
        """First column -> the rest, for `select key, ...` queries."""
        return {row[0]: row[1:] for row in self.query(sql)}


DAILY_REVENUE = (
    "select revenue_date, unique_customers, order_count, total_revenue, avg_order_value"
    " from marts.daily_revenue"
)

# The same numbers straight from raw, written independently of the models.
DIRECT_DAILY_REVENUE = """
select
    cast(timezone('UTC', created_at) as date),
    count(distinct user_id),
    count(*),
    sum(total),
    round(sum(total) / count(*), 2)
from raw.orders
where status = 'completed' and not _is_deleted and deleted_at is null
group by 1
"""

PRODUCT_SALES_OUTSIDE_WINDOW = (
    "select * from marts.daily_product_sales"
    " where revenue_date < date '2024-03-03' or revenue_date >= date '2024-03-05' order by all"
)


@dataclass
class FullBuild:
    """What the first `dbt build` left behind, read before any test changes the warehouse."""

    statuses: dict[str, str]
    manifest: dict
    relations: set[tuple[str, str]]
    daily_revenue: dict
    direct_daily_revenue: dict
    customer_mix: dict
    fct_orders: dict
    time_to_pay: dict
    product_sales_outside_window: list[tuple]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> DbtProject:
    project = DbtProject(tmp_path_factory.mktemp("dbt_project"))
    create_raw_tables(project.warehouse)
    return project


@pytest.fixture(scope="module")
def full_build(project: DbtProject) -> FullBuild:
    project.run("build")
    return FullBuild(
        statuses=project.statuses(),
        manifest=project.manifest(),
        relations=set(
            project.query("select table_schema, table_name from information_schema.tables")
        ),
        daily_revenue=project.keyed(DAILY_REVENUE),
        direct_daily_revenue=project.keyed(DIRECT_DAILY_REVENUE),
        customer_mix=project.keyed(
            "select revenue_date, new_customers, returning_customers from marts.daily_customer_mix"
        ),
        fct_orders=project.keyed(
            "select order_id, customer_id, item_count, unit_count, customer_order_number"
            " from marts.fct_orders"
        ),
        time_to_pay=dict(
            project.query("select order_id, time_to_pay_seconds from staging.stg_app__orders")
        ),
        product_sales_outside_window=project.query(PRODUCT_SALES_OUTSIDE_WINDOW),
    )


def test_build_runs_models_data_tests_and_unit_tests_without_errors(full_build):
    statuses = full_build.statuses
    not_ok = {uid: s for uid, s in statuses.items() if s not in {"success", "pass", "warn"}}
    assert not_ok == {}
    assert {uid.split(".")[0] for uid in statuses} >= {"model", "test", "unit_test"}
    assert sum(uid.startswith("unit_test.") for uid in statuses) == 7
    assert statuses["test.analytics.assert_daily_revenue_matches_completed_orders"] == "pass"


def test_children_of_soft_deleted_parents_pass_the_relationship_tests(full_build):
    # user 3 is soft-deleted with a live order (12), order 4 is soft-deleted with a line (1003):
    # both stay by design, so every relationship test passes on them
    relationships = {
        uid: status
        for uid, status in full_build.statuses.items()
        if uid.startswith("test.analytics.relationships_")
    }
    assert any("stg_app__orders_user_id" in uid for uid in relationships)
    assert any("stg_app__order_items_order_id" in uid for uid in relationships)
    assert any("fct_orders_customer_id" in uid for uid in relationships)
    assert set(relationships.values()) == {"pass"}, relationships


def test_models_land_in_the_schema_of_their_layer(full_build):
    assert {
        ("staging", "stg_app__orders"),
        ("intermediate", "int_customer_orders_ranked"),
        ("marts", "fct_orders"),
        ("marts", "daily_revenue"),
    } <= full_build.relations
    # store_failures: failing rows of tests are kept in the audit schema
    assert any(schema == "dbt_test__audit" for schema, _ in full_build.relations)


def test_daily_revenue_equals_a_direct_aggregate_of_completed_live_orders(full_build):
    assert full_build.daily_revenue == full_build.direct_daily_revenue
    # Spelled out: cancelled, refunded, pending, soft-deleted (deleted_at) and deleted
    # (_is_deleted) orders never count; order 7 (23:30 at UTC-5 on the 3rd) is on the 4th.
    assert full_build.daily_revenue == {
        dt.date(2024, 3, 1): (2, 2, Decimal("50.00"), Decimal("25.00")),
        dt.date(2024, 3, 2): (2, 2, Decimal("35.00"), Decimal("17.50")),
        dt.date(2024, 3, 3): (1, 1, Decimal("18.00"), Decimal("18.00")),
        dt.date(2024, 3, 4): (1, 1, Decimal("40.00"), Decimal("40.00")),
        dt.date(2024, 3, 5): (1, 1, Decimal("33.00"), Decimal("33.00")),
    }


def test_time_to_pay_is_null_while_unpaid(full_build):
    assert full_build.time_to_pay[6] is None
    assert full_build.time_to_pay[1] == 300
    assert full_build.time_to_pay[7] == 60


def test_fct_orders_has_live_orders_with_item_counts_and_sequence(full_build):
    assert set(full_build.fct_orders) == {1, 2, 3, 5, 6, 7, 8, 10, 11, 12}
    # order_id: (customer_id, item_count, unit_count, customer_order_number)
    assert full_build.fct_orders[8] == (2, 2, 2, 2)
    assert full_build.fct_orders[5] == (1, 1, 1, 3)
    assert full_build.fct_orders[10] == (5, 0, 0, 3)


def test_customer_is_new_on_the_date_of_their_first_completed_order(full_build):
    # date: (new_customers, returning_customers)
    assert full_build.customer_mix[dt.date(2024, 3, 1)] == (2, 0)
    assert full_build.customer_mix[dt.date(2024, 3, 2)] == (1, 1)  # user 3 new, user 1 back
    assert full_build.customer_mix[dt.date(2024, 3, 3)] == (0, 1)
    assert full_build.customer_mix[dt.date(2024, 3, 4)] == (1, 0)


def test_daily_marts_and_their_restatement_log_carry_the_daily_tag_and_nothing_else_does(
    full_build,
):
    tagged = {
        node["name"]
        for node in full_build.manifest["nodes"].values()
        if node["resource_type"] == "model" and "daily" in node["tags"]
    }
    assert tagged == {
        "daily_revenue",
        "daily_product_sales",
        "daily_customer_mix",
        "daily_mart_reports",
    }


def test_incremental_window_rewrites_only_its_dates_and_drops_emptied_dates(project, full_build):
    project.execute(
        """
        update raw.orders set status = 'cancelled' where id = 8;   -- only completed order of 03-03
        update raw.orders set total = 45.00 where id = 7;          -- 03-04: inside the window
        update raw.orders set total = 31.00 where id = 1;          -- 03-01: before the window
        update raw.orders set status = 'cancelled' where id = 11;  -- 03-05: max_date is exclusive
        """
    )

    project.run("build", "--vars", WINDOW_VARS)

    after = project.keyed(DAILY_REVENUE)
    assert dt.date(2024, 3, 3) not in after
    assert after[dt.date(2024, 3, 4)] == (1, 1, Decimal("45.00"), Decimal("45.00"))
    # outside [min_date, max_date) the rows of the first build stay as they were, stale or not
    for day in (dt.date(2024, 3, 1), dt.date(2024, 3, 2), dt.date(2024, 3, 5)):
        assert after[day] == full_build.daily_revenue[day]
    assert project.query(
        "select count(*) from marts.daily_product_sales where revenue_date = date '2024-03-03'"
    ) == [(0,)]
    assert project.query(
        "select count(*) from marts.daily_customer_mix where revenue_date = date '2024-03-03'"
    ) == [(0,)]
    assert project.query(PRODUCT_SALES_OUTSIDE_WINDOW) == full_build.product_sales_outside_window

    # Without the vars the daily marts are rebuilt from full history.
    project.run("build", "--select", "tag:daily")
    assert project.keyed(DAILY_REVENUE) == project.keyed(DIRECT_DAILY_REVENUE)
    assert dt.date(2024, 3, 5) not in project.keyed(DAILY_REVENUE)


def test_prod_target_parses_offline_with_no_gcp_settings(project, tmp_path):
    project.run("parse", "--target", "prod", "--vars", WINDOW_VARS, target_path=tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    daily_revenue = manifest["nodes"]["model.analytics.daily_revenue"]
    assert daily_revenue["schema"] == "analytics_marts"
    assert daily_revenue["config"]["incremental_strategy"] == "insert_overwrite"
    assert daily_revenue["config"]["partition_by"] == {
        "field": "revenue_date",
        "data_type": "date",
        "granularity": "day",
    }
    # static partitions: BigQuery's MERGE empties exactly these dates, rows or no rows
    assert daily_revenue["config"]["partitions"] == [
        "cast('2024-03-03' as date)",
        "cast('2024-03-04' as date)",
    ]
    source = manifest["sources"]["source.analytics.app.orders"]
    assert source["meta"]["dagster"]["asset_key"] == ["raw", "orders"]


def _fake_service_account_key(path: Path) -> None:
    """A well-formed key nobody accepts: enough for dbt-bigquery to build credentials offline."""
    rsa = pytest.importorskip("cryptography.hazmat.primitives.asymmetric.rsa")
    serialization = pytest.importorskip("cryptography.hazmat.primitives.serialization")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    path.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": "offline-project",
                "private_key_id": "0",
                "private_key": pem,
                "client_email": "dbt@offline-project.iam.gserviceaccount.com",
                "client_id": "0",
                "token_uri": "https://oauth2.googleapis.com/token",
            }
        )
    )


def test_models_and_tests_compile_to_sql_that_parses_as_bigquery(tmp_path, monkeypatch):
    """BigQuery cannot be reached here: compile in-process, answering the one metadata call
    (`get_relation`, behind is_incremental()) with "the table exists", so the incremental
    branch with its min_date/max_date window is the one compiled (with a business time zone);
    then parse with sqlglot."""
    sqlglot = pytest.importorskip("sqlglot")
    from dbt.adapters.bigquery import BigQueryAdapter, BigQueryRelation
    from dbt.cli.main import dbtRunner

    for key in GCP_AND_TARGET_ENV:
        monkeypatch.delenv(key, raising=False)
    keyfile = tmp_path / "service-account.json"
    _fake_service_account_key(keyfile)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(keyfile))
    monkeypatch.setenv("GCP_PROJECT", "offline-project")
    monkeypatch.setenv("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")

    def existing_table(self, database, schema, identifier):
        return BigQueryRelation.create(database, schema, identifier, type="table")

    monkeypatch.setattr(BigQueryAdapter, "get_relation", existing_table)
    result = dbtRunner().invoke(
        [
            "compile",
            "--target",
            "prod",
            "--no-populate-cache",
            "--select",
            "resource_type:model resource_type:test",
            "--vars",
            WINDOW_VARS[:-1] + ", partition_timezone: America/New_York}",
            *project_args(tmp_path),
            "--quiet",
        ]
    )
    assert result.success, result.exception

    compiled = sorted((tmp_path / "target" / "compiled").rglob("*.sql"))
    assert len(compiled) > 50
    for path in compiled:
        for statement in sqlglot.parse(path.read_text(), read="bigquery"):
            assert not isinstance(statement, sqlglot.exp.Command), f"{path} did not parse"
    daily_revenue = next(p for p in compiled if p.name == "daily_revenue.sql").read_text()
    assert "order_date >= cast('2024-03-03' as date)" in daily_revenue
    assert "`offline-project`.`analytics_marts`.`fct_orders`" in daily_revenue
    # the business date in the zone Dagster passes, BigQuery's DATE(timestamp, zone)
    orders = next(p for p in compiled if p.name == "stg_app__orders.sql").read_text()
    assert "date(created_at, 'America/New_York') as order_date" in orders


def test_dbt_version_comes_from_the_environment_without_a_subprocess(monkeypatch):
    """The resource knows the dbt version without running `dbt --version` (3-7 s a run here),
    and it is the version that command reports."""
    import subprocess

    from dagster_dbt import DbtCliResource

    from analytics_assets.defs.dbt.project import dbt_cli_resource

    resource = dbt_cli_resource()
    reported = DbtCliResource(
        project_dir=resource.project_dir, dbt_executable=resource.dbt_executable
    )
    expected = reported._cli_version  # runs `dbt --version`

    def no_subprocess(*args, **kwargs):
        raise AssertionError(f"dbt subprocess started: {args}")

    monkeypatch.setattr(subprocess, "check_output", no_subprocess)
    monkeypatch.setattr("dagster_dbt.core.resource.check_output", no_subprocess)
    assert dbt_cli_resource()._cli_version == expected
