"""Schema drift: the columns of each captured source table against its raw table.

A new source column is a WARN that names it (CDC adds it to raw with the next change that carries
it). A raw column `<column>__raw` is the text companion of `<column>` (lib/values.py), not drift. A column dropped at the source, or whose type no longer maps to the raw column's type, is an
ERROR: staging would read NULLs or fail to cast, silently.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from analytics_assets.defs.quality.verdict import Verdict
from analytics_assets.lib.warehouse.names import RAW_SUFFIX

SOURCE_COLUMNS_SQL = """
select c.relname::text, a.attname::text, a.atttypid::int8, a.atttypmod,
       format_type(a.atttypid, a.atttypmod)
from pg_attribute a
join pg_class c on c.oid = a.attrelid
join pg_namespace n on n.oid = c.relnamespace
where n.nspname = 'public' and c.relname = any(%s) and c.relkind in ('r', 'p')
  and a.attnum > 0 and not a.attisdropped and a.attgenerated = ''
order by c.relname, a.attnum
"""


@dataclass(frozen=True)
class SourceColumn:
    name: str
    pg_type: str  # as Postgres spells it, e.g. numeric(12,2)
    warehouse_type: str  # the raw column type CDC creates for it (the warehouse's spelling)


@dataclass
class Drift:
    added: list[SourceColumn] = field(default_factory=list)
    dropped: list[tuple[str, str]] = field(default_factory=list)  # (column, raw type)
    retyped: list[tuple[SourceColumn, str]] = field(default_factory=list)  # (source, raw type)


def read_source_columns(conn, tables: Sequence[str]) -> dict[str, list[tuple[str, int, int, str]]]:
    """Per table: (column, type oid, typmod, Postgres type), in column order."""
    with conn.cursor() as cur:
        cur.execute(SOURCE_COLUMNS_SQL, (list(tables),))
        rows = cur.fetchall()
    out: dict[str, list[tuple[str, int, int, str]]] = {}
    for table, name, oid, typmod, pg_type in rows:
        out.setdefault(table, []).append((name, int(oid), int(typmod), pg_type))
    return out


def expected_columns(
    columns: Sequence[tuple[str, int, int, str]], warehouse_type
) -> dict[str, SourceColumn]:
    """The raw column type CDC derives from each source column (same Arrow mapping as the
    decoder); `warehouse_type(arrow_type)` spells it as the warehouse reports it."""
    from analytics_assets.lib.pgoutput_types import arrow_type  # Arrow: not at code location load

    return {
        name: SourceColumn(name, pg_type, warehouse_type(arrow_type(oid, typmod)))
        for name, oid, typmod, pg_type in columns
    }


def compare(source: Mapping[str, SourceColumn], raw: Mapping[str, str]) -> Drift:
    drift = Drift()
    for name, col in source.items():
        if name not in raw:
            drift.added.append(col)
        elif raw[name] != col.warehouse_type:
            drift.retyped.append((col, raw[name]))
    drift.dropped = [
        (name, type_)
        for name, type_ in raw.items()
        if name not in source and not _companion_of(name, source)
    ]
    return drift


def _companion_of(name: str, source: Mapping[str, SourceColumn]) -> bool:
    """`<column>__raw`, the text beside a typed column (lib/values.py), comes with its column."""
    return name.endswith(RAW_SUFFIX) and name[: -len(RAW_SUFFIX)] in source


def verdict(
    table: str, source: Mapping[str, SourceColumn] | None, raw: Mapping[str, str] | None
) -> Verdict:
    v = Verdict(ok_message=f"raw.{table} has the source's columns and types")
    if source is None:
        v.error(f"source table {table} does not exist (dropped or renamed?)")
        return v
    if raw is None:
        v.error(f"raw.{table} does not exist: the CDC ingest has not loaded it")
        return v
    drift = compare(source, raw)
    for col in drift.added:
        v.warn(f"new source column {table}.{col.name} ({col.pg_type}) is not in raw.{table} yet")
    for name, raw_type in drift.dropped:
        v.error(f"column {table}.{name} ({raw_type} in raw) was dropped from the source")
    for col, raw_type in drift.retyped:
        v.error(
            f"column {table}.{col.name} changed type: source {col.pg_type} needs "
            f"{col.warehouse_type}, raw has {raw_type}"
        )
    v.metadata = {
        "source_columns": len(source),
        "raw_columns": len(raw),
        "added": [c.name for c in drift.added],
        "dropped": [name for name, _ in drift.dropped],
        "retyped": [
            {"column": c.name, "source": c.pg_type, "expected": c.warehouse_type, "raw": t}
            for c, t in drift.retyped
        ],
    }
    return v
