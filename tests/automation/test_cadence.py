"""The declared cadence of the unpartitioned models off the near-real-time path, evaluated by
Dagster's own automation evaluator against a test instance (no runs)."""

from __future__ import annotations

import datetime as dt

import dagster as dg

from analytics_assets.defs.automation.cadence import CADENCE_MODELS, FAST_PATH

# Evaluation times are fixed; the materializations the test reports carry the real time, which
# is always after these, so "updated since the 12:15 tick" holds whenever the test runs.
START = dt.datetime(2026, 3, 10, 12, 1, tzinfo=dt.UTC)


def _keys(defs, selection) -> set[str]:
    return {k.to_user_string() for k in selection.resolve(defs.resolve_asset_graph())}


def _requested(result) -> set[str]:
    return {r.key.to_user_string() for r in result.results if r.true_subset.size}


def test_models_never_built_are_built_once_their_parents_exist_then_every_15_minutes():
    from analytics_assets.definitions import build_definitions

    defs = build_definitions()
    cadence = _keys(defs, CADENCE_MODELS)
    assert {"marts/fct_orders", "staging/stg_app__products"} <= cadence
    assert not cadence & _keys(defs, FAST_PATH)
    raw = [k for k in defs.resolve_asset_graph().get_all_asset_keys() if k.path[0] == "raw"]
    with dg.instance_for_test() as instance:
        first = dg.evaluate_automation_conditions(
            defs=defs, instance=instance, evaluation_time=START
        )
        assert not _requested(first) & cadence, "no raw table yet: nothing to build from"

        for key in raw:  # the first ingest
            instance.report_runless_asset_event(dg.AssetMaterialization(key))
        second = dg.evaluate_automation_conditions(
            defs=defs, instance=instance, cursor=first.cursor, evaluation_time=START
        )
        assert cadence <= _requested(second), "a new warehouse gets every model at once"

        # built; no tick has passed since: nothing until the next quarter hour
        for name in cadence:
            instance.report_runless_asset_event(
                dg.AssetMaterialization(dg.AssetKey.from_user_string(name))
            )
        later = START + dt.timedelta(minutes=5)
        third = dg.evaluate_automation_conditions(
            defs=defs, instance=instance, cursor=second.cursor, evaluation_time=later
        )
        assert not _requested(third) & cadence

        for key in raw:  # ingests go on; at 12:15 the tick passes
            instance.report_runless_asset_event(dg.AssetMaterialization(key))
        tick = START + dt.timedelta(minutes=15)
        fourth = dg.evaluate_automation_conditions(
            defs=defs, instance=instance, cursor=third.cursor, evaluation_time=tick
        )
        assert cadence <= _requested(fourth)
