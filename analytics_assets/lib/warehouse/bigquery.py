"""The BigQuery warehouse (prod): the same contract and rules as `duckdb.py`, in BigQuery SQL.

Per batch and table the fresh rows (after the stored position) are written to Parquet by pyarrow
and loaded (load job, WRITE_TRUNCATE) into a staging table `<dataset>._cdc_load_<table>_<id>`.
Then ONE query job runs one script:

    BEGIN TRANSACTION;
      per table: stage (temp table) -> append to <table>_changes -> MERGE into <table>
                 -> truncates -> (next table ...)
      upsert the positions into _cdc_state
    COMMIT TRANSACTION;

A failing statement fails the script and BigQuery rolls the transaction back, so rows, change
log and positions commit together or not at all. Loading happens before the transaction
(load jobs cannot take part in one); the staging tables are deleted afterwards either way.

`apply(commit=False)` loads and plans; the next `apply` adds to the plan and `commit()` runs it
all as one script (a snapshot table is applied all or nothing, as on DuckDB).

SQL is produced by one function per statement (mirroring `duckdb.py`), values are query
parameters (`@name`), identifiers are validated and back-quoted.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from analytics_assets.lib.errors import ConfigError
from analytics_assets.lib.feeds.base import (
    COMMIT_TS,
    IS_DELETED,
    LOADED_AT,
    LSN,
    META_COLUMNS,
    OP,
    SEQ,
    SOURCE_LSN,
    UNCHANGED,
    ChangeBatch,
    Position,
    TableChanges,
    TableState,
)
from analytics_assets.lib.partitions import BUCKET_US, business_dates
from analytics_assets.lib.warehouse.base import (
    DEAD_LETTER_ID,
    DEAD_LETTER_SCHEMA,
    DEAD_LETTERS,
    DEFAULT_BUSINESS_DATE_COLUMNS,
    ROW_ID,
    ApplyResult,
    TableApplyResult,
    dead_letter_rows,
    numbered,
    resent_since,
    rows_after,
    truncate_commit_ts,
    unchanged_columns,
    without_rows,
)
from analytics_assets.settings import Settings, validate_identifier

STATE_TABLE = "_cdc_state"
LOAD_PREFIX = "_cdc_load_"
STAGE_PREFIX = "_cdc_stage_"

_BQ_COLUMN_MAX = 300


def q(name: str) -> str:
    """Back-quote an identifier (names are validated first; a backtick could not pass)."""
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def validate_column(name: str) -> str:
    """BigQuery column names: letters, digits, underscores, not starting with a digit."""
    ok = (
        0 < len(name) <= _BQ_COLUMN_MAX
        and (name[0].isascii() and (name[0].isalpha() or name[0] == "_"))
        and all(ch.isascii() and (ch.isalnum() or ch == "_") for ch in name)
    )
    if not ok:
        raise ConfigError(f"column {name!r} cannot be a BigQuery column name.")
    return name


def column_type(t: pa.DataType) -> str:
    if pa.types.is_integer(t):
        return "INT64"
    if pa.types.is_boolean(t):
        return "BOOL"
    if pa.types.is_floating(t):
        return "FLOAT64"
    if pa.types.is_decimal(t):
        if t.precision - t.scale <= 29 and t.scale <= 9:
            return "NUMERIC"
        return "BIGNUMERIC"
    if pa.types.is_timestamp(t):
        return "TIMESTAMP" if t.tz else "DATETIME"
    if pa.types.is_date(t):
        return "DATE"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return "BYTES"
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return f"ARRAY<{column_type(t.value_type)}>"
    return "STRING"


# -- statements (BigQuery dialect) ---------------------------------------------------------------


def bigquery_resource(settings: Settings):
    """dagster-gcp's BigQueryResource for GCP_PROJECT (application default credentials): what
    the CDC warehouse writes with and the checks' reader reads with."""
    if not settings.warehouse.gcp_project_set:
        raise ConfigError("ANALYTICS_ENV=prod needs GCP_PROJECT for the BigQuery warehouse.")
    from dagster_gcp import BigQueryResource

    return BigQueryResource(
        project=settings.warehouse.gcp_project, location=settings.warehouse.bigquery_location
    )


