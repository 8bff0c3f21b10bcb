"""The notifier resource: Slack webhook in prod (a local HTTP server stands in for Slack, see
conftest.py), a JSON-lines file in dev, and a webhook URL that never leaks."""

from __future__ import annotations

import logging
import socket
import traceback

import dagster as dg
import pytest
from dagster._core.remote_representation.external_data import RepositorySnap
from dagster._serdes import serialize_value

from analytics_assets import settings
from analytics_assets.defs.notify.resources import NotificationError, Notifier
from analytics_assets.defs.notify.sensors import build_notify_defs, notify_on_run_failure


@dg.op
def load_orders():
    raise RuntimeError("warehouse rejected the batch")


@dg.job
def nightly_load():
    load_orders()


def failed_run_context(instance, notifier):
    result = nightly_load.execute_in_process(instance=instance, raise_on_error=False)
    assert not result.success
    return dg.build_run_status_sensor_context(
        sensor_name=notify_on_run_failure.name,
        dagster_instance=instance,
        dagster_run=result.dagster_run,
        dagster_event=result.get_run_failure_event(),
        resources={"notifier": notifier},
    ).for_run_failure()


@pytest.fixture
def prod_notify(notify_env, webhook, monkeypatch):
    """The prod wiring: ANALYTICS_ENV=prod and the webhook URL only in SLACK_WEBHOOK_URL."""
    monkeypatch.setenv("ANALYTICS_ENV", "prod")
    monkeypatch.setenv("SLACK_WEBHOOK_URL", webhook.url)
    settings.get_settings.cache_clear()
    return build_notify_defs()


def resolved(notifier: Notifier) -> Notifier:
    """The resource as a sensor sees it: EnvVar fields replaced by their values."""
    with dg.build_sensor_context(resources={"notifier": notifier}) as context:
        return context.resources.notifier


def secret_parts(url: str) -> list[str]:
    return [url, url.split("/services/")[1]]


def test_prod_run_failure_is_posted_to_the_slack_webhook(prod_notify, webhook, sink):
    notifier = prod_notify.resources["notifier"]
    with dg.instance_for_test() as instance:
        notify_on_run_failure(failed_run_context(instance, notifier))

    assert len(webhook.requests) == 1
    request = webhook.requests[0]
    assert request["path"] == "/services/T0TEST/B0TEST/s3cr3t-t0ken"
    assert request["content_type"] == "application/json"
    text = request["body"]["text"]
    assert "Run failed: job `nightly_load`" in text
    assert "step `load_orders`: RuntimeError: warehouse rejected the batch" in text
    assert sink.lines() == []  # prod does not write the dev sink


def test_webhook_url_stays_out_of_repr_logs_errors_and_the_ui(
    prod_notify, webhook, monkeypatch, caplog, capfd
):
    notifier = prod_notify.resources["notifier"]
    live = resolved(notifier)
    assert live.slack_webhook_url == webhook.url  # the EnvVar did resolve
    leaks = []

    def assert_hidden(text: str, where: str):
        for secret in secret_parts(webhook.url):
            if secret in text:
                leaks.append(where)

    assert_hidden(repr(live) + str(live) + live.destination, "repr")

    # What the UI and `dagster` CLI show for resources: the variable's name, never its value.
    snap = serialize_value(RepositorySnap.from_def(prod_notify.get_repository_def()))
    assert "SLACK_WEBHOOK_URL" in snap
    assert_hidden(snap, "repository snapshot")

    # A refused post: the error (and its traceback) name the status, not the URL.
    webhook.status = 403
    with pytest.raises(NotificationError) as refused:
        live.notify("test", "hello")
    assert "HTTP 403: invalid_token" in str(refused.value)
    assert refused.value.__cause__ is None and refused.value.__suppress_context__
    assert_hidden("".join(traceback.format_exception(refused.value)), "HTTP error")

    # Nobody listening, and a malformed URL whose error message would quote it.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    for url in (
        f"http://127.0.0.1:{closed_port}/services/T0/B0/other-s3cret",
        "hooks.slack.invalid/services/T0/B0/other-s3cret",
    ):
        with pytest.raises(NotificationError) as failed:
            Notifier(slack_webhook_url=url, timeout_seconds=2).notify("test", "hello")
        assert "other-s3cret" not in "".join(traceback.format_exception(failed.value))

    # A whole sensor tick, logs and output captured at DEBUG.
    webhook.status = 200
    caplog.set_level(logging.DEBUG)
    with dg.instance_for_test() as instance:
        notify_on_run_failure(failed_run_context(instance, notifier))
    out, err = capfd.readouterr()
    assert_hidden(caplog.text + out + err, "logs")
    assert webhook.requests  # the tick did post

    assert leaks == []


def test_dev_sink_appends_one_json_line_per_message(sink):
    notifier = build_notify_defs().resources["notifier"]
    assert notifier.slack_webhook_url is None
    assert notifier.sink_path == str(sink.path)

    notifier.notify("run_failure", "first", {"run_id": "abc"})
    notifier.notify("daily_summary", "second")

    lines = sink.lines()
    assert [(line["kind"], line["text"], line["fields"]) for line in lines] == [
        ("run_failure", "first", {"run_id": "abc"}),
        ("daily_summary", "second", {}),
    ]
    assert all(line["at"].endswith("+00:00") for line in lines)


def test_a_notifier_with_nowhere_to_post_says_so():
    with pytest.raises(NotificationError, match="neither a Slack webhook nor a sink path"):
        Notifier().notify("test", "hello")
