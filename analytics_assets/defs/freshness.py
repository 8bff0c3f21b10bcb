"""Freshness policies: how stale each asset may get before the UI shows it WARN or FAIL.

Where an asset's policy comes from, most specific first:

1. dbt models: `config.meta.dagster.freshness` in the model's YAML, read by the dbt translator
   through `policy_from_dbt_meta` (a time window in minutes, or a cron deadline).
2. Raw CDC tables (`raw/...`): a time window, `FRESHNESS_RAW_WARN_MINUTES` /
   `FRESHNESS_RAW_FAIL_MINUTES` (15 / 60).
3. Everything else that Dagster materializes: a global default time window,
   `FRESHNESS_DEFAULT_WARN_MINUTES` / `FRESHNESS_DEFAULT_FAIL_MINUTES` (24 h / 36 h).

`apply_freshness` attaches 2 and 3 to a `Definitions` without replacing a policy an asset already
has. Dagster's freshness daemon (on by default in `dagster dev` / `dagster-daemon`) evaluates the
policies every 30 s and records every state change as a `FRESHNESS_STATE_CHANGE` event; the UI shows
the state and `defs/notify` alerts on FAIL. Dagster 1.13 cron policies are PASS or FAIL only: the
cron evaluator has no WARN state.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Mapping
from typing import Any

import dagster as dg

from analytics_assets.lib.errors import ConfigError
from analytics_assets.settings import get_settings

RAW_PREFIX = "raw"
_TIME_WINDOW_KEYS = {"warn_minutes", "fail_minutes"}
_CRON_KEYS = {"deadline_cron", "lower_bound_minutes", "timezone"}


def time_window_policy(
    warn_minutes: int | None, fail_minutes: int, *, what: str
) -> dg.FreshnessPolicy:
    """A policy that WARNs `warn_minutes` and FAILs `fail_minutes` after the last materialization."""
    if warn_minutes is not None and warn_minutes >= fail_minutes:
        raise ConfigError(
            f"{what}: warn after {warn_minutes} min must be earlier than fail after {fail_minutes} min."
        )
    return dg.FreshnessPolicy.time_window(
        fail_window=dt.timedelta(minutes=fail_minutes),
        warn_window=dt.timedelta(minutes=warn_minutes) if warn_minutes else None,
    )


def raw_table_policy() -> dg.FreshnessPolicy:
    f = get_settings().freshness
    return time_window_policy(
        f.raw_warn_minutes,
        f.raw_fail_minutes,
        what="FRESHNESS_RAW_WARN_MINUTES / FRESHNESS_RAW_FAIL_MINUTES",
    )


def default_policy() -> dg.FreshnessPolicy:
    f = get_settings().freshness
    return time_window_policy(
        f.default_warn_minutes,
        f.default_fail_minutes,
        what="FRESHNESS_DEFAULT_WARN_MINUTES / FRESHNESS_DEFAULT_FAIL_MINUTES",
    )


@functools.cache
def cron_policy(deadline_cron: str, lower_bound_minutes: int, timezone: str) -> dg.FreshnessPolicy:
    """One policy object per distinct cron deadline: building one walks a thousand cron ticks to
    check the lower bound, and the dbt translator asks for it once per model per call (it was 40 %
    of the code location's load time)."""
    return dg.FreshnessPolicy.cron(
        deadline_cron=deadline_cron,
        lower_bound_delta=dt.timedelta(minutes=lower_bound_minutes),
        timezone=timezone,
    )


def policy_from_dbt_meta(
    meta: Mapping[str, Any], *, model: str, timezone: str
) -> dg.FreshnessPolicy | None:
    """The policy a dbt model declares under `meta.dagster.freshness`, or None if it declares none.

    Two forms (the cron timezone defaults to PARTITION_TIMEZONE, so "06:00" means local morning):
      {warn_minutes: 60, fail_minutes: 180}
      {deadline_cron: "0 6 * * *", lower_bound_minutes: 360, timezone: "Europe/Berlin"}
    A typo fails the code location load with the model's name rather than silently dropping the
    policy.
    """
    config = ((meta or {}).get("dagster") or {}).get("freshness")
    if config is None:
        return None
    what = f"dbt model {model!r}: meta.dagster.freshness"
    if not isinstance(config, Mapping):
        raise ConfigError(f"{what} must be a mapping, got {config!r}.")
    keys = set(config)
    if keys <= _TIME_WINDOW_KEYS and "fail_minutes" in keys:
        values = {k: config[k] for k in keys}
        for key, value in values.items():
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"{what}.{key} must be a positive whole number, got {value!r}.")
        return time_window_policy(values.get("warn_minutes"), values["fail_minutes"], what=what)
    if keys <= _CRON_KEYS and {"deadline_cron", "lower_bound_minutes"} <= keys:
        lower = config["lower_bound_minutes"]
        if not isinstance(lower, int) or isinstance(lower, bool) or lower <= 0:
            raise ConfigError(f"{what}.lower_bound_minutes must be a positive whole number.")
        try:
            return cron_policy(
                str(config["deadline_cron"]), lower, str(config.get("timezone") or timezone)
            )
        except Exception as exc:  # Dagster raises its internal CheckError for a bad cron / zone
            raise ConfigError(f"{what} is invalid: {exc}") from None
    raise ConfigError(
        f"{what} has keys {sorted(keys)}: use {{warn_minutes?, fail_minutes}} or "
        "{deadline_cron, lower_bound_minutes, timezone?}."
    )


def apply_freshness(defs: dg.Definitions) -> dg.Definitions:
    """Attach the raw-table policy to `raw/...` and the default to everything else materializable,
    keeping any policy an asset already declares (e.g. from dbt meta)."""
    raw, default = raw_table_policy(), default_policy()

    def keep_or(policy: dg.FreshnessPolicy):
        return lambda spec: dg.apply_freshness_policy(spec, policy, overwrite_existing=False)

    materializable = dg.AssetSelection.all().materializable()
    defs = defs.permissive_map_resolved_asset_specs(
        func=keep_or(raw), selection=dg.AssetSelection.key_prefixes([RAW_PREFIX]) & materializable
    )
    # As dagster-open-platform does: one default over every materializable asset.
    return defs.permissive_map_resolved_asset_specs(func=keep_or(default), selection=materializable)


def _minutes(delta: dt.timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    return f"{minutes // 60}h" if minutes % 60 == 0 else f"{minutes}m"


def describe_policy(policy: dg.FreshnessPolicy | None) -> str | None:
    """One line a person reads in a snapshot diff or an alert: what the policy expects."""
    if policy is None:
        return None
    # The policy subclasses are not exported by `dagster`: tell them apart by their fields.
    fail_window = getattr(policy, "fail_window", None)
    if fail_window is not None:
        fail = f"fail after {_minutes(fail_window.to_timedelta())}"
        warn_window = getattr(policy, "warn_window", None)
        if warn_window is None:
            return f"time window: {fail}"
        return f"time window: warn after {_minutes(warn_window.to_timedelta())}, {fail}"
    deadline = getattr(policy, "deadline_cron", None)
    if deadline is not None:
        return (
            f"cron deadline {deadline!r} ({policy.timezone}), "
            f"materialized within {_minutes(policy.lower_bound_delta)} before it"
        )
    return repr(policy)
