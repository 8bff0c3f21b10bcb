"""The BigQuery warehouse (prod): the apply algorithm of `base.Warehouse`, its statements
(`statements.py`, DuckDB SQL) transpiled to BigQuery by sqlglot (`to_bigquery`, cached).

Per batch and table the fresh rows are written to Parquet by pyarrow and loaded (load job,
WRITE_TRUNCATE) into a staging table `<dataset>._cdc_load_<table>_<id>`, the BATCH the statements
read. The statements are collected, and `commit()` runs them as ONE query job, one script:

    BEGIN TRANSACTION;
      per table: stage (temp table) -> append to <table>_changes -> MERGE into <table>
                 -> truncates -> (next table ...)
      upsert the positions into _cdc_state
    COMMIT TRANSACTION;

A failing statement fails the script and BigQuery rolls the transaction back, so rows, change
log and positions commit together or not at all. Loading and table DDL happen before the
transaction (neither can take part in one); the staging tables are deleted afterwards either way.
`apply(commit=False)` loads and plans; the next `apply` adds to the script (a snapshot table is
applied all or nothing, as on DuckDB).

Values are query parameters (`@name`, typed from `statements.PARAMETERS`); a name a script
already binds to another value gets a suffix. Identifiers are validated and back-quoted.
"""

from __future__ import annotations

import contextlib
import functools
import io
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import sqlglot
from sqlglot import exp

from analytics_assets.lib.errors import ConfigError
from analytics_assets.lib.warehouse import statements
from analytics_assets.lib.warehouse.base import Warehouse
from analytics_assets.lib.warehouse.names import backquote
from analytics_assets.settings import Settings, validate_identifier

LOAD_PREFIX = "_cdc_load_"
_BQ_COLUMN_MAX = 300


# -- the dialect: sqlglot's transpilation and what BigQuery needs beyond it ----------------------


@functools.lru_cache(maxsize=1024)
def to_bigquery(sql: str) -> str:
    """A statement of `statements.py` in BigQuery SQL."""
    return _bigquery_overrides(sqlglot.parse_one(sql, read="duckdb")).sql("bigquery")


def _bigquery_overrides(tree: exp.Expression) -> exp.Expression:
    """What transpiling does not give: BigQuery's decimal types (NUMERIC has 29 integer and 9
    fractional digits, else BIGNUMERIC; unparameterized, as the source's precision is not a
    bound to enforce), `epoch_us` (UNIX_MICROS of a TIMESTAMP; a DATETIME is read as UTC, as
    DuckDB does) and no explicit NULLS ordering (every ordered column is NOT NULL)."""

    def override(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.DataType) and node.this == exp.DataType.Type.DECIMAL:
            precision, scale = (int(e.name) for e in node.expressions) or (18, 3)
            numeric = precision - scale <= 29 and scale <= 9
            return exp.DataType.build("NUMERIC" if numeric else "BIGNUMERIC", dialect="bigquery")
        if isinstance(node, exp.Anonymous) and node.name.lower() == "epoch_us":
            ts = exp.cast(node.expressions[0], exp.DataType.build("TIMESTAMP", dialect="bigquery"))
            return exp.Anonymous(this="UNIX_MICROS", expressions=[ts])
        if isinstance(node, exp.Ordered):
            node.set("nulls_first", not node.args.get("desc"))
        return node

    return tree.transform(override)


@functools.lru_cache(maxsize=256)
def bigquery_type(duckdb_type: str) -> str:
    """A DuckDB type name (`statements.column_type`, a parameter's) as BigQuery spells it."""
    built = exp.DataType.build(duckdb_type, dialect="duckdb")
    return _bigquery_overrides(built).sql("bigquery")


def column_type(t: pa.DataType) -> str:
    """The raw column type CDC creates for an Arrow type, in BigQuery."""
    return bigquery_type(statements.column_type(t))


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


def _relation(placeholder: str) -> re.Pattern:
    return re.compile(rf"(?<![\w`.]){placeholder}(?![\w`])")


_RELATIONS = {
    name: _relation(name) for name in (statements.BATCH, statements.STAGE, statements.DEAD)
}


def bigquery_resource(settings: Settings):
    """dagster-gcp's BigQueryResource for GCP_PROJECT (application default credentials): what
    the CDC warehouse writes with and the checks' reader reads with."""
    if not settings.warehouse.gcp_project_set:
        raise ConfigError("ANALYTICS_ENV=prod needs GCP_PROJECT for the BigQuery warehouse.")
    from dagster_gcp import BigQueryResource

    return BigQueryResource(
        project=settings.warehouse.gcp_project, location=settings.warehouse.bigquery_location
    )


