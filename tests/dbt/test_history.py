"""history/<table> on the hand-made raw layer (tests/raw_tables.py): an incremental run closes
the versions of earlier runs, and the retention settings prune the change log (only what the
history has read) and the closed versions. The randomized equivalence with the source is
tests/cdc/test_history_equivalence.py."""

from __future__ import annotations

import datetime as dt

import pytest

from tests.dbt.test_dbt_project import DbtProject
from tests.raw_tables import create_raw_tables

HISTORY = ("run", "--quiet", "--select", "orders")


@pytest.fixture
def project(tmp_path) -> DbtProject:
    project = DbtProject(tmp_path)
    create_raw_tables(project.warehouse)
    return project


def _update_order(
    project: DbtProject, order_id: int, status: str, lsn: int, when: str, seq: int = 1
) -> None:
    project.execute(
        "insert into raw.orders_changes by name select * exclude (status, _lsn, _seq, _op, "  # noqa: S608 - test literals
        f"_commit_ts), '{status}' as status, {lsn}::bigint as _lsn, {seq}::bigint as _seq, "
        f"'u' as _op, {when} as _commit_ts from raw.orders_changes "
        f"where id = {order_id} and _op = 'r'"
    )


def test_retention_prunes_read_changes_and_old_closed_versions_only(project, monkeypatch):
    project.run(*HISTORY)
    _update_order(project, 1, "refunded", 3, "now()")
    # one transaction changes order 3 twice: one commit time, ordered by position only
    committed = f"timestamptz '{dt.datetime.now(dt.UTC).isoformat()}'"
    _update_order(project, 3, "paid", 3, committed, seq=2)
    _update_order(project, 3, "refunded", 3, committed, seq=3)
    # read by no run yet: an old commit time, but after the newest position the history holds
    _update_order(project, 2, "refunded", 4, "timestamptz '2024-03-07 00:00:00+00'")
    monkeypatch.setenv("CHANGE_LOG_RETENTION_DAYS", "1")
    monkeypatch.setenv("HISTORY_RETENTION_DAYS", "1")
    project.run(*HISTORY)  # reads both updates, then prunes
    versions = project.query(
        "select id, status, started_by, ended_by from history.orders where id in (1, 2, 9) "
        "order by id, valid_from_lsn"
    )
    # order 1's first version ended now, by the update: kept; order 2's ended on 2024-03-07 and
    # order 9's (hard-deleted in raw_tables) on 2024-03-06: older than a day, gone. Current
    # versions always stay, however old.
    assert versions == [
        (1, "completed", "r", "u"),
        (1, "refunded", "u", None),
        (2, "refunded", "u", None),
    ]
    assert project.query("select count(*) from history.orders where valid_to is null")[0][0] == 11
    # the state inside the transaction was never visible: an empty interval between the two
    assert project.query(
        "select status, started_by, ended_by, valid_from = valid_to from history.orders "
        "where id = 3 and valid_from_lsn = 3 order by valid_from_seq"
    ) == [("paid", "u", "u", True), ("refunded", "u", None, None)]
    # the snapshot (lsn 1) and deletes (lsn 2) are older than a day and read: gone; lsn 4 is
    # the newest position the history holds, so it stays whatever its age
    assert project.query("select distinct _lsn from raw.orders_changes order by _lsn") == [
        (3,),
        (4,),
    ]
