"""The Dagster UI in a real browser, the way an operator uses it: the webserver and the daemon
(what `dagster dev` starts) on the project against the embedded stack, driven by headless Chromium.

Instance: the project's own dagster.yaml (Postgres storage on the embedded server in a fresh
database, queued run coordinator, concurrency limits). The operator pauses the automation from the
UI before the daemon starts: the project's sensors are on by default and would start runs of their
own (yesterday's partition, ingest heartbeats) that race the one under test for DuckDB's single
writer. Screenshots and the servers' logs go to $ANALYTICS_TEST_ARTIFACTS/ui
(default .data/test-artifacts/ui; the backfill test prints the folder).

Two stories: launch one partition of the daily marts and read its checks on the run page; and
backfill 5 partitions of daily_revenue from its page, then 5 of all three marts from the lineage,
each from the launch dialog, waiting for the backfill daemon: one run each, success, partitions
green (a run of one mart used to fail on a dbt test comparing it with a mart it did not build).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re

import dagster as dg
import duckdb
import psycopg2

from analytics_assets.dev.traffic import generate_history

END = dt.datetime(2026, 3, 10, tzinfo=dt.UTC)
DAY = "2026-03-07"
GROUPS = {"app_db", "raw", "staging", "intermediate", "marts"}
PREPARE_TIMEOUT_S = 300
RUN_TIMEOUT_MS = 150_000
UI_TIMEOUT_MS = 60_000
# Dagster shows a community sign-up dialog on the first visit; a returning user has this key.
DISMISS_COMMUNITY_DIALOG = "localStorage.setItem('communityNux', '\"1\"')"


def _load_history(platform_env) -> None:
    conn = psycopg2.connect(platform_env.source.url)
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
    con = duckdb.connect(str(platform_env.warehouse.path), read_only=True)
    try:
        days = con.execute("select revenue_date from marts.daily_revenue").fetchall()
    finally:
        con.close()
    assert [d.isoformat() for (d,) in days] == [DAY]


# -- backfills from the launch dialog --------------------------------------------------------------

MARTS = ("daily_revenue", "daily_product_sales", "daily_customer_mix")
# Disjoint 5-day ranges of the history: one mart alone, then the three together.
ONE_MART_RANGE = ("2026-02-28", "2026-03-04")
THREE_MARTS_RANGE = ("2026-03-05", "2026-03-09")
SINGLE_RUN = "Backfills all partitions in a single run."
# What Dagster 1.13's dialog says for two or more assets whatever their policies (it compares them
# as objects): the README explains it; the run count below is what matters.
VARYING = "using varying backfill policies"
# The backfill daemon ticks every 30 s (Dagster's fixed interval): launch, then mark completed.
BACKFILL_TIMEOUT_MS = 300_000
SHORT_RUN_ID = re.compile(r"^[0-9a-f]{8}$")
BACKFILL_DONE = re.compile(r"^(Succeeded|Failed|Canceled|Completed.*)$")  # the page's status tag


def _days(first: str, last: str) -> list[str]:
    start, end = dt.date.fromisoformat(first), dt.date.fromisoformat(last)
    return [(start + dt.timedelta(days=i)).isoformat() for i in range((end - start).days + 1)]


def _launch_backfill(
    page, days: tuple[str, str], notice: str, artifacts_dir, shot: str, known: tuple[str, ...] = ()
) -> str:
    """In the open launch dialog: pick the range, check the policy notice, launch; returns the
    new backfill's id (from the toast's link; `known` ids are earlier backfills')."""
    from playwright.sync_api import expect

    dialog = page.locator(".bp5-dialog")
    show_all = dialog.get_by_text("Show all partitions")
    partitions = dialog.locator("input[placeholder^='ex: ']")
    expect(show_all.or_(partitions)).to_be_visible()
    if show_all.is_visible():
        show_all.click()
    partitions.fill(f"[{days[0]}...{days[1]}]")
    partitions.press("Enter")
    expect(dialog).to_contain_text("5 partitions")
    expect(dialog).to_contain_text(notice)
    page.screenshot(path=artifacts_dir / f"{shot}-dialog.png")
    dialog.get_by_role("button", name="Launch backfill").click()
    expect(dialog).to_be_hidden()
    new = "".join(f":not([href*='{k}'])" for k in known)
    view = page.locator(f"a[href*='/runs/b/']{new}", has_text="View").first
    expect(view).to_be_visible()
    return view.get_attribute("href").split("/runs/b/", 1)[1].split("?")[0].strip("/")


