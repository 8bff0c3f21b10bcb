"""Every dbt invocation of the assets starts from the newest parse (`partial_parse.msgpack` beside
the project's manifest, or a recent invocation's), instead of parsing the whole project again:
dagster-dbt gives each invocation a fresh target folder and looks for the file only in
DBT_TARGET_PATH itself. When the project's parse does not fit the environment (a profile rendered
with other variables), one invocation parses in full and the next ones reuse its parse."""

from __future__ import annotations

import json

from analytics_assets.defs.dbt.project import PARTIAL_PARSE_FILE, dbt_cli_resource, get_dbt_project
from analytics_assets.lib.partitions import dbt_zone_vars


def test_an_invocation_reuses_the_projects_parse_instead_of_a_full_parse():
    project = get_dbt_project()  # parses once if the manifest is missing
    assert (project.manifest_path.parent / PARTIAL_PARSE_FILE).exists()
    args = ["ls", "--select", "revenue_minutely", "--vars", json.dumps(dbt_zone_vars())]
    # the first may parse in full (this session's variables may render another profile)
    assert dbt_cli_resource().cli(args).wait().is_successful()
    invocation = dbt_cli_resource().cli([*args, "--log-level", "debug"])
    messages = [e.raw_event.get("info", {}).get("msg", "") for e in invocation.stream_raw_events()]
    assert invocation.wait().is_successful()
    assert (invocation.target_path / PARTIAL_PARSE_FILE).exists()
    assert any("Partial parsing enabled" in m for m in messages), messages[:20]
    assert not any("Unable to do partial parsing" in m for m in messages)


def test_a_daily_window_in_between_does_not_make_the_next_invocation_parse_in_full():
    """A daily mart's build passes its window as `--vars`, and dbt parses in full for other vars.
    The fast path's next dbt step (the zone vars again) starts from the newest parse made with
    its own vars, not from the daily build's."""
    zone = ["ls", "--select", "revenue_minutely", "--vars", json.dumps(dbt_zone_vars())]
    window = {**dbt_zone_vars(), "min_date": "2026-03-01", "max_date": "2026-03-02"}
    daily = ["ls", "--select", "daily_revenue", "--vars", json.dumps(window)]
    assert dbt_cli_resource().cli(zone).wait().is_successful()
    assert dbt_cli_resource().cli(daily).wait().is_successful()  # newest parse: other vars
    invocation = dbt_cli_resource().cli([*zone, "--log-level", "debug"])
    messages = [e.raw_event.get("info", {}).get("msg", "") for e in invocation.stream_raw_events()]
    assert invocation.wait().is_successful()
    assert any("Partial parsing enabled" in m for m in messages), messages[:20]
    assert not any("Unable to do partial parsing" in m for m in messages)
