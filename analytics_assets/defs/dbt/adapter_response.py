"""Cost and size of every dbt materialization, from dbt's own `adapter_response`.

dagster-dbt turns each model's result line (`LogModelResult`) into a materialization with the
duration, status and table schema, but not the adapter response: that is only in `NodeFinished`,
a debug-level event dbt emits right after the result line, and in `run_results.json` at the very
end. So the dbt assets run dbt with `--log-level debug` and hold each model's materialization
until its `NodeFinished` arrives, then add the numbers. No query is run to get them.

What each warehouse reports (dbt-bigquery 1.11, dbt-duckdb 1.10):
  BigQuery  rows_affected (CTAS and DML), bytes_processed, bytes_billed, slot_ms, plus `code`
            and the message, e.g. "MERGE (1.2k rows, 3.4 GiB processed)".
  DuckDB    only the message "OK": dbt-duckdb never fills rows_affected because DuckDB's Python
            cursor has no row count (duckdb/dbt-duckdb issue 496).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import dagster as dg
from dagster_dbt.core.dbt_cli_event import DbtCliEventMessage
from dagster_dbt.core.dbt_cli_invocation import DbtCliInvocation

# Stdout at debug level is what carries NodeFinished (and with it the adapter response).
DEBUG_LOG_ARGS = ("--log-level", "debug")

NUMERIC_FIELDS = ("rows_affected", "bytes_processed", "bytes_billed", "slot_ms")


def adapter_response_metadata(response: Mapping[str, Any]) -> dict[str, dg.MetadataValue]:
    """`dbt/<field>` metadata for what the adapter reported; absent or negative counts (some
    drivers say -1 for "unknown") are left out rather than shown as zero."""
    metadata: dict[str, dg.MetadataValue] = {}
    for field in NUMERIC_FIELDS:
        value = response.get(field)
        # NodeFinished goes through protobuf, so integers arrive as floats (1024.0).
        if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
            metadata[f"dbt/{field}"] = dg.MetadataValue.int(int(value))
    message = response.get("_message")
    if message:
        metadata["dbt/adapter_message"] = dg.MetadataValue.text(str(message))
    return metadata


def attach_adapter_response(
    events: Iterable[DbtCliEventMessage],
    to_dagster_events: Callable[[DbtCliEventMessage], Iterable[Any]],
) -> Iterator[Any]:
    """Dagster events for `events`, each model's materialization carrying its adapter response.

    A model's materialization is held from its result line until its `NodeFinished` (the next
    event of that node; other nodes' events may come between when dbt runs threads). Everything
    else passes straight through, in order. If dbt stops before a `NodeFinished`, what is held is
    still emitted, without the numbers.
    """
    held: dict[str, list[Any]] = {}
    try:
        for event in events:
            raw = event.raw_event
            unique_id = (raw.get("data") or {}).get("node_info", {}).get("unique_id")
            if raw["info"]["name"] == "NodeFinished":
                run_result = raw["data"].get("run_result") or {}
                metadata = adapter_response_metadata(run_result.get("adapter_response") or {})
                for pending in held.pop(unique_id, []):
                    yield pending.with_metadata({**pending.metadata, **metadata})
                continue
            for dagster_event in to_dagster_events(event):
                if unique_id and isinstance(dagster_event, dg.Output | dg.AssetMaterialization):
                    held.setdefault(unique_id, []).append(dagster_event)
                else:
                    yield dagster_event
    except Exception:
        # dbt failed (dagster-dbt raises after the last event): report what did materialize.
        for pending in held.values():
            yield from pending
        raise
    for pending in held.values():
        yield from pending


def stream_with_adapter_response(invocation: DbtCliInvocation) -> Iterator[Any]:
    """`invocation.stream()`, plus the adapter response on every model materialization."""

    def to_dagster_events(event: DbtCliEventMessage) -> Iterable[Any]:
        return event.to_default_asset_events(
            manifest=invocation.manifest,
            dagster_dbt_translator=invocation.dagster_dbt_translator,
            context=invocation.context,
            target_path=invocation.target_path,
            project=invocation.project,
        )

    return attach_adapter_response(invocation.stream_raw_events(), to_dagster_events)
