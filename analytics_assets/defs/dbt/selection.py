"""Which dbt tests a run leaves out, and which of its models it may call materialized.

Tests that compare a daily mart with another one (e.g. `assert_daily_customer_mix_adds_up_to_
daily_revenue`) only mean something when both were built for the same window in the same run: a
mart not rebuilt for those dates holds nothing or stale rows, and the test would fail on good data.
dbt's default (`eager`) indirect selection runs every test that reads any selected model, so a run
of one mart left alone would pull in that test. So every dbt invocation excludes the tests that
read a built model AND a daily mart this run does not build; the Dagster check of such a test
(its spec lists the other mart in `additional_deps`) is simply not evaluated by that run. A run
that builds every mart the test reads still runs it, and a real disagreement fails the run.

`dbt`'s `buildable` mode would not do: it also drops tests against a model that is not an
ancestor (the `relationships` test of daily_product_sales against stg_app__products).

Runs of a subset of the unpartitioned models (the lag-driven fast path builds only
`revenue_minutely` and its upstream models) apply the same rule to every model: a test that
reads a built model and one the run does not build is left out, since the other one may be a
table last built minutes ago (or never, in a new warehouse). So the fast path runs exactly the
data tests of the models it builds, plus those against the raw sources it ingested. Unit tests
check model code, not data: the fast path leaves them out (`FAST_PATH_ARGS`); every other run,
and CI, runs them.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import dagster as dg
from dagster_dbt.errors import DagsterDbtCliRuntimeError

from analytics_assets.defs.quality.dbt_evidence import unique_id_of

DAILY_TAG = "daily"
REALTIME_TAG = "realtime"  # dbt tag of the near-real-time models (dbt_project.yml)
# run tag the lag sensor sets on the runs it starts (raw tables + the fast path)
FAST_PATH_TAG = "analytics/fast_path"
FAST_PATH_ARGS = ("--exclude-resource-type", "unit_test")


@dataclass(frozen=True)
class LeftOutTest:
    name: str
    selector: str  # the test's FQN, for `--exclude`
    unbuilt: tuple[str, ...]  # names of the models it reads that the run does not build


def _daily_marts(manifest: Mapping[str, Any]) -> set[str]:
    return {
        uid
        for uid, node in manifest["nodes"].items()
        if node["resource_type"] == "model" and DAILY_TAG in (node.get("tags") or [])
    }


def left_out_tests(
    manifest: Mapping[str, Any], built: Collection[str], candidates: Collection[str] | None = None
) -> list[LeftOutTest]:
    """Tests that read a model in `built` (unique ids) and a model of `candidates` (default:
    the daily marts) not in it."""
    built = set(built)
    pool = _daily_marts(manifest) if candidates is None else set(candidates)
    unbuilt = pool - built
    out = []
    for node in manifest["nodes"].values():
        if node["resource_type"] != "test":
            continue
        parents = set(node["depends_on"]["nodes"])
        missing = parents & unbuilt
        if missing and parents & built:
            names = tuple(sorted(manifest["nodes"][uid]["name"] for uid in missing))
            out.append(LeftOutTest(node["name"], ".".join(node["fqn"]), names))
    return sorted(out, key=lambda t: t.name)


def exclude_args(left_out: Collection[LeftOutTest]) -> list[str]:
    """`--exclude` for the left-out tests (dagster-dbt merges it into its own selection)."""
    return ["--exclude", " ".join(t.selector for t in left_out)] if left_out else []


def withheld_models(manifest: Mapping[str, Any], run_results: Mapping[str, Any]) -> dict[str, str]:
    """Models not to report as materialized after a failed `dbt build`: every model an
    error-severity test that failed (or could not run) reads. Returns unique id -> the test.

    dbt has written those tables by then, but a model that failed its gate is not done: the
    partition must show as failed, so a backfill agrees with its run."""
    out: dict[str, str] = {}
    for result in run_results.get("results", []):
        uid = result.get("unique_id", "")
        if not uid.startswith("test.") or result.get("status") not in ("fail", "error"):
            continue
        node = manifest["nodes"].get(uid) or {}
        for parent in node.get("depends_on", {}).get("nodes", []):
            if parent.startswith("model."):
                out.setdefault(parent, node.get("name", uid))
    return out


def materialize_what_passed(events: Iterable[Any], invocation: Any) -> Iterator[Any]:
    """`events` of one dbt invocation, held until dbt exits, in their order (a check result
    must follow the materialization it checks).

    On success they all follow. When dbt fails, the materializations of the models in
    `withheld_models` are left out (all of them if dbt wrote no run results), so Dagster counts
    those partitions as failed, and dbt's error is raised again."""
    held = []
    try:
        for event in events:
            held.append(event)
    except DagsterDbtCliRuntimeError:
        try:
            withheld = withheld_models(
                invocation.manifest, invocation.get_artifact("run_results.json")
            )
        except OSError:
            withheld = None
        log = invocation.context.log if invocation.context is not None else None
        for event in held:
            uid = unique_id_of(event)
            if not isinstance(event, dg.Output | dg.AssetMaterialization) or (
                withheld is not None and uid not in withheld
            ):
                yield event
            elif log is not None:
                model = invocation.manifest["nodes"].get(uid, {}).get("name", uid)
                why = f"dbt test {withheld[uid]} that reads it failed" if withheld else "dbt failed"
                log.warning(f"{model} is not marked materialized: {why}")
        raise
    yield from held