def table_ref(dataset: str, table: str) -> str:
    return f"{q(dataset)}.{q(table)}"


def create_state_sql(dataset: str) -> str:
    return (
        f"CREATE TABLE IF NOT EXISTS {table_ref(dataset, STATE_TABLE)} ("
        "table_name STRING NOT NULL, position_lsn INT64 NOT NULL, position_seq INT64 NOT NULL, "
        "checkpoint STRING NOT NULL, feed STRING, updated_at TIMESTAMP NOT NULL)"
    )


def read_state_sql(dataset: str) -> str:
    return (
        "SELECT table_name, position_lsn, position_seq, checkpoint, updated_at "  # noqa: S608 - quoted identifiers
        f"FROM {table_ref(dataset, STATE_TABLE)}"
    )


def create_raw_sql(
    dataset: str, table: str, columns: Sequence[tuple[str, str]], key: Sequence[str]
) -> str:
    cols = ", ".join(f"{q(c)} {t}" for c, t in columns)
    cluster = f" CLUSTER BY {', '.join(q(k) for k in key)}" if 0 < len(key) <= 4 else ""
    return (
        f"CREATE TABLE IF NOT EXISTS {table_ref(dataset, table)} ({cols}, "
        f"{LSN} INT64 NOT NULL, {SEQ} INT64 NOT NULL, {OP} STRING NOT NULL, "
        f"{IS_DELETED} BOOL NOT NULL, {COMMIT_TS} TIMESTAMP, {LOADED_AT} TIMESTAMP NOT NULL, "
        f"{SOURCE_LSN} INT64){cluster}"
    )


def create_changes_sql(dataset: str, table: str, columns: Sequence[tuple[str, str]]) -> str:
    cols = ", ".join(f"{q(c)} {t}" for c, t in columns)
    # Clustered on the position: the replay anti-join only reads blocks at/after the batch.
    return (
        f"CREATE TABLE IF NOT EXISTS {table_ref(dataset, table + '_changes')} ({cols}, "
        f"{LSN} INT64 NOT NULL, {SEQ} INT64 NOT NULL, {OP} STRING NOT NULL, "
        f"{COMMIT_TS} TIMESTAMP, {LOADED_AT} TIMESTAMP NOT NULL, {SOURCE_LSN} INT64) "
        f"CLUSTER BY {LSN}, {SEQ}"
    )


def add_column_sql(dataset: str, table: str, column: str, type_: str) -> str:
    return f"ALTER TABLE {table_ref(dataset, table)} ADD COLUMN IF NOT EXISTS {q(column)} {type_}"


def _carried(column: str) -> str:
    """True when the change carries `column` (it is not in `_unchanged_cols`)."""
    return f"(NOT ('{_lit(column)}' IN UNNEST({UNCHANGED})))"


def stage_sql(
    stage: str,
    dataset: str,
    load_table: str,
    columns: Sequence[str],
    key: Sequence[str],
    unchanged: Sequence[str],
) -> str:
    """The loaded rows as a temp table. A column a change does not carry takes the value of the
    latest earlier change of the same key in the batch; `_miss_<i>` says it must come from the
    warehouse row instead (as `duckdb.stage_sql`)."""
    parts, miss = [], []
    keys = ", ".join(q(k) for k in key)
    for c in columns:
        if c in unchanged:
            i = list(unchanged).index(c)
            carried = _carried(c)
            prev = (
                f"LAST_VALUE(CASE WHEN {carried} THEN {q(c)} END IGNORE NULLS) OVER "
                f"(PARTITION BY {keys} ORDER BY {LSN}, {SEQ} "
                f"ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)"
            )
            parts.append(f"CASE WHEN {carried} THEN {q(c)} ELSE {prev} END AS {q(c)}")
            miss.append(f"((NOT {carried}) AND ({prev}) IS NULL) AS _miss_{i}")
        else:
            parts.append(q(c))
    meta = f"{LSN}, {SEQ}, {OP}, {IS_DELETED}, {COMMIT_TS}"
    return (
        f"CREATE OR REPLACE TEMP TABLE {stage} AS SELECT {', '.join(parts + miss)}, {meta} "  # noqa: S608 - quoted identifiers
        f"FROM {table_ref(dataset, load_table)}"
    )


