"""What a person reads of a run on the command line: one line per step as it ends, and a summary
(assets, partitions, checks by outcome with the names and reasons of those that did not pass,
duration, where the full log is).

Everything is read back from the Dagster instance (the events the UI shows), so it reads the same
whichever executor ran the steps, in this process or in others.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import dagster as dg

from analytics_assets.lib.metadata import without_ansi

STEP_EVENTS = {
    dg.DagsterEventType.STEP_START,
    dg.DagsterEventType.STEP_SUCCESS,
    dg.DagsterEventType.STEP_FAILURE,
    dg.DagsterEventType.STEP_SKIPPED,
    dg.DagsterEventType.ASSET_MATERIALIZATION,
    dg.DagsterEventType.ASSET_CHECK_EVALUATION,
}
# reasons longer than this are cut in a summary line (the full text is in the UI and the log)
REASON_CHARS = 240


@dataclass(frozen=True)
class CheckOutcome:
    name: str  # <asset>:<check>
    partition: str | None
    passed: bool
    severity: str  # WARN or ERROR
    reason: str

    @property
    def label(self) -> str:
        return f"{self.name} [{self.partition}]" if self.partition else self.name


@dataclass
class RunReport:
    materialized: dict[str, set[str]] = field(default_factory=dict)  # asset -> partitions
    checks: list[CheckOutcome] = field(default_factory=list)
    failed_steps: dict[str, str] = field(default_factory=dict)  # step -> error message

    def add(self, event: dg.DagsterEvent) -> None:
        data = event.event_specific_data
        if event.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION:
            materialization = data.materialization
            parts = self.materialized.setdefault(materialization.asset_key.to_user_string(), set())
            if materialization.partition:
                parts.add(materialization.partition)
        elif event.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION:
            self.checks.append(
                CheckOutcome(
                    name=f"{data.asset_key.to_user_string()}:{data.check_name}",
                    partition=data.partition,
                    passed=data.passed,
                    severity=data.severity.value,
                    reason=without_ansi(data.description or "").strip(),
                )
            )
        elif event.event_type == dg.DagsterEventType.STEP_FAILURE:
            error = data.error
            self.failed_steps[event.step_key] = (
                without_ansi(error.message).strip() if error else "failed"
            )

    @property
    def passed(self) -> list[CheckOutcome]:
        return [c for c in self.checks if c.passed]

    @property
    def warned(self) -> list[CheckOutcome]:
        return [c for c in self.checks if not c.passed and c.severity == "WARN"]

    @property
    def failed(self) -> list[CheckOutcome]:
        return [c for c in self.checks if not c.passed and c.severity != "WARN"]

    @property
    def partitions(self) -> list[str]:
        return sorted(set().union(*self.materialized.values())) if self.materialized else []

    def check_lines(self) -> list[str]:
        """`checks: P passed, W warned, F failed`, then each warned or failed check and why."""
        lines = [
            f"checks: {len(self.passed)} passed, {len(self.warned)} warned, "
            f"{len(self.failed)} failed"
        ]
        for outcome in self.failed + self.warned:
            kind = "failed" if outcome in self.failed else "warned"
            lines.append(f"  {kind}: {outcome.label}: {_short(outcome.reason)}")
        return lines


def _short(text: str) -> str:
    first = " ".join(text.split())
    return first if len(first) <= REASON_CHARS else first[: REASON_CHARS - 1] + "…"


def run_report(instance: dg.DagsterInstance, run_ids: Iterable[str]) -> RunReport:
    """Everything the runs materialized and every check they evaluated."""
    report = RunReport()
    for run_id in run_ids:
        for record in _records(instance, run_id, None)[0]:
            report.add(record.event_log_entry.dagster_event)
    return report


def _records(instance: dg.DagsterInstance, run_id: str, cursor: str | None):
    records, has_more = [], True
    while has_more:
        page = instance.get_records_for_run(run_id, cursor=cursor, of_type=STEP_EVENTS, limit=500)
        records += page.records
        cursor, has_more = page.cursor, page.has_more
    return records, cursor


class StepProgress:
    """Prints a line when a step of the run tagged `tag` starts and one when it ends, from the
    instance's event log, polled in a background thread until `stop()`."""

    def __init__(
        self, instance: dg.DagsterInstance, tag: tuple[str, str], say: Callable[[str], None]
    ):
        self._instance, self._tag, self._say = instance, tag, say
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="step-progress", daemon=True)
        self._steps: dict[str, RunReport] = {}
        self._started: dict[str, float] = {}
        self.run_id: str | None = None

    def __enter__(self) -> StepProgress:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _watch(self) -> None:
        cursor = None
        while True:
            stopping = self._stop.is_set()  # read before polling: the last poll sees every event
            if self.run_id is None:
                records = self._instance.get_run_records(
                    dg.RunsFilter(tags={self._tag[0]: self._tag[1]}), limit=1
                )
                self.run_id = records[0].dagster_run.run_id if records else None
            if self.run_id is not None:
                records, cursor = _records(self._instance, self.run_id, cursor)
                for record in records:
                    self._show(record.event_log_entry)
            if stopping:
                return
            self._stop.wait(0.5)

    def _show(self, entry) -> None:
        event = entry.dagster_event
        step = event.step_key or "?"
        kind = event.event_type
        if kind == dg.DagsterEventType.STEP_START:
            self._started[step] = entry.timestamp
            self._say(f"{step} ...")
            return
        report = self._steps.setdefault(step, RunReport())
        report.add(event)
        if kind not in (
            dg.DagsterEventType.STEP_SUCCESS,
            dg.DagsterEventType.STEP_FAILURE,
            dg.DagsterEventType.STEP_SKIPPED,
        ):
            return
        took = entry.timestamp - self._started.get(step, entry.timestamp)
        parts = [f"{len(report.materialized)} asset(s)"] if report.materialized else []
        if report.checks:
            parts.append(
                f"checks {len(report.passed)} passed, {len(report.warned)} warned, "
                f"{len(report.failed)} failed"
            )
        outcome = {
            dg.DagsterEventType.STEP_SUCCESS: "ok",
            dg.DagsterEventType.STEP_FAILURE: "FAILED",
            dg.DagsterEventType.STEP_SKIPPED: "skipped",
        }[kind]
        detail = f": {'; '.join(parts)}" if parts else ""
        self._say(f"{step} {outcome} in {took:.1f}s{detail}")


