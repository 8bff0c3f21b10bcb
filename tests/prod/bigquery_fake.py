"""A FAKE `google.cloud.bigquery.Client`: BigQuery cannot be reached from this machine, so the
prod code paths (the CDC warehouse adapter, the warehouse reader of the checks and the daily
summary) talk to this stand-in instead.

It records every call, and answers a query by parsing it as BigQuery SQL with sqlglot (so a
statement BigQuery's grammar rejects fails here too), transpiling it to DuckDB and running it on
an in-memory DuckDB that holds the datasets as schemas. Parameters are bound, never formatted
into the SQL: named `@name` ones as DuckDB `$name`, positional `?` ones in order.

Two things are mapped because DuckDB has no equivalent: a table named by project
(`<project>.<dataset>.<table>`) is the schema's table once the project is checked, and the
dataset-scoped `<project>.<dataset>.INFORMATION_SCHEMA.TABLES|COLUMNS` views are DuckDB's
`information_schema` restricted to that schema (DuckDB's type names then stand in for BigQuery's).
What this verifies is the SQL's syntax and its logic as DuckDB executes it, not BigQuery's own
execution of it.
"""

from __future__ import annotations

import re
from typing import Any

import duckdb
import pyarrow.parquet as pq
import sqlglot
from google.api_core.exceptions import NotFound
from google.cloud import bigquery
from sqlglot import exp


class Result(list):
    """Rows of a finished job, with the `schema` a RowIterator has."""

    def __init__(self, rows=(), names=()):
        super().__init__(rows)
        self.schema = [bigquery.SchemaField(n, "STRING") for n in names]


class _Job:
    def __init__(self, result: Result | None = None):
        self._result = result if result is not None else Result()

    def result(self):
        return self._result


def parameter_values(job_config) -> dict[str, Any] | list[Any]:
    """The job's parameters: a dict of named ones, or the list of positional ones."""
    params = list(job_config.query_parameters) if job_config else []
    values = [p.values if isinstance(p, bigquery.ArrayQueryParameter) else p.value for p in params]
    if params and all(p.name is None for p in params):
        return values
    return {p.name: v for p, v in zip(params, values, strict=True)}


class DuckDBBackedClient:
    """FAKE BigQuery client (BigQuery cannot run here): see the module docstring."""

    project = "test-project"
    location = "US"

    def __init__(self):
        self.con = duckdb.connect()
        self.con.execute("set TimeZone = 'UTC'")
        self.calls: list[tuple] = []
        self.fail_script: Exception | None = None

    # dataset / tables
    def create_dataset(self, ds, exists_ok=False):
        self.calls.append(("create_dataset", ds.dataset_id, ds.location))
        self.con.execute(f'create schema if not exists "{ds.dataset_id}"')

    def _split(self, ref: str) -> tuple[str, str]:
        project, dataset, table = ref.split(".")
        assert project == self.project
        return dataset, table

    def get_table(self, ref: str):
        dataset, table = self._split(ref)
        rows = self.con.execute(
            "select column_name from information_schema.columns where table_schema = ? "
            "and table_name = ? order by ordinal_position",
            [dataset, table],
        ).fetchall()
        if not rows:
            raise NotFound(ref)

        class _Table:
            schema = [bigquery.SchemaField(r[0], "STRING") for r in rows]

        return _Table()

    def delete_table(self, ref: str, not_found_ok=False):
        self.calls.append(("delete_table", ref))
        dataset, table = self._split(ref)
        self.con.execute(f'drop table if exists "{dataset}"."{table}"')

    # jobs
    def load_table_from_file(self, file, destination: str, job_config=None):
        self.calls.append(("load", destination, job_config))
        dataset, table = self._split(destination)
        rows = pq.read_table(file)  # the adapter's Parquet buffer, as BigQuery would get it
        self.con.register("_incoming", rows)
        self.con.execute(
            f'create or replace table "{dataset}"."{table}" as select * from _incoming'  # noqa: S608 - test fixture names
        )
        self.con.unregister("_incoming")
        return _Job()

    def _to_duckdb(self, statement: exp.Expression) -> str:
        for table in list(statement.find_all(exp.Table)):
            if not table.catalog:
                continue
            assert table.catalog == self.project, table.sql("bigquery")
            dataset, name = table.db, table.name
            if name.upper().startswith("INFORMATION_SCHEMA."):
                if not self.con.execute(
                    "select count(*) from information_schema.schemata where schema_name = ?",
                    [dataset],
                ).fetchone()[0]:
                    raise NotFound(f"Dataset {self.project}:{dataset} was not found")
                view = name.split(".", 1)[1].lower()
                inner = sqlglot.parse_one(
                    f"select * from information_schema.{view} where table_schema = '{dataset}'",  # noqa: S608 - fixture names
                    read="duckdb",
                )
                alias = table.alias or view
                table.replace(exp.Subquery(this=inner, alias=exp.TableAlias(this=alias)))
            else:
                table.set("catalog", None)
        return statement.sql("duckdb")

    def query(self, sql: str, job_config=None):
        params = parameter_values(job_config)
        self.calls.append(("query", sql, params))
        script = sql.lstrip().upper().startswith("BEGIN TRANSACTION")
        if script and self.fail_script is not None:
            raise self.fail_script  # BigQuery fails the script and rolls the transaction back
        result = Result()
        try:
            for statement in sqlglot.parse(sql, read="bigquery"):
                ddb = self._to_duckdb(statement)
                if isinstance(params, list):
                    cur = self.con.execute(ddb, params)
                else:
                    used = {n: params[n] for n in set(re.findall(r"\$(\w+)", ddb)) if n in params}
                    cur = self.con.execute(ddb, used) if used else self.con.execute(ddb)
                names = [d[0] for d in cur.description or []]
                result = Result(cur.fetchall(), names)
        except Exception:
            if script:
                self.con.execute("rollback")
            raise
        return _Job(result)