def changes_insert_sql(
    stage: str,
    dataset: str,
    table: str,
    columns: Sequence[str],
    key: Sequence[str],
    unchanged: Sequence[str],
    first_lsn_param: str,
) -> str:
    """Append every staged change not yet in the change log (anti-join on the position); values
    a change did not carry come from the warehouse row as it was before this batch."""
    sel = []
    for c in columns:
        if c in unchanged:
            i = list(unchanged).index(c)
            sel.append(f"CASE WHEN s._miss_{i} THEN r.{q(c)} ELSE s.{q(c)} END")
        else:
            sel.append(f"s.{q(c)}")
    join = ""
    if unchanged:
        on = " AND ".join(f"r.{q(k)} = s.{q(k)}" for k in key)
        join = f" LEFT JOIN {table_ref(dataset, table)} AS r ON {on}"
    log = table_ref(dataset, table + "_changes")
    cols = [q(c) for c in columns] + [LSN, SEQ, OP, COMMIT_TS, LOADED_AT]
    return (
        f"INSERT INTO {log} ({', '.join(cols)}) "  # noqa: S608 - quoted identifiers
        f"SELECT {', '.join(sel)}, s.{LSN}, s.{SEQ}, s.{OP}, s.{COMMIT_TS}, @loaded_at "
        f"FROM {stage} AS s{join} WHERE NOT EXISTS (SELECT 1 FROM {log} AS c "
        f"WHERE c.{LSN} >= @{first_lsn_param} AND c.{LSN} = s.{LSN} AND c.{SEQ} = s.{SEQ})"
    )


def merge_sql(
    stage: str,
    dataset: str,
    table: str,
    columns: Sequence[str],
    key: Sequence[str],
    unchanged: Sequence[str],
) -> str:
    """Newest change per key wins; an older change never overwrites a newer row. The source is
    one row per key (BigQuery refuses a MERGE that matches a target row twice)."""
    keys = ", ".join(q(k) for k in key)
    on = " AND ".join(f"t.{q(k)} = s.{q(k)}" for k in key)
    sets = []
    for c in columns:
        if c in key:
            continue
        if c in unchanged:
            i = list(unchanged).index(c)
            sets.append(f"{q(c)} = CASE WHEN s._miss_{i} THEN t.{q(c)} ELSE s.{q(c)} END")
        else:
            sets.append(f"{q(c)} = s.{q(c)}")
    meta = [LSN, SEQ, OP, IS_DELETED, COMMIT_TS]
    sets += [f"{m} = s.{m}" for m in meta] + [f"{LOADED_AT} = @loaded_at"]
    ins_cols = [q(c) for c in columns] + meta + [LOADED_AT]
    ins_vals = [f"s.{q(c)}" for c in columns] + [f"s.{m}" for m in meta] + ["@loaded_at"]
    newer = f"(s.{LSN} > t.{LSN} OR (s.{LSN} = t.{LSN} AND s.{SEQ} > t.{SEQ}))"
    source = (
        f"(SELECT * FROM {stage} QUALIFY ROW_NUMBER() OVER "  # noqa: S608 - quoted identifiers
        f"(PARTITION BY {keys} ORDER BY {LSN} DESC, {SEQ} DESC) = 1)"
    )
    return (
        f"MERGE {table_ref(dataset, table)} AS t USING {source} AS s ON {on} "  # noqa: S608 - validated, quoted identifiers; values are parameters
        f"WHEN MATCHED AND {newer} THEN UPDATE SET {', '.join(sets)} "
        f"WHEN NOT MATCHED THEN INSERT ({', '.join(ins_cols)}) VALUES ({', '.join(ins_vals)})"
    )


def truncate_sql(dataset: str, table: str, p: str) -> str:
    """Every row older than the truncate at (@<p>_lsn, @<p>_seq) becomes deleted."""
    lsn, seq = f"@{p}_lsn", f"@{p}_seq"
    older = f"({LSN} < {lsn} OR ({LSN} = {lsn} AND {SEQ} < {seq}))"
    return (
        f"UPDATE {table_ref(dataset, table)} SET {IS_DELETED} = TRUE, {OP} = 't', "  # noqa: S608 - validated, quoted identifiers; values are parameters
        f"{LSN} = {lsn}, {SEQ} = {seq}, {COMMIT_TS} = @{p}_commit_ts, "
        f"{LOADED_AT} = @loaded_at WHERE {older}"
    )


