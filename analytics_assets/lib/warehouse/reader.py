"""Reading the warehouse from the checks and notifications: `connect(settings)` yields a DuckDB
connection (dev) or a `BigQueryReader` (prod) with the small part of the DB-API the readers use:
`execute(sql, params)` returning a cursor with `fetchone()`, `fetchall()` and `description`.

Readers write one SQL text for both warehouses where the common subset allows it: values are `?`
positional parameters (DuckDB and BigQuery both bind them; the reader never formats a value into
SQL), relation names come from `relation(con, layer, table)`, quoted for the dialect. Where the
dialects differ (INFORMATION_SCHEMA here) the two variants sit side by side in one function,
switched on `dialect(con)`.

Layers are named as in dev: `raw` is the raw CDC dataset (`RAW_SCHEMA`), any other layer is the
dbt dataset `<BIGQUERY_DATASET>_<layer>` in BigQuery (dbt/macros/generate_schema_name.sql), the
layer itself in DuckDB. Nothing here imports Arrow, DuckDB or the BigQuery client at module load:
the code location loads without them.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

from analytics_assets.lib.errors import WarehouseBusy, WarehouseUnavailable
from analytics_assets.lib.warehouse.names import backquote, q
from analytics_assets.settings import Settings, validate_identifier


class WarehouseNotReady(WarehouseUnavailable):
    """The warehouse file, or a relation the reader needs, does not exist yet."""


# -- BigQuery ------------------------------------------------------------------------------------


def bigquery_parameter(value: Any, name: str | None = None):
    """One query parameter, typed from the Python value (positional when `name` is None)."""
    from google.cloud import bigquery

    if isinstance(value, list | tuple):
        element = next((v for v in value if v is not None), "")
        return bigquery.ArrayQueryParameter(name, _bigquery_type(element), list(value))
    return bigquery.ScalarQueryParameter(name, _bigquery_type(value), value)


def _bigquery_type(value: Any) -> str:
    if value is None or isinstance(value, str):
        return "STRING"
    if isinstance(value, bool):  # before int: bool is an int
        return "BOOL"
    if isinstance(value, int):
        return "INT64"
    if isinstance(value, float):
        return "FLOAT64"
    if isinstance(value, Decimal):
        return "NUMERIC"
    if isinstance(value, bytes):
        return "BYTES"
    if isinstance(value, dt.datetime):  # before date: a datetime is a date
        return "TIMESTAMP" if value.tzinfo is not None else "DATETIME"
    if isinstance(value, dt.date):
        return "DATE"
    raise TypeError(f"no BigQuery parameter type for a {type(value).__name__}")


class BigQueryCursor:
    """The rows of one finished query job."""

    def __init__(self, result: Any):
        schema = getattr(result, "schema", None) or []
        self.description = [(f.name, f.field_type, None, None, None, None, None) for f in schema]
        self._rows = [tuple(r.values()) if hasattr(r, "values") else tuple(r) for r in result]
        self._next = 0

    def fetchall(self) -> list[tuple]:
        rows, self._next = self._rows[self._next :], len(self._rows)
        return rows

    def fetchone(self) -> tuple | None:
        if self._next >= len(self._rows):
            return None
        self._next += 1
        return self._rows[self._next - 1]


class BigQueryReader:
    """Read-only queries on BigQuery through a `google.cloud.bigquery.Client` (or anything with
    its `query` method): only SELECT / WITH statements, every value a query parameter."""

    dialect = "bigquery"

    def __init__(self, client: Any, *, raw_dataset: str, dbt_dataset: str):
        self.client = client
        self.project = client.project
        self.raw_dataset = validate_identifier(raw_dataset, "RAW_SCHEMA")
        self.dbt_dataset = validate_identifier(dbt_dataset, "BIGQUERY_DATASET")

    def dataset(self, layer: str) -> str:
        """The dataset of a layer: `raw` -> RAW_SCHEMA, `marts` -> `<BIGQUERY_DATASET>_marts`."""
        if layer == "raw":
            return self.raw_dataset
        return f"{self.dbt_dataset}_{validate_identifier(layer, 'layer')}"

    def execute(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> BigQueryCursor:
        from google.cloud import bigquery

        if not sql.lstrip().lower().startswith(("select", "with")):
            raise ValueError("the warehouse reader runs SELECT queries only")
        if isinstance(params, Mapping):
            parameters = [bigquery_parameter(v, n) for n, v in params.items()]
        else:
            parameters = [bigquery_parameter(v) for v in params]
        config = bigquery.QueryJobConfig(query_parameters=parameters)
        return BigQueryCursor(self.client.query(sql, job_config=config).result())

    def close(self) -> None:
        """The client belongs to whoever made it (`bigquery_client`)."""


@contextlib.contextmanager
def bigquery_client(settings: Settings) -> Iterator[Any]:
    """A BigQuery client of the resource the CDC warehouse uses too (`bigquery_resource`)."""
    from analytics_assets.lib.warehouse.bigquery import bigquery_resource

    with bigquery_resource(settings).get_client() as client:
        yield client


# -- both ----------------------------------------------------------------------------------------


@contextlib.contextmanager
def connect(
    settings: Settings, *, wait_seconds: float = 30.0, read_only: bool = False
) -> Iterator[Any]:
    """The warehouse of this environment: a DuckDB connection to the dev file, or a
    `BigQueryReader` in prod.

    DuckDB lets one process write a file: a lock held by another process (a run started
    elsewhere) is waited for up to `wait_seconds`, then reported as WarehouseBusy. `read_only`
    opens the file read-only (BigQuery is read-only anyway).
    """
    if settings.is_prod:
        with bigquery_client(settings) as client:
            yield BigQueryReader(
                client,
                raw_dataset=settings.warehouse.raw_schema,
                dbt_dataset=settings.warehouse.bigquery_dataset,
            )
        return
    import duckdb

    from analytics_assets.lib.errors import WarehouseLocked
    from analytics_assets.lib.warehouse.duckdb import connect_waiting

    path = Path(settings.warehouse.path)
    if not path.exists():
        raise WarehouseNotReady(f"warehouse {path} does not exist yet: run the CDC ingest first")
    try:
        con = connect_waiting(path, wait_seconds, read_only=read_only, setting=None)
    except WarehouseLocked as exc:
        raise WarehouseBusy(str(exc)) from None
    except duckdb.IOException as exc:
        raise WarehouseUnavailable(f"warehouse {path} cannot be opened: {exc}") from None
    except duckdb.ConnectionException as exc:
        # This process already holds the file open with another configuration (read-write).
        raise WarehouseBusy(
            f"warehouse {path} is open for writing in this process: {exc}"
        ) from None
    try:
        yield con
    finally:
        con.close()


def dialect(con: Any) -> str:
    """`bigquery` for a BigQueryReader, else `duckdb`."""
    return getattr(con, "dialect", "duckdb")


def relation(con: Any, layer: str, table: str) -> str:
    """The quoted name of `table` in `layer` (see the module docstring)."""
    if dialect(con) == "bigquery":
        return quoted(con, con.dataset(layer), table)
    return quoted(con, layer, table)


def quoted(con: Any, schema: str, table: str) -> str:
    """The quoted name of `schema.table` as the warehouse spells it (e.g. from dbt's manifest)."""
    if dialect(con) == "bigquery":
        return f"{backquote(schema)}.{backquote(table)}"
    return f"{q(schema)}.{q(table)}"


def catalog_rows(
    con: Any, layer: str, view: str, select: str, table: str, order_by: str | None = None
) -> list[tuple]:
    """`select` from the warehouse's INFORMATION_SCHEMA `view` ("tables", "columns") for
    `table` in `layer`; [] when the layer does not exist yet. BigQuery's INFORMATION_SCHEMA is
    dataset-scoped, and a dataset that does not exist yet is NotFound."""
    order = f" order by {order_by}" if order_by else ""
    if dialect(con) != "bigquery":
        sql = (
            f"select {select} from information_schema.{view} "  # noqa: S608 - fixed names
            f"where table_schema = ? and table_name = ?{order}"
        )
        return con.execute(sql, [layer, table]).fetchall()
    from google.api_core.exceptions import NotFound

    dataset = f"{backquote(con.project)}.{backquote(con.dataset(layer))}"
    source = f"{dataset}.INFORMATION_SCHEMA.{view.upper()}"
    sql = f"select {select} from {source} where table_name = ?{order}"  # noqa: S608 - quoted identifiers
    try:
        return con.execute(sql, [table]).fetchall()
    except NotFound:
        return []


def relation_exists(con: Any, layer: str, table: str) -> bool:
    return bool(catalog_rows(con, layer, "tables", "table_name", table))


def fetch_dicts(con: Any, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
    cur = con.execute(sql, list(params))
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
