"""Secrets never reach logs, metadata or errors; identifiers from configuration are validated."""

from __future__ import annotations

import json
import uuid

import dagster as dg
import pytest

from analytics_assets import cli, settings
from analytics_assets.lib.errors import SourceUnavailable
from analytics_assets.lib.pg import connect


@pytest.fixture
def secret_source(platform_env, monkeypatch):
    """The same database, reached through a DSN that carries a password (the embedded server
    trusts local connections, so the password is not checked, but it is in every DSN we use)."""
    secret = f"S3cret-{uuid.uuid4().hex}"
    url = platform_env.source.url.replace(
        "postgresql://postgres@", f"postgresql://postgres:{secret}@"
    )
    monkeypatch.setenv("SOURCE_DATABASE_URL", url)
    settings.get_settings.cache_clear()
    yield secret, url
    settings.get_settings.cache_clear()


def _everything_a_run_emits(instance: dg.DagsterInstance) -> str:
    parts = []
    for run in instance.get_runs():
        parts.append(json.dumps(run.run_config, default=str))
        parts.append(json.dumps(dict(run.tags), default=str))
        for entry in instance.all_logs(run.run_id):
            parts.append(entry.user_message or "")
            if entry.dagster_event is not None:
                parts.append(repr(entry.dagster_event.event_specific_data))
    return "\n".join(parts)


def test_ingest_run_never_shows_the_database_password(secret_source):
    secret, _ = secret_source
    from analytics_assets.definitions import build_definitions

    defs = build_definitions()
    cdc = defs.get_assets_def(dg.AssetKey(["raw", "orders"]))
    with dg.instance_for_test() as instance:
        assert dg.materialize([cdc], instance=instance).success
        emitted = _everything_a_run_emits(instance)
    assert "raw/orders" in emitted or "raw__orders" in emitted, "the scan saw the run's events"
    assert secret not in emitted


def test_a_failed_connection_names_the_server_but_not_the_password(secret_source):
    secret, url = secret_source
    bad = url.rsplit(":", 1)[0] + ":1/app"  # port 1: nothing listens there
    with pytest.raises(SourceUnavailable) as caught:
        connect(bad)
    message = str(caught.value)
    assert "***" in message and secret not in message
    # raised `from None`: the driver's own message (which can echo the DSN) is not chained
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


@pytest.mark.parametrize(
    "variable, value",
    [
        ("CAPTURED_TABLES", 'orders"; drop table users; --'),
        ("CAPTURED_TABLES", "orders,Robert'); DROP TABLE students;--"),
        ("CDC_SLOT", "slot; select pg_sleep(10)"),
        ("CDC_PUBLICATION", 'pub" cascade'),
    ],
)
def test_hostile_identifiers_are_refused_with_one_line(variable, value, monkeypatch, capsys):
    monkeypatch.setenv(variable, value)
    settings.get_settings.cache_clear()
    try:
        assert cli.main(["stack", "status"]) == cli.EXIT_USER_ERROR
    finally:
        settings.get_settings.cache_clear()
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "not a valid name" in err


@pytest.mark.parametrize(
    "variable, value, expected",
    [
        ("ANALYTICS_ENV", "staging", "ANALYTICS_ENV"),
        ("PARTITION_START_DATE", "2026-13-01", "PARTITION_START_DATE"),
        ("CDC_BATCH_SIZE", "-5", "CDC_BATCH_SIZE"),
    ],
)
def test_bad_configuration_is_one_clear_line(variable, value, expected, monkeypatch, capsys):
    monkeypatch.setenv(variable, value)
    settings.get_settings.cache_clear()
    try:
        assert cli.main(["stack", "status"]) == cli.EXIT_USER_ERROR
    finally:
        settings.get_settings.cache_clear()
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected in err and "Traceback" not in err
