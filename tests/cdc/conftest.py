"""Fixtures for the CDC tests (helpers live in cdc_helpers.py)."""

from __future__ import annotations

import psycopg2
import pytest
from cdc_helpers import CdcEnv, database_factory


@pytest.fixture
def cdc(source_db, tmp_path) -> CdcEnv:
    db = source_db.rsplit("/", 1)[1]
    env = CdcEnv(source_db, db, tmp_path)
    yield env
    # the session fixture drops inactive slots; make sure ours is not held by a leftover reader
    admin = psycopg2.connect(source_db.rsplit("/", 1)[0] + "/postgres")
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(
            "select pg_terminate_backend(active_pid) from pg_replication_slots "
            "where database = %s and active",
            (db,),
        )
    admin.close()


@pytest.fixture
def fresh_cdc_env(pg_stack, tmp_path):
    """A factory of independent source databases (for property tests that need one per
    example)."""
    yield from database_factory(pg_stack.url("postgres"), tmp_path, CdcEnv)
