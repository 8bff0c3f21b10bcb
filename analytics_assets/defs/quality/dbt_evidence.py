"""Evidence on failing dbt tests: the failing-row count and a few masked sample rows, read from
the table each test stores its failures in (`store_failures`, schema `dbt_test__audit`).

dbt writes those tables while it runs; DuckDB lets one process hold the file, and dbt is a
subprocess. So failing check results are held back until dbt has exited, then emitted with the
evidence. Passing results go straight through.

When `dbt build` fails only because tests with severity `error` failed, the step fails with one
line per failed test (asset, test, failing rows, a sample) instead of dbt's generic "exit code 1";
any other dbt error (a model that does not compile, a unit test) is raised as dbt reported it,
minus the terminal colour codes dbt puts in its messages (the run page shows them raw).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import dagster as dg
from dagster_dbt.errors import DagsterDbtCliRuntimeError

from analytics_assets.defs.quality.masking import mask_rows
from analytics_assets.defs.quality.verdict import (
    FailedCheck,
    as_metadata,
    check_event,
    raise_for_blocking,
)
from analytics_assets.defs.quality.warehouse import connect, fetch_dicts
from analytics_assets.lib.errors import WarehouseUnavailable
from analytics_assets.lib.metadata import without_ansi
from analytics_assets.lib.warehouse.reader import quoted
from analytics_assets.settings import get_settings

SAMPLE_ROWS = 5


def without_colours(error: DagsterDbtCliRuntimeError) -> DagsterDbtCliRuntimeError:
    """dbt's error, its text without ANSI escape codes (raised outside any `except`, so the run
    page shows no coloured original as its cause)."""
    return DagsterDbtCliRuntimeError(
        description=without_ansi(error.description or str(error)),
        metadata=error.metadata,
    )


@dataclass(frozen=True)
class Evidence:
    audit_table: str
    failing_rows: int
    sample: list[dict[str, Any]]

    def metadata(self) -> dict[str, dg.MetadataValue]:
        return as_metadata(
            {
                "failing_rows": self.failing_rows,
                "failing_rows_sample": self.sample,
                "audit_table": self.audit_table,
            }
        )

    def summary(self) -> str:
        rows = f"{self.failing_rows} failing row{'s' if self.failing_rows != 1 else ''}"
        if not self.sample:
            return rows
        first = ", ".join(f"{k}={v}" for k, v in self.sample[0].items())
        return f"{rows} in {self.audit_table}, e.g. {first}"


def unique_id_of(event: Any) -> str | None:
    """The dbt node behind a Dagster event dagster-dbt made (its `unique_id` metadata)."""
    value = (event.metadata or {}).get("unique_id")
    return getattr(value, "value", value)


def _is_failed_check(event: Any) -> bool:
    return isinstance(event, dg.AssetCheckResult | dg.AssetCheckEvaluation) and not event.passed


def read_evidence(
    manifest: Mapping[str, Any], unique_ids: Iterable[str], *, log=None
) -> dict[str, Evidence]:
    """Count and sample the stored failures of each test (the manifest names the audit table as
    the warehouse spells it: `dbt_test__audit` in dev, `<dataset>_dbt_test__audit` in prod)."""
    nodes = {uid: manifest["nodes"].get(uid) or {} for uid in unique_ids}
    wanted = {uid: n for uid, n in nodes.items() if n.get("config", {}).get("store_failures")}
    if not wanted:
        return {}
    out = {}
    try:
        with connect(get_settings()) as con:
            for uid, node in wanted.items():
                schema, table = node.get("schema"), node.get("alias") or node.get("name")
                relation = quoted(con, schema, table)
                try:
                    count = con.execute(f"select count(*) from {relation}").fetchone()[0]  # noqa: S608 - quoted identifiers from the manifest
                    sample = fetch_dicts(
                        con,
                        f"select * from {relation} limit {SAMPLE_ROWS}",  # noqa: S608 - quoted identifiers from the manifest
                    )
                except Exception as exc:  # the table may not exist (test errored before writing)
                    if log is not None:
                        log.warning(f"no stored failures for {uid}: {exc}")
                    continue
                tested = node.get("column_name") or (node.get("test_metadata") or {}).get(
                    "kwargs", {}
                ).get("column_name")
                out[uid] = Evidence(
                    f"{schema}.{table}", int(count), mask_rows(sample, tested_column=tested)
                )
    except (WarehouseUnavailable, ValueError) as exc:  # ValueError: ConfigError (no GCP_PROJECT)
        if log is not None:
            log.warning(f"failing-row evidence not attached: {exc}")
    return out


def _with_evidence(event, evidence: Evidence | None):
    if evidence is None:
        return event
    metadata = {**(event.metadata or {}), **evidence.metadata()}
    partition = (
        {}
        if isinstance(event, dg.AssetCheckResult)
        else {"blocking": event.blocking, "partition": event.partition}
    )
    return check_event(
        type(event),
        dg.AssetCheckKey(event.asset_key, event.check_name),
        passed=event.passed,
        severity=event.severity,
        description=evidence.summary(),
        metadata=metadata,
        **partition,
    )


def _unexplained_failures(run_results: Mapping[str, Any], explained: set[str]) -> list[str]:
    """Nodes whose failure is not a test failure already reported as a failed check."""
    out = []
    for result in run_results.get("results", []):
        status, uid = result.get("status"), result.get("unique_id", "")
        if status in ("error", "runtime error"):
            out.append(uid)
        elif status == "fail" and uid not in explained:
            out.append(uid)
    return out


def with_failure_evidence(events: Iterable[Any], invocation) -> Iterator[Any]:
    """`events` (Dagster events of one dbt invocation), with evidence on failed checks."""
    held = []
    error: DagsterDbtCliRuntimeError | None = None
    try:
        for event in events:
            if _is_failed_check(event):
                held.append(event)
            else:
                yield event
    except DagsterDbtCliRuntimeError as exc:  # dbt exited non-zero; its events are all in
        error = exc
    log = getattr(invocation.context, "log", None) if invocation.context is not None else None
    evidence = read_evidence(
        invocation.manifest, [uid for e in held if (uid := unique_id_of(e))], log=log
    )
    failed = []
    for event in held:
        enriched = _with_evidence(event, evidence.get(unique_id_of(event) or ""))
        if enriched.severity == dg.AssetCheckSeverity.ERROR:
            count = (enriched.metadata or {}).get("dagster_dbt/failed_row_count")
            count = getattr(count, "value", count)
            why = enriched.description or (
                f"{count} failing rows" if count is not None else "dbt test failed"
            )
            failed.append(FailedCheck(dg.AssetCheckKey(event.asset_key, event.check_name), why))
        yield enriched
    if error is None:
        return
    try:
        run_results = invocation.get_artifact("run_results.json")
    except OSError:
        raise without_colours(error) from None
    explained = {unique_id_of(e) for e in held if e.severity == dg.AssetCheckSeverity.ERROR}
    if not failed or _unexplained_failures(run_results, explained):
        raise without_colours(error)
    raise_for_blocking(failed, what="dbt test")