def test_operator_backfills_one_mart_then_all_three_each_as_one_successful_run(
    platform_env, dagster_services, browser, artifacts_dir
):
    from dagster._core.execution.backfill import BulkActionStatus
    from playwright.sync_api import expect

    from analytics_assets.definitions import build_definitions
    from analytics_assets.lib.partitions import daily_partitions

    conn = psycopg2.connect(platform_env.source.url)
    generate_history(conn, days=10, orders_per_day=60, seed=21, end=END)
    conn.close()
    prepare = dagster_services.start_cli(
        ["asset", "materialize", "-m", "analytics_assets.definitions", "--select", "not tag:daily"],
        "prepare-not-daily",
    )
    dagster_services.start_webserver()
    repo = build_definitions().get_repository_def()
    automations = len(repo.sensor_defs) + len(repo.schedule_defs)
    url = dagster_services.wait_webserver()
    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    context.add_init_script(DISMISS_COMMUNITY_DIALOG)
    context.set_default_timeout(UI_TIMEOUT_MS)
    page = context.new_page()
    print(f"\nscreenshots: {artifacts_dir}")
    try:
        with _screenshot_on_failure(page, artifacts_dir):
            _pause_automation(page, url, automations, artifacts_dir)
            dagster_services.start_daemon()
            assert prepare.wait_exit(PREPARE_TIMEOUT_S) == 0, prepare.log_tail()

            # 1. daily_revenue's page: Materialize… -> 5 partitions -> launch.
            page.goto(f"{url}/assets/marts/daily_revenue")
            page.get_by_role("button", name="Materialize…").click()
            one = _launch_backfill(
                page, ONE_MART_RANGE, SINGLE_RUN, artifacts_dir, "10-daily-revenue"
            )

            # 2. The daily marts from the lineage: Materialize all -> 5 partitions -> launch.
            page.goto(f"{url}/asset-groups")
            page.locator(".CodeMirror").first.click()
            page.keyboard.type("tag:daily")
            page.keyboard.press("Enter")
            for mart in MARTS:
                expect(page.get_by_role("button", name=mart).first).to_be_visible()
            page.get_by_role("button", name=re.compile("Materialize all")).click()
            # the three marts and their restatement log (marts/daily_mart_reports)
            expect(page.locator(".bp5-dialog")).to_contain_text("materialize 4 assets")
            three = _launch_backfill(
                page, THREE_MARTS_RANGE, VARYING, artifacts_dir, "20-three-marts", known=(one,)
            )

            # 3. Each backfill's page: completed, one run, and that run succeeded.
            for backfill_id, shot in ((one, "11-daily-revenue"), (three, "21-three-marts")):
                page.goto(f"{url}/runs/b/{backfill_id}?tab=runs")
                done = page.get_by_text(BACKFILL_DONE).first
                expect(done).to_be_visible(timeout=BACKFILL_TIMEOUT_MS)
                expect(done).to_have_text("Succeeded")
                # the runs tab lists each run by its short id: one, and it succeeded
                run_links = page.locator("a[href^='/runs/']").filter(has_text=SHORT_RUN_ID)
                expect(run_links).to_have_count(1)
                expect(page.get_by_text("Success", exact=True)).to_have_count(1)
                page.screenshot(path=artifacts_dir / f"{shot}-backfill.png")

            # 4. The one-mart run's page, and daily_revenue's partitions: all ten green.
            with dg.DagsterInstance.get() as instance:
                runs = instance.get_runs(dg.RunsFilter(tags={"dagster/backfill": one}))
            page.goto(f"{url}/runs/{runs[0].run_id}")
            status = page.get_by_text(re.compile(r"^(Success|Failure|Canceled)$")).first
            expect(status).to_have_text("Success")
            page.screenshot(path=artifacts_dir / "12-daily-revenue-run.png")
            page.goto(f"{url}/assets/marts/daily_revenue?view=partitions")
            expect(page.get_by_text("Materialized (10)")).to_be_visible()
            expect(page.get_by_text("Failed (0)")).to_be_visible()
            page.screenshot(path=artifacts_dir / "30-daily-revenue-partitions.png")
    finally:
        context.close()

    with dg.DagsterInstance.get() as instance:
        for backfill_id, marts, days in (
            (one, MARTS[:1], ONE_MART_RANGE),
            (three, MARTS, THREE_MARTS_RANGE),
        ):
            backfill = instance.get_backfill(backfill_id)
            assert backfill.status == BulkActionStatus.COMPLETED_SUCCESS, backfill.status
            runs = instance.get_runs(dg.RunsFilter(tags={"dagster/backfill": backfill_id}))
            assert [r.status for r in runs] == [dg.DagsterRunStatus.SUCCESS]
            for mart in marts:
                status = instance.get_status_by_partition(
                    dg.AssetKey(["marts", mart]), _days(*days), daily_partitions()
                )
                assert set(status.values()) == {dg.AssetPartitionStatus.MATERIALIZED}, mart
        assert len(instance.get_runs()) == 3, "the preparation's run and one per backfill"