def truncate_change_sql(dataset: str, table: str, p: str) -> str:
    log = table_ref(dataset, table + "_changes")
    return (
        f"INSERT INTO {log} ({LSN}, {SEQ}, {OP}, {COMMIT_TS}, {LOADED_AT}, {SOURCE_LSN}) "  # noqa: S608 - quoted identifiers
        f"SELECT @{p}_lsn, @{p}_seq, 't', @{p}_commit_ts, @loaded_at, @{p}_source_lsn "
        "FROM (SELECT 1) AS one "
        f"WHERE NOT EXISTS (SELECT 1 FROM {log} AS c "
        f"WHERE c.{LSN} = @{p}_lsn AND c.{SEQ} = @{p}_seq)"
    )


def resent_rows_sql(
    dataset: str, table: str, load_table: str, key: Sequence[str], since: bool
) -> str:
    """`_row` of each loaded event applied before: the same key, `_source_lsn` and op are in the
    change log (a restarted Debezium connector re-sent it at a new offset) or earlier in the
    batch (as `duckdb.resent_rows_sql`). With `since`, only change log rows from the batch's
    oldest commit time on are compared (a re-sent event repeats its commit time)."""
    on = " AND ".join(f"c.{q(k)} = b.{q(k)}" for k in key)
    keys = ", ".join(f"b.{q(k)}" for k in key)
    log = table_ref(dataset, table + "_changes")
    recent = f" AND c.{COMMIT_TS} >= @since" if since else ""
    return (
        f"SELECT {ROW_ID} FROM (SELECT b.{ROW_ID}, ROW_NUMBER() OVER (PARTITION BY {keys}, "  # noqa: S608 - quoted identifiers
        f"b.{SOURCE_LSN}, b.{OP} ORDER BY b.{LSN}, b.{SEQ}) AS nth, EXISTS (SELECT 1 FROM {log} "
        f"AS c WHERE {on} AND c.{SOURCE_LSN} = b.{SOURCE_LSN} AND c.{OP} = b.{OP}{recent}) "
        f"AS logged FROM {table_ref(dataset, load_table)} AS b WHERE b.{SOURCE_LSN} IS NOT NULL) "
        "AS x WHERE logged OR nth > 1"
    )


def truncate_resent_sql(dataset: str, table: str) -> str:
    return (
        f"SELECT COUNT(*) FROM {table_ref(dataset, table + '_changes')} "  # noqa: S608 - quoted identifiers
        f"WHERE {OP} = 't' AND {SOURCE_LSN} = @source_lsn"
    )


def create_dead_letters_sql(dataset: str) -> str:
    return (
        f"CREATE TABLE IF NOT EXISTS {table_ref(dataset, DEAD_LETTERS)} ("
        "topic STRING NOT NULL, kafka_partition INT64 NOT NULL, kafka_offset INT64 NOT NULL, "
        "table_name STRING, reason STRING NOT NULL, record_key BYTES, record_value BYTES, "
        "value_bytes INT64 NOT NULL, first_seen_at TIMESTAMP NOT NULL)"
    )


def dead_letters_insert_sql(dataset: str, load_table: str) -> str:
    """The loaded dead letters not stored yet (a replayed record is not added twice)."""
    target = table_ref(dataset, DEAD_LETTERS)
    cols = [f.name for f in DEAD_LETTER_SCHEMA]
    same = " AND ".join(f"x.{c} = d.{c}" for c in DEAD_LETTER_ID)
    return (
        f"INSERT INTO {target} ({', '.join(cols)}, first_seen_at) "  # noqa: S608 - quoted identifiers
        f"SELECT {', '.join(f'd.{c}' for c in cols)}, @loaded_at "
        f"FROM {table_ref(dataset, load_table)} AS d "
        f"WHERE NOT EXISTS (SELECT 1 FROM {target} AS x WHERE {same})"
    )


