"""The Dagster UI in a real browser, the way an operator uses it: the webserver and the daemon
(what `dagster dev` starts) on the project against the embedded stack, driven by headless Chromium.

Instance: the project's own dagster.yaml (Postgres storage on the embedded server in a fresh
database, queued run coordinator, concurrency limits). The operator pauses the automation from the
UI before the daemon starts: the project's sensors are on by default and would start runs of their
own (yesterday's partition, ingest heartbeats) that race the one under test for DuckDB's single
writer. Screenshots and the servers' logs go to $ANALYTICS_TEST_ARTIFACTS/ui
(default .data/test-artifacts/ui).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re

import dagster as dg
import duckdb
import psycopg2

from analytics_assets.defs.sources.traffic import generate_history

END = dt.datetime(2026, 3, 10, tzinfo=dt.UTC)
DAY = "2026-03-07"
GROUPS = {"app_db", "raw", "staging", "intermediate", "marts"}
PREPARE_TIMEOUT_S = 300
RUN_TIMEOUT_MS = 150_000
UI_TIMEOUT_MS = 60_000
# Dagster shows a community sign-up dialog on the first visit; a returning user has this key.
DISMISS_COMMUNITY_DIALOG = "localStorage.setItem('communityNux', '\"1\"')"


def _load_history(platform_env) -> None:
    conn = psycopg2.connect(platform_env.source_url)
    generate_history(conn, days=8, orders_per_day=60, seed=21, end=END)
    conn.close()


@contextlib.contextmanager
def _screenshot_on_failure(page, artifacts_dir):
    try:
        yield
    except BaseException:
        with contextlib.suppress(Exception):
            page.screenshot(path=artifacts_dir / "failure.png", full_page=True)
        raise


def _pause_automation(page, url: str, count: int, artifacts_dir) -> None:
    from playwright.sync_api import expect

    page.goto(f"{url}/automation")
    page.get_by_text("Select all").click()
    page.get_by_role("button", name=re.compile("Actions")).click()
    page.get_by_role("menuitem", name=f"Stop {count} automations").click()
    confirm = page.locator(".bp5-dialog")
    confirm.get_by_role("button", name=f"Stop {count} automations").click()
    expect(confirm).to_contain_text(f"Successfully stopped {count} automations")
    confirm.get_by_role("button", name="Done").click()
    expect(confirm).to_be_hidden()
    page.screenshot(path=artifacts_dir / "00-automation-paused.png")


def test_operator_sees_every_group_launches_a_partition_and_reads_its_checks(
    platform_env, dagster_services, browser, artifacts_dir
):
    from playwright.sync_api import expect

    from analytics_assets.definitions import build_definitions

    # The daily marts need their upstreams: a week of history, then ingest + every unpartitioned
    # model with the README's command (what `make demo` does first). It runs in the background
    # while the servers start and the operator pauses the automation.
    _load_history(platform_env)
    prepare = dagster_services.start_cli(
        ["asset", "materialize", "-m", "analytics_assets.definitions", "--select", "not tag:daily"],
        "prepare-not-daily",
    )
    dagster_services.start_webserver()
    defs = build_definitions()
    graph = defs.resolve_asset_graph()
    repo = defs.get_repository_def()
    automations = len(repo.sensor_defs) + len(repo.schedule_defs)
    daily = dg.AssetSelection.from_string("tag:daily").resolve(graph)
    daily_checks = [ck for ck in graph.asset_check_keys if ck.asset_key in daily]
    groups = {graph.get(key).group_name for key in graph.get_all_asset_keys()}
    assert groups >= GROUPS, "the code location itself misses a group"
    assert daily_checks, "the daily marts have no asset checks to look at"

    url = dagster_services.wait_webserver()
    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    context.add_init_script(DISMISS_COMMUNITY_DIALOG)
    context.set_default_timeout(UI_TIMEOUT_MS)
    page = context.new_page()
    try:
        with _screenshot_on_failure(page, artifacts_dir):
            # 0. Pause every sensor and schedule, then start the daemon (it dequeues our run).
            if automations:
                _pause_automation(page, url, automations, artifacts_dir)
                with dg.DagsterInstance.get() as instance:
                    states = instance.all_instigator_state()
                    assert len(states) == automations
                    assert {s.status.value for s in states} == {"STOPPED"}
            dagster_services.start_daemon()

            # 1. The global lineage shows every group, and no stray one (e.g. `default`).
            page.goto(f"{url}/asset-groups")
            group_nodes = page.locator("svg foreignObject.group")
            for group in sorted(GROUPS):
                expect(group_nodes.locator(f'[data-tooltip="{group}"]')).to_be_visible()
            shown = {node.text_content().strip() for node in group_nodes.all()}
            assert shown == groups
            page.screenshot(path=artifacts_dir / "01-asset-graph-groups.png")

            # 2. Select the daily marts, materialize one partition from the launch dialog.
            assert prepare.wait_exit(PREPARE_TIMEOUT_S) == 0, prepare.log_tail()
            page.locator(".CodeMirror").first.click()
            page.keyboard.type("tag:daily")
            page.keyboard.press("Enter")
            for key in daily:
                expect(page.get_by_role("button", name=key.path[-1]).first).to_be_visible()
            page.get_by_role("button", name=re.compile("Materialize all")).click()
            dialog = page.locator(".bp5-dialog")
            expect(dialog).to_contain_text(f"materialize {len(daily)} assets")
            show_all = dialog.get_by_text("Show all partitions")
            partitions = dialog.locator("input[placeholder^='ex: ']")
            # partitions older than 90 days are hidden behind this link (ours are, from now on)
            expect(show_all.or_(partitions)).to_be_visible()
            if show_all.is_visible():
                show_all.click()
            partitions.fill(DAY)
            partitions.press("Enter")
            expect(dialog).to_contain_text("1 partition")
            launch = dialog.get_by_role("button", name=re.compile("Launch 1 run"))
            expect(launch).to_be_enabled()
            page.screenshot(path=artifacts_dir / "02-launch-partition-dialog.png")
            launch.click()

            # 3. The toast links to the run; the run succeeds and its page lists every check.
            view = page.locator("a[href*='/runs/']", has_text="View")
            expect(view).to_be_visible()
            run_id = view.get_attribute("href").rstrip("/").rsplit("/", 1)[-1]
            view.click()
            expect(page).to_have_url(re.compile(f"/runs/{run_id}"))
            status = page.get_by_text(re.compile(r"^(Success|Failure|Canceled)$")).first
            expect(status).to_be_visible(timeout=RUN_TIMEOUT_MS)
            expect(status).to_have_text("Success")
            expect(page.get_by_text(f"partition: {DAY}")).to_be_visible()
            expect(page.get_by_text(f"{len(daily_checks)} checks")).to_be_visible()
            page.locator("input[placeholder^='Filter']").fill("type:ASSET_CHECK_EVALUATION")
            page.keyboard.press("Enter")
            # logs pane maximized and a tall window: every filtered event is rendered (the list
            # is virtualized) and in the screenshot
            page.get_by_role("button", name="expand_arrows").last.click()
            page.set_viewport_size({"width": 1600, "height": 200 + 180 * len(daily_checks)})
            passed = page.get_by_text(re.compile(r"^Check .+ succeeded for materialization of"))
            expect(passed).to_have_count(len(daily_checks))
            failed = page.get_by_text(re.compile(r"^Check .+ failed for materialization of"))
            expect(failed).to_have_count(0)
            for check in daily_checks:
                expect(page.get_by_text(check.name, exact=True).first).to_be_attached()
            page.screenshot(path=artifacts_dir / "03-run-checks-passed.png")
    finally:
        context.close()

    # What the UI showed is what the instance and the warehouse hold; nothing else ran.
    with dg.DagsterInstance.get() as instance:
        run = instance.get_run_by_id(run_id)
        assert run.status == dg.DagsterRunStatus.SUCCESS
        assert run.tags.get("dagster/partition") == DAY
        for key in daily:
            assert instance.get_materialized_partitions(key) == {DAY}, key
        assert len(instance.get_runs()) == 2, "the preparation's run and the UI's, nothing else"
    con = duckdb.connect(str(platform_env.warehouse_path), read_only=True)
    try:
        days = con.execute("select revenue_date from marts.daily_revenue").fetchall()
    finally:
        con.close()
    assert [d.isoformat() for (d,) in days] == [DAY]