def script_sql(statements_: Sequence[str]) -> str:
    body = "".join(f"{s};\n" for s in statements_)
    return f"BEGIN TRANSACTION;\n{body}COMMIT TRANSACTION;"


# -- the adapter ---------------------------------------------------------------------------------


@dataclass
class Plan:
    """What the next commit runs: loaded staging tables, statements, parameters."""

    load_tables: list[str] = field(default_factory=list)
    statements: list[str] = field(default_factory=list)
    params: dict[str, tuple[str, Any]] = field(default_factory=dict)  # name -> (type, value)
    relations: dict[str, str] = field(default_factory=dict)  # placeholder -> relation now


class BigQueryWarehouse(Warehouse):
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
        super().__init__(
            validate_identifier(dataset, "warehouse dataset"),
            business_date_columns=business_date_columns,
            timezone=timezone,
            feed_kind=feed_kind,
        )
        self._exit = contextlib.ExitStack()
        if client is None:
            if resource is None:
                raise ValueError("BigQueryWarehouse needs a client or a BigQueryResource")
            client = self._exit.enter_context(resource.get_client())
        self.client = client
        self.dataset = self.schema
        self._plan = Plan()
        self._n = 0
        self._bq().Dataset  # noqa: B018 - fail early when google-cloud-bigquery is missing
        self._create_dataset()
        self._run(to_bigquery(statements.create_state_sql(self.dataset)))

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

    def _bound_sql(self, sql: str, params: Mapping[str, Any]) -> tuple[str, dict]:
        """The statement in BigQuery SQL with this plan's relations and parameter names."""
        text = to_bigquery(sql)
        for placeholder, relation in self._plan.relations.items():
            text = _RELATIONS[placeholder].sub(relation, text)
        bound = {}
        for name, value in params.items():
            typed = (bigquery_type(statements.parameter_type(name)), value)
            unique = name
            if self._plan.params.get(name, typed) != typed:
                self._n += 1
                unique = f"{name}__{self._n}"
                text = re.sub(rf"@{name}\b", f"@{unique}", text)
            bound[unique] = typed
        return text, bound

    # -- the executor: load jobs, and one transaction script run at commit ----------------------

    def _begin(self) -> None:
        self._plan = Plan()

    def _commit_transaction(self) -> None:
        plan, self._plan = self._plan, Plan()
        try:
            if plan.statements:
                self._run(script_sql(plan.statements), plan.params)
        finally:
            self._drop(plan.load_tables)

    def _rollback_transaction(self) -> None:
        plan, self._plan = self._plan, Plan()
        self._drop(plan.load_tables)

    def _ddl(self, statement: str, cluster_by: Sequence[str] = ()) -> None:
        tree = sqlglot.parse_one(to_bigquery(statement), read="bigquery")
        if cluster_by and len(cluster_by) <= 4:  # BigQuery clusters on up to 4 columns
            columns = [exp.column(c, quoted=True) for c in cluster_by]
            tree.set("properties", exp.Properties(expressions=[exp.Cluster(expressions=columns)]))
        self._run(tree.sql("bigquery"))

    def _execute(self, statement: str, params: Mapping[str, Any]) -> None:
        text, bound = self._bound_sql(statement, params)
        self._plan.statements.append(text)
        self._plan.params.update(bound)

    def _query(self, statement: str, params: Mapping[str, Any]) -> list[tuple]:
        text, bound = self._bound_sql(statement, params)
        return [
            tuple(r.values()) if hasattr(r, "values") else tuple(r) for r in self._run(text, bound)
        ]

    def _register(self, name: str, rows: pa.Table, table: str) -> None:
        load = f"{LOAD_PREFIX}{table.strip('_')}_{uuid.uuid4().hex[:12]}"
        if name == statements.BATCH:
            self._n += 1
            self._plan.relations[statements.STAGE] = f"_cdc_stage_{self._n}"
        self._plan.load_tables.append(load)
        self._load(load, rows)
        self._plan.relations[name] = f"{backquote(self.dataset)}.{backquote(load)}"

    def _release(self, name: str) -> None:
        """Nothing to do: temp tables end with the script, staging tables at commit."""

    def _read_columns(self, table: str) -> list[str]:
        from google.api_core.exceptions import NotFound

        try:
            got = self.client.get_table(f"{self.client.project}.{self.dataset}.{table}")
        except NotFound:
            return []
        return [f.name for f in got.schema]

    def _column_name(self, name: str) -> str:
        return validate_column(name)

    def close(self) -> None:
        try:
            self.rollback()
        finally:
            self._exit.close()


def _schema_field(f: pa.Field):
    from google.cloud import bigquery

    t = f.type
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return bigquery.SchemaField(f.name, column_type(t.value_type), mode="REPEATED")
    return bigquery.SchemaField(f.name, column_type(t), mode="NULLABLE")
