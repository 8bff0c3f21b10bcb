"""A check's outcome before it becomes a Dagster result, and the run failure that names every
blocking check that failed and why."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from analytics_assets.lib.metadata import as_metadata

WARN = dg.AssetCheckSeverity.WARN
ERROR = dg.AssetCheckSeverity.ERROR


@dataclass(frozen=True)
class Finding:
    severity: dg.AssetCheckSeverity
    message: str


@dataclass
class Verdict:
    """Passed when there is no finding; otherwise the worst finding's severity, all messages."""

    findings: list[Finding] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    ok_message: str = "ok"

    def warn(self, message: str) -> None:
        self.findings.append(Finding(WARN, message))

    def error(self, message: str) -> None:
        self.findings.append(Finding(ERROR, message))

    @property
    def passed(self) -> bool:
        return not self.findings

    @property
    def severity(self) -> dg.AssetCheckSeverity:
        """WARN only when every finding is a WARN (a passed result keeps Dagster's default)."""
        if self.findings and all(f.severity == WARN for f in self.findings):
            return WARN
        return ERROR

    @property
    def description(self) -> str:
        if self.passed:
            return self.ok_message
        ordered = sorted(self.findings, key=lambda f: f.severity != ERROR)
        return "; ".join(f"{f.severity.value}: {f.message}" for f in ordered)

    def dagster_metadata(self) -> dict[str, dg.MetadataValue]:
        return as_metadata(self.metadata)

    def result(self, key: dg.AssetCheckKey) -> dg.AssetCheckResult:
        return self._event(dg.AssetCheckResult, key)

    def evaluation(
        self, key: dg.AssetCheckKey, *, blocking: bool, partition: str | None
    ) -> dg.AssetCheckEvaluation:
        """For a partition of a multi-partition run, where a result cannot name its partition."""
        return self._event(dg.AssetCheckEvaluation, key, blocking=blocking, partition=partition)

    def _event(self, kind: type, key: dg.AssetCheckKey, **partition: Any):
        return check_event(
            kind,
            key,
            passed=self.passed,
            severity=self.severity,
            description=self.description,
            metadata=self.dagster_metadata(),
            **partition,
        )


def check_event(
    kind: type,
    key: dg.AssetCheckKey,
    *,
    passed: bool,
    severity: dg.AssetCheckSeverity,
    description: str,
    metadata: dict[str, Any],
    **partition: Any,
):
    """A check's `dg.AssetCheckResult` or `dg.AssetCheckEvaluation` (`kind`): the two carry the
    same fields, and an evaluation also `blocking` and `partition` (given as `partition`)."""
    return kind(
        asset_key=key.asset_key,
        check_name=key.name,
        passed=passed,
        severity=severity,
        description=description,
        metadata=metadata,
        **partition,
    )


@dataclass(frozen=True)
class FailedCheck:
    key: dg.AssetCheckKey
    why: str
    partition: str | None = None

    def line(self) -> str:
        where = f" [{self.partition}]" if self.partition else ""
        return f"{self.key.asset_key.to_user_string()} {self.key.name}{where}: {self.why}"


def raise_for_blocking(failed: Iterable[FailedCheck], *, what: str = "check") -> None:
    """Fail the step with one line per blocking check that failed with ERROR severity.

    Dagster would stop the downstream assets on its own (blocking checks), but its message only
    names the checks; this one says why, and it is what run-failure alerts show."""
    failed = list(failed)
    if not failed:
        return
    lines = "\n".join(f"- {f.line()}" for f in failed)
    raise dg.Failure(
        description=(
            f"{len(failed)} blocking {what}{'s' if len(failed) > 1 else ''} failed with ERROR "
            f"severity; downstream assets are not materialized:\n{lines}"
        ),
        metadata={
            "failed_checks": dg.MetadataValue.json(
                [
                    {
                        "asset": f.key.asset_key.to_user_string(),
                        "check": f.key.name,
                        "partition": f.partition,
                        "why": f.why,
                    }
                    for f in failed
                ]
            )
        },
        allow_retries=False,
    )
