"""The rules behind each check, without a database: verdicts, masking, thresholds, the CDC
watermark on a small DuckDB file, and the dbt tests the project must have (from its manifest)."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

import duckdb
import pytest

from analytics_assets.defs.quality import reconciliation, schema_drift, slot_health, volume
from analytics_assets.defs.quality.dbt_evidence import _unexplained_failures
from analytics_assets.defs.quality.masking import mask_email, mask_row
from analytics_assets.defs.quality.warehouse import Watermark, warehouse_watermark
from analytics_assets.lib.errors import ConfigError
from analytics_assets.settings import get_settings

NOW = dt.datetime(2026, 3, 10, 12, 0, tzinfo=dt.UTC)
HEALTHY = {
    "slot": "s",
    "exists": True,
    "active": False,
    "wal_status": "reserved",
    "retained_bytes": 10 * 2**20,
    "safe_wal_size": 990 * 2**20,
    "confirmed_flush_lsn": "0/1",
}


@pytest.fixture
def q(monkeypatch):
    for name in (
        "QUALITY_VOLUME_BAND",
        "QUALITY_SLOT_WAL_WARN_FRACTION",
        "QUALITY_SLOT_WAL_ERROR_FRACTION",
        "QUALITY_SLOT_HEARTBEAT_WARN_MINUTES",
        "QUALITY_SLOT_HEARTBEAT_ERROR_MINUTES",
    ):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    yield get_settings().quality
    get_settings.cache_clear()


# -- masking ---------------------------------------------------------------------------------------


def test_email_keeps_its_first_letter_and_domain():
    assert mask_email("alice@example.com") == "a***@example.com"
    assert mask_email("not-an-email") == "n***"


def test_personal_columns_and_email_like_values_are_masked_everywhere():
    row = {
        "user_id": 7,
        "email": "bob@example.com",
        "full_name": "Bob Stone",
        "note": "contact carol@example.org",
        "total": Decimal("-1.50"),
        "created_at": dt.datetime(2026, 3, 1, 9, 0),
    }
    assert mask_row(row) == {
        "user_id": 7,
        "email": "b***@example.com",
        "full_name": "B***",
        "note": "c***",
        "total": "-1.50",
        "created_at": "2026-03-01T09:00:00",
    }


def test_generic_test_output_of_a_personal_column_is_masked():
    assert mask_row({"failing_value": "dora.example.com"}, tested_column="email") == {
        "failing_value": "d***"
    }
    assert mask_row({"failing_value": "xx"}, tested_column="country_code") == {
        "failing_value": "xx"
    }


# -- slot health -----------------------------------------------------------------------------------


def test_healthy_slot_read_recently_passes(q):
    v = slot_health.verdict("orders", HEALTHY, NOW - dt.timedelta(minutes=5), q, now=NOW)
    assert v.passed
    assert v.metadata["retained_wal_fraction"] == 0.01


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"exists": False}, "does not exist"),
        ({"wal_status": "lost", "safe_wal_size": None}, "is lost"),
        ({"wal_status": "unreserved", "safe_wal_size": 0}, "is unreserved"),
        ({"retained_bytes": 900 * 2**20, "safe_wal_size": 100 * 2**20}, "90% of max_slot"),
    ],
)
def test_slot_losing_or_about_to_lose_wal_is_an_error(q, change, needle):
    v = slot_health.verdict("orders", {**HEALTHY, **change}, NOW, q, now=NOW)
    assert not v.passed and v.severity.value == "ERROR"
    assert needle in v.description


def test_retained_wal_over_the_warn_fraction_warns(q):
    status = {**HEALTHY, "retained_bytes": 600 * 2**20, "safe_wal_size": 400 * 2**20}
    v = slot_health.verdict("orders", status, NOW, q, now=NOW)
    assert not v.passed and v.severity.value == "WARN"


def test_unlimited_wal_keep_size_reports_bytes_only(q):
    v = slot_health.verdict("orders", {**HEALTHY, "safe_wal_size": None}, NOW, q, now=NOW)
    assert v.passed and v.metadata["max_slot_wal_keep_size"] == "unlimited"


def test_heartbeat_age_warns_then_errors(q):
    warn = slot_health.verdict("orders", HEALTHY, NOW - dt.timedelta(hours=2), q, now=NOW)
    assert warn.severity.value == "WARN" and "120 min ago" in warn.description
    error = slot_health.verdict("orders", HEALTHY, NOW - dt.timedelta(days=2), q, now=NOW)
    assert error.severity.value == "ERROR"
    never = slot_health.verdict("orders", HEALTHY, None, q, now=NOW)
    assert never.severity.value == "WARN" and "never" in never.description


def test_thresholds_are_validated(monkeypatch):
    monkeypatch.setenv("QUALITY_SLOT_WAL_WARN_FRACTION", "0.9")
    monkeypatch.setenv("QUALITY_SLOT_WAL_ERROR_FRACTION", "0.5")
    get_settings.cache_clear()
    with pytest.raises(ConfigError, match="WARN_FRACTION must not be above"):
        get_settings()
    monkeypatch.setenv("QUALITY_SLOT_WAL_WARN_FRACTION", "lots")
    with pytest.raises(ConfigError, match="is not a number"):
        get_settings()


# -- schema drift ----------------------------------------------------------------------------------


def _cols(**types):
    return {n: schema_drift.SourceColumn(n, pg, duck) for n, (pg, duck) in types.items()}


def test_schema_drift_new_column_warns_dropped_and_retyped_error():
    source = _cols(
        id=("bigint", "BIGINT"),
        total=("numeric(14,2)", "DECIMAL(14,2)"),
        coupon=("text", "VARCHAR"),
    )
    raw = {"id": "BIGINT", "total": "DECIMAL(12,2)", "legacy": "VARCHAR"}
    v = schema_drift.verdict("orders", source, raw)
    assert v.severity.value == "ERROR"
    assert "new source column orders.coupon (text)" in v.description
    assert "orders.legacy (VARCHAR in raw) was dropped" in v.description
    assert "orders.total changed type" in v.description
    warn = schema_drift.verdict("orders", source, {"id": "BIGINT", "total": "DECIMAL(14,2)"})
    assert warn.severity.value == "WARN" and warn.metadata["added"] == ["coupon"]


def test_schema_drift_missing_tables_are_errors():
    assert "does not exist" in schema_drift.verdict("orders", None, {}).description
    assert "raw.orders does not exist" in schema_drift.verdict("orders", {}, None).description


# -- volume ----------------------------------------------------------------------------------------

DAY = dt.date(2026, 3, 8)


def _window(counts):
    return {DAY - dt.timedelta(days=i): (n, Decimal(n * 10)) for i, n in counts.items()}


def test_volume_within_band_passes_and_beyond_warns():
    history = {i: 100 for i in range(1, 8)}
    built = set(_window(history))
    ok = volume.verdict(DAY, _window({**history, 0: 130}), built, band=0.5, min_days=3)
    assert ok.passed and ok.metadata["order_count_median_7d"] == 100
    spike = volume.verdict(DAY, _window({**history, 0: 300}), built, band=0.5, min_days=3)
    assert spike.severity.value == "WARN" and "200% above" in spike.description
    drop = volume.verdict(DAY, _window(history), built | {DAY}, band=0.5, min_days=3)
    assert drop.severity.value == "WARN" and "100% below" in drop.description


def test_volume_counts_only_built_days_and_needs_enough_history():
    rows = _window({0: 100, 1: 100})
    v = volume.verdict(DAY, rows, {DAY - dt.timedelta(days=1)}, band=0.5, min_days=3)
    assert v.passed and "no verdict" in v.description
    built = {DAY - dt.timedelta(days=i) for i in range(1, 8)}  # built days without rows are zeros
    zeros = volume.verdict(DAY, {DAY: (5, Decimal(50))}, built, band=0.5, min_days=3)
    assert zeros.severity.value == "WARN" and "n/a above" in zeros.description


def test_volume_judges_a_day_only_once_it_has_settled():
    # DAY ends at 2026-03-09 00:00 UTC; 30 min grace + 2 settle days: judged from 03-11 00:30
    rule = dict(grace_minutes=30, settle_days=2, timezone="UTC")
    young = dt.datetime(2026, 3, 11, 0, 29, tzinfo=dt.UTC)
    ready, why = volume.settled(DAY, young, **rule)
    assert not ready and "not settled, no verdict" in why and "QUALITY_VOLUME_SETTLE_DAYS=2" in why
    history = {i: 100 for i in range(1, 8)}
    # a day with a fifth of its orders completed so far is not a drop while it settles
    partial = volume.verdict(
        DAY, _window({**history, 0: 20}), set(_window(history)), band=0.5, min_days=3, unsettled=why
    )
    assert partial.passed and partial.description == why
    assert volume.settled(DAY, young + dt.timedelta(minutes=1), **rule)[0]
    assert not volume.settled(DAY, None, **rule)[0]  # lag unknown: not judged either


# -- reconciliation --------------------------------------------------------------------------------

WATERMARK = Watermark(NOW, 100, (), {})


def _figures(mart_orders=10, mart_revenue="100.00", loaded=NOW):
    return reconciliation.Figures(
        10, Decimal("100.00"), mart_orders, Decimal(mart_revenue), 0, Decimal(0), 0, 12, loaded
    )


def test_reconciliation_passes_when_equal_and_errors_when_not():
    ok = reconciliation.verdict(DAY, WATERMARK, _figures(), margin_seconds=300, built_at=NOW)
    assert ok.passed
    bad = reconciliation.verdict(
        DAY, WATERMARK, _figures(11, "90.00"), margin_seconds=300, built_at=NOW
    )
    assert bad.severity.value == "ERROR"
    assert "orders: source 10, mart 11 (+1)" in bad.description
    assert "revenue: source 100.00, mart 90.00 (-10.00)" in bad.description


def test_reconciliation_of_a_stale_partition_only_warns():
    stale = reconciliation.verdict(
        DAY,
        WATERMARK,
        _figures(11, loaded=NOW),
        margin_seconds=300,
        built_at=NOW - dt.timedelta(hours=1),
    )
    assert stale.severity.value == "WARN" and "rebuild the partition" in stale.description


def test_reconciliation_without_a_watermark_warns():
    none = Watermark(None, None, ("orders",), {})
    v = reconciliation.verdict(DAY, none, None, margin_seconds=300, built_at=None)
    assert v.severity.value == "WARN" and "orders not ingested" in v.description


def test_watermark_is_the_newest_commit_below_every_tables_checkpoint(tmp_path):
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    con.execute("create schema raw")
    con.execute(
        "create table raw._cdc_state (table_name varchar, position_lsn bigint, "
        "position_seq bigint, checkpoint varchar, feed varchar, updated_at timestamptz)"
    )
    # orders applied through 0/200 (512), users through 0/100 (256)
    con.execute(
        "insert into raw._cdc_state values ('orders', 500, 2, '0/200', 'slot', ?), "
        "('users', 250, 2, '0/100', 'slot', ?)",
        [NOW, NOW - dt.timedelta(minutes=1)],
    )
    for table in ("orders", "users"):
        con.execute(f"create table raw.{table}_changes (_lsn bigint, _commit_ts timestamptz)")
    con.execute(
        "insert into raw.orders_changes values (100, ?), (250, ?), (500, ?)",
        [NOW - dt.timedelta(hours=3), NOW - dt.timedelta(hours=2), NOW],
    )
    con.execute("insert into raw.users_changes values (90, ?)", [NOW - dt.timedelta(hours=4)])
    w = warehouse_watermark(con, ["orders", "users"])
    assert w.applied_through_lsn == 256
    assert w.commit_ts == NOW - dt.timedelta(hours=2)
    assert w.last_confirmed["users"] == NOW - dt.timedelta(minutes=1)
    missing = warehouse_watermark(con, ["orders", "users", "products"])
    assert not missing.known and missing.missing_tables == ("products",)
    con.close()


# -- dbt -------------------------------------------------------------------------------------------


def test_only_test_failures_reported_as_checks_are_explained():
    results = {
        "results": [
            {"unique_id": "test.a", "status": "fail"},
            {"unique_id": "model.m", "status": "skipped"},
            {"unique_id": "test.b", "status": "pass"},
        ]
    }
    assert _unexplained_failures(results, {"test.a"}) == []
    assert _unexplained_failures(results, set()) == ["test.a"]
    errored = {"results": [*results["results"], {"unique_id": "model.x", "status": "error"}]}
    assert _unexplained_failures(errored, {"test.a"}) == ["model.x"]
    unit = {"results": [{"unique_id": "unit_test.analytics.m.t", "status": "fail"}]}
    assert _unexplained_failures(unit, set()) == ["unit_test.analytics.m.t"]


def _tests_by_model(manifest):
    out: dict[str, list[dict]] = {}
    for node in manifest["nodes"].values():
        if node["resource_type"] == "test" and node.get("attached_node"):
            out.setdefault(node["attached_node"].split(".")[-1], []).append(node)
    return out


def _has(tests, name, column, severity="ERROR", **kwargs):
    for t in tests:
        meta = t.get("test_metadata") or {}
        args = meta.get("kwargs", {})
        if (
            meta.get("name") == name
            and t.get("column_name") == column
            and t["config"]["severity"].upper() == severity
            and all(args.get(k) == v for k, v in kwargs.items())
        ):
            return True
    return False


def test_the_dbt_project_has_the_required_gates():
    from analytics_assets.defs.dbt.project import get_dbt_project

    manifest = json.loads(get_dbt_project().manifest_path.read_text())
    tests = _tests_by_model(manifest)
    models = [n for n in manifest["nodes"].values() if n["resource_type"] == "model"]
    for model in models:
        mine = tests.get(model["name"], [])
        composite = [
            t
            for t in mine
            if (t.get("test_metadata") or {}).get("name") == ("unique_combination_of_columns")
        ]
        if composite:
            for column in composite[0]["test_metadata"]["kwargs"]["combination_of_columns"]:
                assert _has(mine, "not_null", column), (model["name"], column)
            continue
        unique = [
            t["column_name"] for t in mine if (t.get("test_metadata") or {}).get("name") == "unique"
        ]
        assert unique, f"{model['name']} has no primary key test"
        assert _has(mine, "unique", unique[0]) and _has(mine, "not_null", unique[0]), model["name"]
        for t in mine:
            assert t["config"]["store_failures"], t["name"]
    orders, users = tests["stg_app__orders"], tests["stg_app__users"]
    assert _has(orders, "not_null", "user_id")
    assert _has(orders, "relationships", "user_id", to="source('app', 'users')", field="id")
    assert _has(orders, "not_null", "total")
    assert _has(orders, "accepted_range", "total", min_value=0)
    assert _has(orders, "accepted_values", "status")
    assert _has(users, "matches_pattern", "email")
