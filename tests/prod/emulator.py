"""The BigQuery API emulator the prod tests run against: `bqemulator` (PyPI, Apache-2.0; BigQuery's
REST API served by DuckDB + sqlglot), a server in its own virtual environment (`make bqemulator`,
pins in tests/bqemulator/requirements.txt), spoken to by the real `google-cloud-bigquery` client
over HTTP, and by dbt-bigquery through the profile's `emulator` target.

It is an approximation of BigQuery, not BigQuery: every difference a test meets is named where it
is met (and for dbt in docs/production.md), and the sqlglot/compile checks stay beside it.

One server per test session, started on first use on a free port, stopped at the end
(tests/prod/conftest.py `bq_emulator`). Each test takes its own datasets (`Emulator.dataset`).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from dagster_gcp import BigQueryResource
from google.cloud import bigquery

from analytics_assets.lib.warehouse.bigquery import _schema_field

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".venv-bqemulator"
PROJECT = "test-project"
START_TIMEOUT_S = 120.0  # the first start on a loaded 2-core machine imports a lot


def client(endpoint: str, project: str = PROJECT, location: str | None = "US"):
    """A real `google.cloud.bigquery.Client` for the emulator: anonymous credentials (the emulator
    accepts any), requests to `endpoint` instead of bigquery.googleapis.com."""
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery

    return bigquery.Client(
        project=project,
        location=location,
        credentials=AnonymousCredentials(),
        client_options=ClientOptions(api_endpoint=endpoint),
    )


class EmulatorBigQueryResource(BigQueryResource):
    """dagster-gcp's BigQueryResource, its client pointed at the emulator. The stock resource
    builds its client from application default credentials, which do not exist here; the
    project's seam (`lib.warehouse.bigquery.bigquery_resource`) returns this one in tests, so
    prod code keeps the stock resource."""

    api_endpoint: str

    @contextlib.contextmanager
    def get_client(self) -> Iterator[Any]:
        c = client(self.api_endpoint, self.project or PROJECT, self.location)
        try:
            yield c
        finally:
            c.close()


@dataclass
class Emulator:
    endpoint: str
    process: subprocess.Popen
    log_path: Path

    def client(self, project: str = PROJECT):
        return client(self.endpoint, project)

    def resource(self, project: str = PROJECT, location: str = "US") -> EmulatorBigQueryResource:
        return EmulatorBigQueryResource(
            project=project, location=location, api_endpoint=self.endpoint
        )

    @staticmethod
    def dataset(prefix: str) -> str:
        """A dataset name no other test of the session uses (the server lives for the session)."""
        return f"{prefix}_{uuid.uuid4().hex[:8]}"

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def build() -> None:
    """`make bqemulator`: nothing to do when its stamp is newer than the pins and the patch."""
    subprocess.run(["make", "-s", "bqemulator"], cwd=ROOT, check=True)  # noqa: S607 - make on PATH


def start(log_path: Path) -> Emulator:
    """Start the server on free ports (`--rest-port 0`) and wait for its `rest.listen` log line,
    which carries the port it bound; the process is stopped again if that never comes."""
    build()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("GOOGLE_", "BQEMULATOR_"))},
        # DuckDB's extension directory is ~/.duckdb: there `make bqemulator` put the spatial
        # extension the emulator INSTALLs at start (no download possible here).
        "HOME": str(VENV / "home"),
    }
    log = log_path.open("w")
    process = subprocess.Popen(  # noqa: S603 - fixed argv
        [
            str(VENV / "bin" / "bqemulator"),
            "start",
            "--rest-port",
            "0",
            "--grpc-port",
            "0",
            "--project",
            PROJECT,
            "--log-format",
            "json",
            "--log-level",
            "info",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    deadline = time.monotonic() + START_TIMEOUT_S
    try:
        while True:
            port = _listening_port(log_path)
            if port is not None:
                return Emulator(f"http://127.0.0.1:{port}", process, log_path)
            if process.poll() is not None:
                raise RuntimeError(f"bqemulator exited at start:\n{log_path.read_text()[-4000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"bqemulator did not listen:\n{log_path.read_text()[-4000:]}")
            time.sleep(0.1)
    except BaseException:
        process.kill()
        process.wait()
        raise


def _listening_port(log_path: Path) -> int | None:
    for line in log_path.read_text().splitlines():
        if '"rest.listen"' in line:
            return int(json.loads(line)["port"])
    return None


def load_from_duckdb(client, con, schema: str, dataset: str) -> None:
    """Every table of `schema` in `con` into `dataset`, as a Parquet load job with the schema the
    CDC adapter declares for such columns. (BigQuery would take the schema from the Parquet file
    itself; the emulator fails a load into a table that does not exist without one.)"""
    client.create_dataset(dataset, exists_ok=True)
    tables = con.execute(
        "select table_name from information_schema.tables where table_schema = ?", [schema]
    ).fetchall()
    for (table,) in tables:
        arrow = con.execute(f'select * from "{schema}"."{table}"').to_arrow_table()  # noqa: S608 - test names
        buf = io.BytesIO()
        pq.write_table(arrow, buf)
        buf.seek(0)
        config = bigquery.LoadJobConfig(
            source_format=bigquery.SourceFormat.PARQUET,
            schema=[_schema_field(f) for f in arrow.schema],
        )
        client.load_table_from_file(buf, f"{dataset}.{table}", job_config=config).result()
