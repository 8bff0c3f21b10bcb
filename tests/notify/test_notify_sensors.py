"""The run-failure and ERROR-check sensors, against real runs in a real (temporary) instance,
writing to the dev sink."""

from __future__ import annotations

import dagster as dg
import pytest

from analytics_assets.defs.notify.sensors import (
    build_notify_defs,
    notify_on_check_error,
    notify_on_run_failure,
)


@pytest.fixture
def notifier(sink):
    return build_notify_defs().resources["notifier"]


@dg.op
def refresh_fx_rates():
    raise ValueError("rates feed returned 0 rows")


@dg.job
def fx_job():
    refresh_fx_rates()


def test_run_failure_posts_job_run_and_the_failing_steps_error(notifier, sink):
    with dg.instance_for_test() as instance:
        result = fx_job.execute_in_process(
            instance=instance, raise_on_error=False, tags={"dagster/partition": "2026-03-09"}
        )
        context = dg.build_run_status_sensor_context(
            sensor_name=notify_on_run_failure.name,
            dagster_instance=instance,
            dagster_run=result.dagster_run,
            dagster_event=result.get_run_failure_event(),
            resources={"notifier": notifier},
        ).for_run_failure()
        notify_on_run_failure(context)

    [line] = sink.lines()
    assert line["kind"] == "run_failure"
    assert line["fields"] == {
        "job": "fx_job",
        "run_id": result.run_id,
        "partition": "2026-03-09",
        "failed_steps": ["refresh_fx_rates"],
    }
    assert f"run `{result.run_id}`, partition 2026-03-09" in line["text"]
    assert "step `refresh_fx_rates`: ValueError: rates feed returned 0 rows" in line["text"]


def test_run_failure_sensor_runs_by_default():
    assert notify_on_run_failure.default_status == dg.DefaultSensorStatus.RUNNING


# --- checks ------------------------------------------------------------------------------------

ROWS = {"value": 0}


@dg.asset
def orders_copy():
    return None


@dg.asset_check(asset=orders_copy)
def has_rows():
    """ERROR severity: the mart is unusable without rows."""
    return dg.AssetCheckResult(
        passed=ROWS["value"] > 0,
        severity=dg.AssetCheckSeverity.ERROR,
        description=f"{ROWS['value']} rows",
    )


@dg.asset_check(asset=orders_copy)
def few_nulls():
    """WARN severity: worth a look in the UI, not a message."""
    return dg.AssetCheckResult(passed=False, severity=dg.AssetCheckSeverity.WARN)


def test_error_check_failure_is_posted_once_per_failing_execution(notifier, sink):
    defs = dg.Definitions(assets=[orders_copy], asset_checks=[has_rows, few_nulls])

    with dg.instance_for_test() as instance:

        def tick(cursor):
            context = dg.build_sensor_context(
                instance=instance,
                cursor=cursor,
                definitions=defs,
                resources={"notifier": notifier},
            )
            notify_on_check_error(context)
            return context.cursor

        def run_checks(rows: int):
            ROWS["value"] = rows
            result = dg.materialize(
                [orders_copy, has_rows, few_nulls], instance=instance, raise_on_error=False
            )
            return result.run_id

        cursor = tick(None)  # starts watching
        failing_run = run_checks(rows=0)
        cursor = tick(cursor)
        cursor = tick(cursor)  # same failing execution: not posted again
        run_checks(rows=5)  # passes: nothing to say
        cursor = tick(cursor)
        second_failure = run_checks(rows=0)
        cursor = tick(cursor)

    lines = sink.lines()
    assert [line["kind"] for line in lines] == ["check_failure", "check_failure"]
    assert [line["fields"]["run_id"] for line in lines] == [failing_run, second_failure]
    assert lines[0]["fields"]["check"] == "has_rows"
    assert lines[0]["fields"]["asset"] == "orders_copy"
    assert "0 rows" in lines[0]["text"]
    # The WARN check failed in every run and was never posted.
    assert all(line["fields"]["check"] != "few_nulls" for line in lines)


def test_a_check_failing_before_the_sensor_started_is_not_replayed(notifier, sink):
    defs = dg.Definitions(assets=[orders_copy], asset_checks=[has_rows])
    ROWS["value"] = 0
    with dg.instance_for_test() as instance:
        dg.materialize([orders_copy, has_rows], instance=instance, raise_on_error=False)
        context = dg.build_sensor_context(
            instance=instance, definitions=defs, resources={"notifier": notifier}
        )
        result = notify_on_check_error(context)
    assert "started watching" in result.skip_message
    assert sink.lines() == []