def store_state_sql(dataset: str, prefixes: Sequence[str]) -> str:
    """Upsert the positions (one source row per table, all values parameters)."""
    rows = " UNION ALL ".join(
        f"SELECT @{p}_table AS table_name, @{p}_lsn AS position_lsn, "
        f"@{p}_seq AS position_seq, @{p}_checkpoint AS checkpoint, @feed AS feed, "
        f"@{p}_updated_at AS updated_at"
        for p in prefixes
    )
    cols = "table_name, position_lsn, position_seq, checkpoint, feed, updated_at"
    return (
        f"MERGE {table_ref(dataset, STATE_TABLE)} AS t USING ({rows}) AS s "  # noqa: S608 - validated, quoted identifiers; values are parameters
        "ON t.table_name = s.table_name WHEN MATCHED THEN UPDATE SET "
        "position_lsn = s.position_lsn, position_seq = s.position_seq, "
        "checkpoint = s.checkpoint, feed = s.feed, updated_at = s.updated_at "
        f"WHEN NOT MATCHED THEN INSERT ({cols}) VALUES "
        "(s.table_name, s.position_lsn, s.position_seq, s.checkpoint, s.feed, s.updated_at)"
    )


def before_dates_sql(
    dataset: str, table: str, load_table: str, column: str, key: Sequence[str], kind: str
) -> str:
    """Dates (in @tz) of the warehouse rows this batch's updates and deletes replace. `kind`:
    TIMESTAMP, DATETIME (read as UTC, as DuckDB does) or DATE."""
    on = " AND ".join(f"r.{q(k)} = s.{q(k)}" for k in key)
    value = {
        "TIMESTAMP": f"DATE(r.{q(column)}, @tz)",
        "DATETIME": f"DATE(TIMESTAMP(r.{q(column)}), @tz)",
        "DATE": f"r.{q(column)}",
    }[kind]
    return (
        f"SELECT DISTINCT {value} FROM {table_ref(dataset, table)} AS r "  # noqa: S608 - quoted identifiers
        f"WHERE EXISTS (SELECT 1 FROM {table_ref(dataset, load_table)} AS s "
        f"WHERE s.{OP} IN ('u', 'd') AND {on})"
    )


def script_sql(statements: Sequence[str]) -> str:
    body = "".join(f"{s};\n" for s in statements)
    return f"BEGIN TRANSACTION;\n{body}COMMIT TRANSACTION;"


def _lit(text: str) -> str:
    return text.replace("\\", "\\\\").replace("'", "\\'")


# -- the adapter ---------------------------------------------------------------------------------


@dataclass
class Plan:
    """What the next commit runs: loaded staging tables, statements, parameters."""

    load_tables: list[str] = field(default_factory=list)
    statements: list[str] = field(default_factory=list)
    params: dict[str, tuple[str, Any]] = field(default_factory=dict)  # name -> (type, value)
    states: dict[str, TableState] = field(default_factory=dict)
    truncates: set[tuple[str, int | None]] = field(default_factory=set)  # (table, source lsn)


