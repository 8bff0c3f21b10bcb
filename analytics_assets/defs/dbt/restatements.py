"""Restated days on the materializations of the daily marts.

A build of the daily marts appends what it reported to `marts/daily_mart_reports` (the
restatement log, dbt/models/marts/audit/); a figure that differs from the build before is a
restatement. After the build, the rows it restated are read back and put on the materialization
of each mart they belong to (and of the log), so the asset page shows which closed days changed,
from what to what, and why. The daily summary reads the same log (`read_restatements`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import dagster as dg

from analytics_assets.defs.quality.dbt_evidence import unique_id_of
from analytics_assets.lib.errors import WarehouseBusy, WarehouseUnavailable
from analytics_assets.lib.warehouse.reader import connect, relation, relation_exists
from analytics_assets.settings import Settings, get_settings

LOG_MODEL = "daily_mart_reports"

RESTATED_SQL = """
select mart, business_date, measure, cast(previous_value as string), cast(value as string),
    caused_by, reported_at
from {log}
where is_restated and {where}
order by business_date, mart, measure
"""


@dataclass(frozen=True)
class Restatement:
    mart: str
    date: dt.date
    measure: str
    previous: Decimal
    new: Decimal
    caused_by: str
    restated_at: dt.datetime


def read_restatements(
    settings: Settings, *, invocation_id: str | None = None, since: dt.datetime | None = None
) -> list[Restatement]:
    """The restated figures of one dbt invocation, or of every build since `since`."""
    where, params = ("invocation_id = ?", [invocation_id]) if invocation_id else ("true", [])
    if since is not None:
        where, params = f"{where} and reported_at >= ?", [*params, since]
    with connect(settings, wait_seconds=0, read_only=True) as con:
        if not relation_exists(con, "marts", LOG_MODEL):
            return []
        sql = RESTATED_SQL.format(log=relation(con, "marts", LOG_MODEL), where=where)
        rows = con.execute(sql, params).fetchall()
    return [
        Restatement(r[0], r[1], r[2], Decimal(r[3]), Decimal(r[4]), r[5] or "", r[6]) for r in rows
    ]


def restatement_table(rows: Iterable[Restatement]) -> str:
    """Markdown for the asset page: one line per restated figure."""
    lines = [
        "| date | mart | measure | previous | new | caused by |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r.date.isoformat()} | {r.mart} | {r.measure} | {r.previous} | {r.new} | {r.caused_by} |"
        for r in rows
    ]
    return "\n".join(lines)


def restatement_metadata(rows: list[Restatement]) -> dict[str, Any]:
    days = sorted({r.date.isoformat() for r in rows})
    metadata: dict[str, Any] = {
        "restated_days": dg.MetadataValue.int(len(days)),
        "restated_dates": dg.MetadataValue.text(", ".join(days) or "none"),
    }
    if rows:
        metadata["restatements"] = dg.MetadataValue.md(restatement_table(rows))
    return metadata


def with_restatements(events: Iterable[Any], invocation: Any, log: Any) -> Iterator[Any]:
    """`events` (held until dbt exited), the daily marts' materializations carrying what this
    build restated. A build that did not write the log, or a log that cannot be read, changes
    nothing (said in the run's log)."""
    held = []
    try:
        for event in events:
            held.append(event)
    except Exception:
        # a failed build restated nothing it may report: its events go on as they were
        yield from held
        raise
    names = {
        unique_id_of(e): invocation.manifest["nodes"].get(unique_id_of(e), {}).get("name")
        for e in held
        if isinstance(e, dg.Output | dg.AssetMaterialization)
    }
    if LOG_MODEL not in names.values():
        yield from held
        return
    try:
        invocation_id = invocation.get_artifact("run_results.json")["metadata"]["invocation_id"]
        rows = read_restatements(get_settings(), invocation_id=invocation_id)
    except (OSError, KeyError, WarehouseBusy, WarehouseUnavailable) as exc:
        log.warning(f"restatements of this build not read: {exc}")
        yield from held
        return
    if rows:
        days = sorted({r.date.isoformat() for r in rows})
        log.info(f"restated {len(days)} closed day(s): {', '.join(days)}")
    for event in held:
        name = names.get(unique_id_of(event))
        if not isinstance(event, dg.Output | dg.AssetMaterialization) or name is None:
            yield event
            continue
        mine = rows if name == LOG_MODEL else [r for r in rows if r.mart == name]
        yield event.with_metadata({**event.metadata, **restatement_metadata(mine)})