def summary_lines(
    instance: dg.DagsterInstance, run_id: str, *, log_path: str | None = None
) -> list[str]:
    """The end-of-run summary for one run."""
    record = instance.get_run_record_by_id(run_id)
    run = record.dagster_run
    report = run_report(instance, [run_id])
    started, ended = record.start_time, record.end_time
    took = f" in {ended - started:.1f}s" if started and ended else ""
    lines = [f"run {run_id} {run.status.value.lower()}{took}"]
    assets = sorted(report.materialized)
    shown = ", ".join(assets[:6]) + (f", ... ({len(assets) - 6} more)" if len(assets) > 6 else "")
    lines.append(f"assets materialized: {len(assets)}" + (f" ({shown})" if assets else ""))
    partitions = report.partitions
    if partitions:
        span = partitions[0] if len(partitions) == 1 else f"{partitions[0]}..{partitions[-1]}"
        lines.append(f"partitions: {span} ({len(partitions)})")
    lines += report.check_lines()
    for step, message in report.failed_steps.items():
        first = message.splitlines()
        lines.append(f"step {step} failed: {first[0] if first else 'failed'}")
        lines += [f"  {line}" for line in first[1:15]]
    if log_path:
        lines.append(f"full log: {log_path}")
    lines.append("run logs and events: Dagster UI (`make dev`) -> Runs")
    return lines


def utc_stamp(now: dt.datetime | None = None) -> str:
    return (now or dt.datetime.now(dt.UTC)).strftime("%Y%m%dT%H%M%SZ")