class BigQueryWarehouse:
    """`client` is a `google.cloud.bigquery.Client` (or anything with its methods); `resource`
    a dagster-gcp `BigQueryResource` whose client is held open until `close()`."""

    def __init__(
        self,
        *,
        client: Any = None,
        resource: Any = None,
        dataset: str = "raw",
        business_date_columns: Mapping[str, str] | None = None,
        timezone: str = "UTC",
        feed_kind: str = "slot",
    ):
        self._exit = contextlib.ExitStack()
        if client is None:
            if resource is None:
                raise ValueError("BigQueryWarehouse needs a client or a BigQueryResource")
            client = self._exit.enter_context(resource.get_client())
        self.client = client
        self.dataset = validate_identifier(dataset, "warehouse dataset")
        self.business_date_columns = dict(
            DEFAULT_BUSINESS_DATE_COLUMNS
            if business_date_columns is None
            else business_date_columns
        )
        self.timezone = timezone
        self.feed_kind = feed_kind
        self._plan: Plan | None = None
        self._state: dict[str, TableState] | None = None
        self._columns: dict[str, list[str]] = {}
        self._n = 0
        self._bq().Dataset  # noqa: B018 - fail early when google-cloud-bigquery is missing
        self._create_dataset()
        self._run(create_state_sql(self.dataset))

    # -- client calls -------------------------------------------------------------------------

    @staticmethod
    def _bq():
        from google.cloud import bigquery

        return bigquery

    def _create_dataset(self) -> None:
        bq = self._bq()
        ds = bq.Dataset(f"{self.client.project}.{self.dataset}")
        location = getattr(self.client, "location", None)
        if location:
            ds.location = location
        self.client.create_dataset(ds, exists_ok=True)

    def _run(self, sql: str, params: Mapping[str, tuple[str, Any]] | None = None) -> list:
        bq = self._bq()
        config = bq.QueryJobConfig(
            query_parameters=[
                bq.ScalarQueryParameter(name, type_, value)
                for name, (type_, value) in (params or {}).items()
            ]
        )
        return list(self.client.query(sql, job_config=config).result())

    def _load(self, name: str, rows: pa.Table) -> None:
        bq = self._bq()
        buf = io.BytesIO()
        pq.write_table(rows, buf, coerce_timestamps="us", allow_truncated_timestamps=True)
        buf.seek(0)
        parquet = bq.ParquetOptions()
        parquet.enable_list_inference = True
        config = bq.LoadJobConfig(
            source_format=bq.SourceFormat.PARQUET,
            write_disposition=bq.WriteDisposition.WRITE_TRUNCATE,
            schema=[_schema_field(f) for f in rows.schema],
        )
        config.parquet_options = parquet
        dest = f"{self.client.project}.{self.dataset}.{name}"
        self.client.load_table_from_file(buf, dest, job_config=config).result()

    def _drop(self, names: Sequence[str]) -> None:
        for name in names:
            self.client.delete_table(
                f"{self.client.project}.{self.dataset}.{name}", not_found_ok=True
            )

    # -- schema -------------------------------------------------------------------------------

    def _existing_columns(self, table: str) -> list[str]:
        if table not in self._columns:
            from google.api_core.exceptions import NotFound

            try:
                got = self.client.get_table(f"{self.client.project}.{self.dataset}.{table}")
                self._columns[table] = [f.name for f in got.schema]
            except NotFound:
                return []
        return self._columns[table]

    def ensure_tables(self, table: str, schema: pa.Schema, key: Sequence[str]) -> None:
        validate_identifier(table, "table")
        source = [
            (validate_column(f.name), column_type(f.type))
            for f in schema
            if f.name not in META_COLUMNS
        ]
        existing = self._existing_columns(table)
        if not existing:
            self._run(create_raw_sql(self.dataset, table, source, key))
            self._run(create_changes_sql(self.dataset, table, source))
        else:
            added = [(c, t) for c, t in source if c not in existing]
            if SOURCE_LSN not in existing:  # a warehouse from before SOURCE_LSN was stored
                added.append((SOURCE_LSN, "INT64"))
            for c, t in added:
                self._run(add_column_sql(self.dataset, table, c, t))
                self._run(add_column_sql(self.dataset, table + "_changes", c, t))
            if not added:
                return
        self._columns.pop(table, None)
        self._columns.pop(table + "_changes", None)

    # -- state --------------------------------------------------------------------------------

    def state(self) -> dict[str, TableState]:
        if self._state is None:
            rows = self._run(read_state_sql(self.dataset))
            self._state = {
                r[0]: TableState(r[0], Position(int(r[1]), int(r[2])), r[3], r[4]) for r in rows
            }
        return dict(self._state)

    # -- apply --------------------------------------------------------------------------------

    def rollback(self) -> None:
        plan, self._plan = self._plan, None
        if plan is not None:
            self._drop(plan.load_tables)

    def commit(self) -> None:
        plan = self._plan
        if plan is None:
            return
        try:
            if plan.statements or plan.states:
                self._run(self.script(plan), self.script_params(plan))
        finally:
            self._plan = None
            self._drop(plan.load_tables)
        if self._state is not None:
            self._state.update(plan.states)

    def script(self, plan: Plan) -> str:
        statements = list(plan.statements)
        if plan.states:
            statements.append(store_state_sql(self.dataset, self._state_prefixes(plan)))
        return script_sql(statements)

    def script_params(self, plan: Plan) -> dict[str, tuple[str, Any]]:
        params = dict(plan.params)
        if plan.states:
            params["feed"] = ("STRING", self.feed_kind)
            for p, st in zip(self._state_prefixes(plan), plan.states.values(), strict=True):
                params[f"{p}_table"] = ("STRING", st.table)
                params[f"{p}_lsn"] = ("INT64", int(st.position.lsn))
                params[f"{p}_seq"] = ("INT64", int(st.position.seq))
                params[f"{p}_checkpoint"] = ("STRING", st.checkpoint)
                params[f"{p}_updated_at"] = ("TIMESTAMP", st.updated_at)
        return params

    @staticmethod
    def _state_prefixes(plan: Plan) -> list[str]:
        return [f"st{i}" for i in range(len(plan.states))]

    def apply(
        self,
        batch: ChangeBatch,
        *,
        commit: bool = True,
        before_commit: Callable[[], None] | None = None,
    ) -> ApplyResult:
        t0 = time.perf_counter()
        now = dt.datetime.now(dt.UTC)
        if self._plan is None:
            self._plan = Plan()
        plan = self._plan
        try:
            state = self.state()
            state.update(plan.states)
            results = {}
            for table, tc in batch.tables.items():
                results[table] = self._apply_table(plan, tc, state.get(table), now)
            if batch.dead_letters:
                self._plan_dead_letters(plan, batch, now)
            if before_commit is not None:
                before_commit()
            if commit:
                self.commit()
        except BaseException:
            self.rollback()
            raise
        return ApplyResult(results, time.perf_counter() - t0, committed=commit)

    def _next(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}{self._n}"

    def _apply_table(
        self, plan: Plan, tc: TableChanges, stored: TableState | None, now: dt.datetime
    ) -> TableApplyResult:
        table = validate_identifier(tc.table, "table")
        result = TableApplyResult(table)
        stored_pos = Position(*stored.position) if stored else None
        if stored_pos is not None and tc.end <= stored_pos:
            result.skipped = tc.num_changes
            return result
        rows = tc.rows
        plan.params["loaded_at"] = ("TIMESTAMP", now)
        columns = [f.name for f in rows.schema if f.name not in META_COLUMNS]
        if columns:
            self.ensure_tables(table, rows.schema, tc.key)
        if rows.num_rows and columns:
            if not tc.key:
                raise ValueError(f"table {table} has no primary key: it cannot be merged")
            fresh = rows_after(rows, stored_pos)
            result.skipped = rows.num_rows - fresh.num_rows
            if fresh.num_rows:
                self._merge_rows(plan, table, fresh, columns, tc.key, result)
        for pos in tc.truncates:
            if stored_pos is not None and pos <= stored_pos:
                result.skipped += 1
                continue
            if not self._existing_columns(table):
                continue  # nothing was ever loaded for it
            source_lsn = tc.truncate_source_lsns.get(pos)
            if source_lsn is not None and (
                (table, source_lsn) in plan.truncates
                or self._run(
                    truncate_resent_sql(self.dataset, table),
                    {"source_lsn": ("INT64", source_lsn)},
                )[0][0]
            ):
                result.skipped += 1  # re-sent by a restarted Debezium connector
                continue
            plan.truncates.add((table, source_lsn))
            p = self._next("tr")
            plan.params[f"{p}_source_lsn"] = ("INT64", source_lsn)
            plan.params[f"{p}_lsn"] = ("INT64", int(pos.lsn))
            plan.params[f"{p}_seq"] = ("INT64", int(pos.seq))
            plan.params[f"{p}_commit_ts"] = ("TIMESTAMP", truncate_commit_ts(tc, pos))
            plan.statements.append(truncate_sql(self.dataset, table, p))
            plan.statements.append(truncate_change_sql(self.dataset, table, p))
            result.changes_by_op["t"] = result.changes_by_op.get("t", 0) + 1
            result.first = pos if result.first is None else min(result.first, pos)
            result.last = pos if result.last is None else max(result.last, pos)
        plan.states[table] = TableState(table, tc.end, tc.checkpoint, now)
        return result

    def _plan_dead_letters(self, plan: Plan, batch: ChangeBatch, now: dt.datetime) -> None:
        """Load the dead letters; the script inserts them (DDL cannot run inside it)."""
        if DEAD_LETTERS not in self._columns:
            self._run(create_dead_letters_sql(self.dataset))
            self._columns[DEAD_LETTERS] = [f.name for f in DEAD_LETTER_SCHEMA]
        load = f"{LOAD_PREFIX}{DEAD_LETTERS.strip('_')}_{uuid.uuid4().hex[:12]}"
        plan.load_tables.append(load)
        self._load(load, dead_letter_rows(batch.dead_letters))
        plan.params["loaded_at"] = ("TIMESTAMP", now)
        plan.statements.append(dead_letters_insert_sql(self.dataset, load))

    def _merge_rows(self, plan, table, rows, columns, key, result) -> None:
        load = f"{LOAD_PREFIX}{table}_{uuid.uuid4().hex[:12]}"
        plan.load_tables.append(load)
        if SOURCE_LSN in rows.column_names:  # stored like a column (raw and change log)
            columns = [*columns, SOURCE_LSN]
            rows = self._without_resent(table, load, rows, key, result)
            if not rows.num_rows:
                return
        else:
            self._load(load, rows)
        positions = sorted(
            zip(rows.column(LSN).to_pylist(), rows.column(SEQ).to_pylist(), strict=True)
        )
        result.first, result.last = Position(*positions[0]), Position(*positions[-1])
        for item in rows.column(OP).value_counts().to_pylist():
            result.changes_by_op[item["values"]] = item["counts"]
        unchanged = unchanged_columns(rows)
        date_col = self.business_date_columns.get(table)
        if date_col in columns:
            result.business_dates = self._business_dates(table, load, rows, date_col, key)
        stage = self._next(STAGE_PREFIX)
        first = self._next("first_lsn")
        plan.params[first] = ("INT64", int(result.first.lsn))
        plan.statements += [
            stage_sql(stage, self.dataset, load, columns, key, unchanged),
            changes_insert_sql(stage, self.dataset, table, columns, key, unchanged, first),
            merge_sql(stage, self.dataset, table, columns, key, unchanged),
        ]

    def _without_resent(self, table, load, rows, key, result) -> pa.Table:
        """Load the rows, drop the events applied before (`resent_rows_sql`); if there were
        any, the load table is replaced by the rows without them."""
        self._load(load, numbered(rows))
        if not self._existing_columns(table + "_changes"):
            return rows
        since = resent_since(rows)
        found = self._run(
            resent_rows_sql(self.dataset, table, load, key, since is not None),
            {"since": ("TIMESTAMP", since)} if since is not None else None,
        )
        if not found:
            return rows
        result.skipped += len(found)
        rows = without_rows(rows, [int(r[0]) for r in found])
        if rows.num_rows:
            self._load(load, rows)
        return rows

    def _business_dates(self, table, load, rows, column, key) -> set[dt.date]:
        """Dates of the after images (Arrow) and of the rows they replace (one query)."""
        col = rows.column(column)
        is_ts = pa.types.is_timestamp(col.type)
        if not (is_ts or pa.types.is_date(col.type)):
            return set()
        dates = after_dates(col, self.timezone)
        kind = column_type(col.type)
        found = self._run(
            before_dates_sql(self.dataset, table, load, column, key, kind),
            {"tz": ("STRING", self.timezone)} if is_ts else None,
        )
        return dates | {r[0] for r in found if r[0] is not None}

    def close(self) -> None:
        try:
            self.rollback()
        finally:
            self._exit.close()


# -- helpers -------------------------------------------------------------------------------------


def _schema_field(f: pa.Field):
    from google.cloud import bigquery

    t = f.type
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return bigquery.SchemaField(f.name, column_type(t.value_type), mode="REPEATED")
    return bigquery.SchemaField(f.name, column_type(t), mode="NULLABLE")


def after_dates(col: pa.ChunkedArray, tz: str) -> set[dt.date]:
    if pa.types.is_date(col.type):
        return {d for d in pc.unique(col).to_pylist() if d is not None}
    us = pc.cast(pc.cast(pc.drop_null(col), pa.timestamp("us", col.type.tz)), pa.int64())
    buckets = np.unique(us.to_numpy() // BUCKET_US) if len(us) else np.zeros(0, np.int64)
    return business_dates(buckets * BUCKET_US, tz)
