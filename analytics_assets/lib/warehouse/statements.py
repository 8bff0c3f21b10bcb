"""Every statement the warehouse runs, written once, in DuckDB SQL.

The DuckDB adapter runs them as they are; the BigQuery adapter runs their sqlglot transpilation
(`bigquery.to_bigquery`). So that one text serves both:

- values are named parameters (`$name`, typed in PARAMETERS): never formatted into the SQL;
- identifiers are quoted with `q`; string literals are column names, escaped with `_lit`;
- the batch's rows are read from placeholder relations that each adapter binds to its own
  loading (DuckDB: a registered Arrow view; BigQuery: a load-job table): BATCH, the fresh rows;
  STAGE, those rows with the values a change did not carry filled in; DEAD, the dead letters;
- only the common subset: explicit insert column lists (no `by name`), `exists` (no semi
  join), `from (select 1)` under a `where` (BigQuery refuses a `where` without a `from`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa

from analytics_assets.lib.feeds.base import (
    COMMIT_TS,
    IS_DELETED,
    LOADED_AT,
    LSN,
    OP,
    SEQ,
    SOURCE_LSN,
    UNCHANGED,
)
from analytics_assets.lib.partitions import BUCKET_US
from analytics_assets.lib.warehouse.names import DEAD_LETTERS, STATE_TABLE, q

BATCH = "_cdc_batch"
STAGE = "_cdc_stage"
DEAD = "_cdc_dead"
ROW_ID = "_row"  # a batch's row numbers (base.numbered), for the re-sent events query

# The type of each parameter a statement binds; `<name>_<i>` is the i-th of a list (the state).
PARAMETERS = {
    "loaded_at": "TIMESTAMPTZ",
    "first_lsn": "BIGINT",
    "since": "TIMESTAMPTZ",
    "lsn": "BIGINT",
    "seq": "BIGINT",
    "commit_ts": "TIMESTAMPTZ",
    "source_lsn": "BIGINT",
    "feed": "VARCHAR",
    "table_name": "VARCHAR",
    "position_lsn": "BIGINT",
    "position_seq": "BIGINT",
    "checkpoint": "VARCHAR",
    "updated_at": "TIMESTAMPTZ",
}


def parameter_type(name: str) -> str:
    return PARAMETERS[re.sub(r"_\d+$", "", name)]


def column_type(t: pa.DataType) -> str:
    """The raw column type for an Arrow type (BigQuery's is its transpilation)."""
    if pa.types.is_int16(t):
        return "SMALLINT"
    if pa.types.is_int32(t):
        return "INTEGER"
    if pa.types.is_integer(t):
        return "BIGINT"
    if pa.types.is_boolean(t):
        return "BOOLEAN"
    if pa.types.is_floating(t):
        return "DOUBLE"
    if pa.types.is_decimal(t):
        return f"DECIMAL({t.precision}, {t.scale})"
    if pa.types.is_timestamp(t):
        return "TIMESTAMPTZ" if t.tz else "TIMESTAMP"
    if pa.types.is_date(t):
        return "DATE"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return "BLOB"
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return f"{column_type(t.value_type)}[]"
    return "VARCHAR"


def _lit(text: str) -> str:
    return text.replace("'", "''")


def _ref(schema: str, table: str) -> str:
    return f"{q(schema)}.{q(table)}"


def _on(left: str, right: str, key: Sequence[str]) -> str:
    return " and ".join(f"{left}.{q(k)} = {right}.{q(k)}" for k in key)


# -- tables (DDL) --------------------------------------------------------------------------------


def create_state_sql(schema: str) -> str:
    return (
        f"create table if not exists {_ref(schema, STATE_TABLE)} ("
        "table_name VARCHAR NOT NULL, position_lsn BIGINT NOT NULL, "
        "position_seq BIGINT NOT NULL, checkpoint VARCHAR NOT NULL, feed VARCHAR, "
        "updated_at TIMESTAMPTZ NOT NULL)"
    )


# The CDC columns after the source's: raw.<table> (the newest image), raw.<table>_changes (the log)
RAW_META = (
    (LSN, "BIGINT NOT NULL"),
    (SEQ, "BIGINT NOT NULL"),
    (OP, "VARCHAR NOT NULL"),
    (IS_DELETED, "BOOLEAN NOT NULL"),
    (COMMIT_TS, "TIMESTAMPTZ"),
    (LOADED_AT, "TIMESTAMPTZ NOT NULL"),
    (SOURCE_LSN, "BIGINT"),
)
CHANGES_META = tuple(m for m in RAW_META if m[0] != IS_DELETED)


def create_table_sql(schema: str, table: str, columns: Sequence[tuple[str, str]]) -> str:
    """`columns`: (name, type) pairs, the source's then RAW_META or CHANGES_META."""
    cols = ", ".join(f"{q(c)} {t}" for c, t in columns)
    return f"create table if not exists {_ref(schema, table)} ({cols})"


def add_column_sql(schema: str, table: str, column: str, type_: str) -> str:
    return f"alter table {_ref(schema, table)} add column if not exists {q(column)} {type_}"


def create_dead_letters_sql(schema: str) -> str:
    return (
        f"create table if not exists {_ref(schema, DEAD_LETTERS)} (topic VARCHAR NOT NULL, "
        "kafka_partition BIGINT NOT NULL, kafka_offset BIGINT NOT NULL, table_name VARCHAR, "
        "reason VARCHAR NOT NULL, record_key BLOB, record_value BLOB, "
        "value_bytes BIGINT NOT NULL, first_seen_at TIMESTAMPTZ NOT NULL)"
    )


# -- positions -----------------------------------------------------------------------------------

STATE_COLUMNS = ("table_name", "position_lsn", "position_seq", "checkpoint", "feed", "updated_at")


def read_state_sql(schema: str) -> str:
    return (
        "select table_name, position_lsn, position_seq, checkpoint, updated_at "  # noqa: S608 - quoted identifiers
        f"from {_ref(schema, STATE_TABLE)}"
    )


def store_state_sql(schema: str, tables: int) -> str:
    """Upsert `tables` positions: `$table_name_<i>`, `$position_lsn_<i>`, ... and `$feed`."""
    rows = " union all ".join(
        "select "
        + ", ".join(f"${c} as {c}" if c == "feed" else f"${c}_{i} as {c}" for c in STATE_COLUMNS)
        for i in range(tables)
    )
    sets = ", ".join(f"{c} = s.{c}" for c in STATE_COLUMNS[1:])
    return (
        f"merge into {_ref(schema, STATE_TABLE)} as t using ({rows}) as s "  # noqa: S608 - quoted identifiers; values are parameters
        f"on t.table_name = s.table_name when matched then update set {sets} "
        f"when not matched then insert ({', '.join(STATE_COLUMNS)}) "
        f"values ({', '.join(f's.{c}' for c in STATE_COLUMNS)})"
    )


# -- a table's changes ---------------------------------------------------------------------------


def _carried(column: str) -> str:
    """True when the change carries `column` (it is not in `_unchanged_cols`)."""
    return f"(not list_contains(coalesce({UNCHANGED}, []), '{_lit(column)}'))"


@dataclass(frozen=True)
class TableChangesShape:
    """What a table's change statements are built from: where, which columns (the source's),
    the key, and the columns some change of the batch does not carry (`_unchanged_cols`)."""

    schema: str
    table: str
    columns: Sequence[str]
    key: Sequence[str]
    unchanged: Sequence[str]

    def value(self, column: str, stored: str) -> str:
        """The staged value of `column`, or where it must come from the warehouse row (alias
        `stored`) because neither the change nor an earlier one in the batch carried it."""
        if column not in self.unchanged:
            return f"s.{q(column)}"
        i = list(self.unchanged).index(column)
        return f"case when s._miss_{i} then {stored}.{q(column)} else s.{q(column)} end"


def stage_sql(shape: TableChangesShape) -> str:
    """The batch as a temp table. A column a change does not carry takes the value of the latest
    earlier change of the same key in the batch; `_miss_<i>` says it must come from the
    warehouse row instead."""
    parts, miss = [], []
    keys = ", ".join(q(k) for k in shape.key)
    for c in shape.columns:
        if c in shape.unchanged:
            i = list(shape.unchanged).index(c)
            prev = (
                f"last_value(case when {_carried(c)} then {q(c)} end ignore nulls) over "
                f"(partition by {keys} order by {LSN}, {SEQ} "
                f"rows between unbounded preceding and 1 preceding)"
            )
            parts.append(f"case when {_carried(c)} then {q(c)} else {prev} end as {q(c)}")
            miss.append(f"((not {_carried(c)}) and ({prev}) is null) as _miss_{i}")
        else:
            parts.append(q(c))
    meta = f"{LSN}, {SEQ}, {OP}, {IS_DELETED}, {COMMIT_TS}"
    return (
        f"create or replace temp table {STAGE} as select {', '.join(parts + miss)}, {meta} "  # noqa: S608 - quoted identifiers
        f"from {BATCH}"
    )


def _position(alias: str) -> str:
    """A change's position as one value, (lsn, seq), for `not in` against a list of them."""
    return f"struct_pack(lsn := {alias}.{LSN}, seq := {alias}.{SEQ})"


def changes_insert_sql(shape: TableChangesShape, source: str) -> str:
    """Append every change of `source` (STAGE, or BATCH when every change carries every column)
    not in the change log yet: the anti-join on the position (from `$first_lsn` on, so only the
    log's newest blocks are read) keeps a change applied before, resent with its position, out.
    It is a `not in` over the positions rather than a correlated `not exists`, which DuckDB
    runs as a delim join that first copies the whole batch (positions are never NULL, so the
    two agree). Values a change did not carry come from the warehouse row as it was before
    this batch."""
    raw, log = _ref(shape.schema, shape.table), _ref(shape.schema, shape.table + "_changes")
    join = f" left join {raw} as r on {_on('r', 's', shape.key)}" if shape.unchanged else ""
    cols = [q(c) for c in shape.columns] + [LSN, SEQ, OP, COMMIT_TS, LOADED_AT]
    sel = [shape.value(c, "r") for c in shape.columns]
    return (
        f"insert into {log} ({', '.join(cols)}) "  # noqa: S608 - quoted identifiers
        f"select {', '.join(sel)}, s.{LSN}, s.{SEQ}, s.{OP}, s.{COMMIT_TS}, $loaded_at "
        f"from {source} as s{join} where {_position('s')} not in (select {_position('c')} "
        f"from {log} as c where c.{LSN} >= $first_lsn)"
    )


def merge_sql(shape: TableChangesShape, source: str, unique_keys: bool = False) -> str:
    """Newest change per key wins; an older change never overwrites a newer row. The source is
    one row per key (BigQuery refuses a MERGE that matches a target row twice); with
    `unique_keys` (each key changes once in the batch) the newest-per-key step is skipped."""
    key, columns = shape.key, shape.columns
    sets = [f"{q(c)} = {shape.value(c, 't')}" for c in columns if c not in key]
    meta = [LSN, SEQ, OP, IS_DELETED, COMMIT_TS]
    sets += [f"{m} = s.{m}" for m in meta] + [f"{LOADED_AT} = $loaded_at"]
    ins_cols = [q(c) for c in columns] + meta + [LOADED_AT]
    ins_vals = [f"s.{q(c)}" for c in columns] + [f"s.{m}" for m in meta] + ["$loaded_at"]
    newer = f"(s.{LSN} > t.{LSN} or (s.{LSN} = t.{LSN} and s.{SEQ} > t.{SEQ}))"
    if not unique_keys:
        source = (
            f"(select * from {source} qualify row_number() over "  # noqa: S608 - quoted identifiers
            f"(partition by {', '.join(q(k) for k in key)} order by {LSN} desc, {SEQ} desc) = 1)"
        )
    return (
        f"merge into {_ref(shape.schema, shape.table)} as t using {source} as s "  # noqa: S608 - quoted identifiers; values are parameters
        f"on {_on('t', 's', key)} when matched and {newer} then update set {', '.join(sets)} "
        f"when not matched then insert ({', '.join(ins_cols)}) values ({', '.join(ins_vals)})"
    )


def truncate_sql(schema: str, table: str) -> str:
    """Every row older than the truncate at ($lsn, $seq) becomes deleted."""
    older = f"({LSN} < $lsn or ({LSN} = $lsn and {SEQ} < $seq))"
    return (
        f"update {_ref(schema, table)} set {IS_DELETED} = true, {OP} = 't', "  # noqa: S608 - quoted identifiers; values are parameters
        f"{LSN} = $lsn, {SEQ} = $seq, {COMMIT_TS} = $commit_ts, "
        f"{LOADED_AT} = $loaded_at where {older}"
    )


def truncate_change_sql(schema: str, table: str) -> str:
    """The truncate's change log row, unless the log has its position (as `changes_insert_sql`)."""
    log = _ref(schema, table + "_changes")
    return (
        f"insert into {log} ({LSN}, {SEQ}, {OP}, {COMMIT_TS}, {LOADED_AT}, {SOURCE_LSN}) "  # noqa: S608 - quoted identifiers
        f"select $lsn, $seq, 't', $commit_ts, $loaded_at, $source_lsn from (select 1) as one "
        f"where not exists (select 1 from {log} as c where c.{LSN} = $lsn and c.{SEQ} = $seq)"
    )


def resent_rows_sql(schema: str, table: str, key: Sequence[str], since: bool) -> str:
    """`_row` of each batch event applied before: the same key, `_source_lsn` and op are in the
    change log (a Debezium connector that restarted re-sent it at a new offset) or earlier in the
    batch. With `since` the change log is read from the batch's oldest commit time on (a
    re-sent event repeats its commit time), which keeps the scan to its newest blocks."""
    keys = ", ".join(f"b.{q(k)}" for k in key)
    log = _ref(schema, table + "_changes")
    recent = f" and c.{COMMIT_TS} >= $since" if since else ""
    return (
        f"select {ROW_ID} from (select b.{ROW_ID}, row_number() over (partition by {keys}, "  # noqa: S608 - quoted identifiers
        f"b.{SOURCE_LSN}, b.{OP} order by b.{LSN}, b.{SEQ}) as nth, exists (select 1 from {log} "
        f"as c where {_on('c', 'b', key)} and c.{SOURCE_LSN} = b.{SOURCE_LSN} and c.{OP} = b.{OP}"
        f"{recent}) as logged from {BATCH} as b where b.{SOURCE_LSN} is not null) as x "
        "where logged or nth > 1"
    )


def truncate_resent_sql(schema: str, table: str) -> str:
    return (
        f"select count(*) from {_ref(schema, table + '_changes')} "  # noqa: S608 - quoted identifiers
        f"where {OP} = 't' and {SOURCE_LSN} = $source_lsn"
    )


def before_sql(schema: str, table: str, column: str, key: Sequence[str], timestamp: bool) -> str:
    """The business timestamps (as 15-minute buckets of epoch time; a naive one is read as UTC)
    or dates of the warehouse rows that the batch's updates and deletes replace. A join on the
    batch's distinct keys, not a correlated EXISTS: DuckDB runs that as a delim join, ~8x the
    CPU."""
    value = f"epoch_us(r.{q(column)}) // {BUCKET_US}" if timestamp else f"r.{q(column)}"
    keys = ", ".join(q(k) for k in key)
    return (
        f"select distinct {value} from {_ref(schema, table)} as r join (select distinct {keys} "  # noqa: S608 - quoted identifiers, ints
        f"from {BATCH} where {OP} in ('u', 'd')) as s on {_on('r', 's', key)}"
    )


# -- dead letters --------------------------------------------------------------------------------

DEAD_LETTER_COLUMNS = (
    "topic",
    "kafka_partition",
    "kafka_offset",
    "table_name",
    "reason",
    "record_key",
    "record_value",
    "value_bytes",
)
DEAD_LETTER_ID = ("topic", "kafka_partition", "kafka_offset")


def dead_letters_insert_sql(schema: str) -> str:
    """The batch's dead letters not stored yet (a replayed record is not added twice)."""
    target = _ref(schema, DEAD_LETTERS)
    same = " and ".join(f"x.{c} = d.{c}" for c in DEAD_LETTER_ID)
    return (
        f"insert into {target} ({', '.join(DEAD_LETTER_COLUMNS)}, first_seen_at) "  # noqa: S608 - quoted identifiers
        f"select {', '.join(f'd.{c}' for c in DEAD_LETTER_COLUMNS)}, $loaded_at from {DEAD} as d "
        f"where not exists (select 1 from {target} as x where {same})"
    )
