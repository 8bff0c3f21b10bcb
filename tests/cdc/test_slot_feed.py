"""The slot feed + DuckDB warehouse through `cdc.ingest`, against the real embedded Postgres."""

from __future__ import annotations

import datetime as dt
import threading
import time
from decimal import Decimal

import pytest
from cdc_helpers import Crash, crash_at, tiny_peek_ranges

from analytics_assets.lib.feeds import slot_admin
from analytics_assets.lib.feeds.base import parse_lsn
from analytics_assets.lib.feeds.slot_reader import peek_ranges

USERS = "insert into users (email, full_name, country) values (%s, %s, %s)"


def seed_users(cdc, n: int, start: int = 0) -> None:
    cdc.execute(
        "insert into users (email, full_name, country) select 'user' || g || '@example.com', "
        "'Name ' || g, 'DE' from generate_series(%s, %s) g",
        params=(start + 1, start + n),
    )


def test_snapshot_then_stream_of_inserts_updates_and_deletes_matches_the_source(cdc):
    seed_users(cdc, 50)
    first = cdc.ingest()
    assert first.snapshot_tables == list(cdc.tables)
    assert first.tables["users"].changes_by_op == {"r": 50}
    cdc.assert_raw_equals_source()

    cdc.execute(
        "insert into users (email) values ('new@example.com')",
        "update users set country = 'FR' where id <= 10",
        "delete from users where id between 40 and 45",
    )
    second = cdc.ingest()
    assert second.snapshot_tables == []
    assert second.tables["users"].changes_by_op == {"c": 1, "u": 10, "d": 6}
    cdc.assert_raw_equals_source()
    cdc.assert_change_log_has_no_duplicates()
    # nothing new: nothing applied, nothing duplicated
    third = cdc.ingest()
    assert third.changes == 0
    assert cdc.raw("select count(*) from raw.users_changes")[0][0] == 50 + 17


def test_update_to_primary_key_moves_the_row(cdc):
    seed_users(cdc, 3)
    cdc.ingest()
    cdc.execute("update users set id = 100, email = 'moved@example.com' where id = 2")
    result = cdc.ingest()
    assert result.tables["users"].changes_by_op == {"d": 1, "u": 1}
    cdc.assert_raw_equals_source()
    old = cdc.raw("select _is_deleted, _op from raw.users where id = 2")
    assert old == [(True, "d")]
    log = cdc.raw("select id, _op, _seq from raw.users_changes where _op <> 'r' order by _seq")
    assert [(r[0], r[1]) for r in log] == [(2, "d"), (100, "u")]
    assert log[0][2] + 1 == log[1][2]  # the old key's delete comes just before the new image


def test_delete_keeps_the_row_flagged_and_logs_the_change(cdc):
    seed_users(cdc, 2)
    cdc.ingest()
    cdc.execute("delete from users where id = 1")
    cdc.ingest()
    row = cdc.raw("select email, _is_deleted, _op from raw.users where id = 1")
    assert row == [("user1@example.com", True, "d")]
    log = cdc.raw("select id, _op, _commit_ts is not null from raw.users_changes where _op = 'd'")
    assert log == [(1, "d", True)]
    cdc.assert_raw_equals_source()


def test_truncate_marks_every_older_row_deleted_and_later_inserts_survive(cdc):
    seed_users(cdc, 5)
    cdc.ingest()
    cdc.execute(
        "truncate users",
        "insert into users (id, email) values (1000, 'after@example.com')",
    )
    cdc.execute("insert into users (id, email) values (1001, 'later@example.com')")
    result = cdc.ingest()
    assert result.tables["users"].changes_by_op.get("t") == 1
    cdc.assert_raw_equals_source()
    assert cdc.raw("select count(*) from raw.users where _is_deleted and _op = 't'") == [(5,)]
    assert cdc.raw("select count(*) from raw.users_changes where _op = 't'") == [(1,)]


def test_unchanged_toast_value_keeps_the_previous_value(cdc):
    big = "é" * 3000 + "x" * 5000  # > 2 kB: stored out of line (TOAST)
    cdc.execute(USERS, params=("toast@example.com", big, "DE"))
    cdc.ingest()
    cdc.execute("update users set country = 'FR' where email = 'toast@example.com'")
    cdc.ingest()
    assert cdc.raw("select full_name, country from raw.users") == [(big, "FR")]
    logged = cdc.raw("select full_name from raw.users_changes where _op = 'u'")
    assert logged == [(big,)]
    cdc.assert_raw_equals_source()


def test_unchanged_toast_without_replica_identity_full_is_carried_from_the_warehouse(cdc):
    """With the default replica identity pgoutput sends 'u' (unchanged) for the TOAST column
    and no old tuple: the warehouse keeps the value it has, in the batch or before it."""
    cdc.execute(
        "create table notes (id int primary key, body text, n int)",
        "alter table notes alter column body set storage external",
    )
    cdc.tables = (*cdc.tables, "notes")
    big = "b" * 9000
    cdc.execute("insert into notes values (1, %s, 0)", params=(big,))
    cdc.ingest()
    cdc.execute("update notes set n = 1 where id = 1")
    # same batch: insert, then an update that does not carry body
    cdc.execute("insert into notes values (2, %s, 0)", params=(big + "2",))
    cdc.execute("update notes set n = 2 where id = 2")
    cdc.ingest()
    assert cdc.raw("select id, length(body), n from raw.notes order by id") == [
        (1, 9000, 1),
        (2, 9001, 2),
    ]
    assert cdc.raw("select count(*) from raw.notes_changes where body is null") == [(0,)]
    cdc.assert_raw_equals_source(["notes"])


def test_nulls_numerics_timestamptz_and_unicode_round_trip(cdc):
    cdc.execute(
        "create table kinds (id bigint primary key, amount numeric(38, 18), free numeric, "
        "ratio float8, flag bool, at timestamptz, day date, doc jsonb, uid uuid, small int2, "
        "label varchar(20), code char(3))",
        "alter table kinds replica identity full",
    )
    cdc.tables = (*cdc.tables, "kinds")
    cdc.execute(
        "insert into kinds values "
        "(1, 12345678901234567890.123456789012345678, 3.14159265358979323846264338327950288, "
        "1.5, true, '2026-03-29 01:30:00.123456+05:45', '2026-02-28', '{\"a\": [1, \"ü\"]}', "
        "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', -32768, 'naïve 日本 🎉', 'ab'),"
        "(2, null, null, null, null, null, null, null, null, null, '', null)"
    )
    cdc.ingest()
    cdc.execute("update kinds set amount = -0.000000000000000001, label = 'Ωmega' where id = 1")
    cdc.ingest()
    cdc.assert_raw_equals_source(["kinds"])
    row = cdc.raw('select amount, free, "at", code from raw.kinds where id = 1')[0]
    assert row[0] == Decimal("-0.000000000000000001")
    assert row[1] == "3.14159265358979323846264338327950288"  # unconstrained numeric: exact text
    assert row[2] == dt.datetime(2026, 3, 28, 19, 45, 0, 123456, tzinfo=dt.UTC)
    assert row[3] == "ab "


def test_large_transaction_is_applied_in_several_bounded_batches(cdc):
    cdc.ingest()
    cdc.execute(
        "insert into orders (user_id, total, status) "
        "select g, g / 7.0, 'new' from generate_series(1, 12000) g",
        "update orders set status = 'paid' where id % 3 = 0",
        "delete from orders where id % 5 = 0",
    )
    result = cdc.ingest(batch_size=2500)
    assert result.batches >= 5
    assert result.tables["orders"].changes_by_op == {"c": 12000, "u": 4000, "d": 2400}
    cdc.assert_raw_equals_source(["orders"])
    cdc.assert_change_log_has_no_duplicates(["orders"])


def test_rolled_back_transaction_never_appears(cdc):
    cdc.ingest()
    conn = cdc.connect()
    conn.autocommit = False
    with conn.cursor() as cur:
        cur.execute("insert into users (email) values ('ghost@example.com')")
        cur.execute("update users set email = 'x'")
    conn.rollback()
    conn.close()
    cdc.execute("insert into users (email) values ('real@example.com')")
    result = cdc.ingest()
    assert result.tables["users"].changes_by_op == {"c": 1}
    assert cdc.raw("select email from raw.users_changes") == [("real@example.com",)]
    cdc.assert_raw_equals_source()


def test_added_column_is_picked_up(cdc):
    seed_users(cdc, 2)
    cdc.ingest()
    cdc.execute("update users set country = 'NL' where id = 1")
    cdc.execute(
        "alter table users add column loyalty_tier text",
        "update users set loyalty_tier = 'gold' where id = 2",
    )
    cdc.ingest()
    cdc.assert_raw_equals_source()
    assert cdc.raw("select id, loyalty_tier from raw.users order by id") == [(1, None), (2, "gold")]
    assert cdc.raw("select count(*) from raw.users_changes where loyalty_tier = 'gold'") == [(1,)]


def test_snapshot_with_concurrent_writes_has_no_gap_and_no_double_count(cdc):
    seed_users(cdc, 20000)
    stop = threading.Event()
    written = {"n": 0}

    def writer():
        conn = cdc.connect()
        with conn.cursor() as cur:
            i = 0
            while not stop.is_set():
                i += 1
                cur.execute("begin")
                cur.execute(USERS, (f"w{i}@example.com", f"Writer {i}", "US"))
                cur.execute(
                    "update users set full_name = full_name || '+' where id = %s",
                    (i * 7 % 20000 + 1,),
                )
                cur.execute("delete from users where id = %s", (20001 - i,))
                cur.execute("commit")
                written["n"] += 1
        conn.close()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        time.sleep(0.2)
        # snapshot (and stream) while the writer runs; it stops once streaming has begun
        cdc.ingest(batch_size=5000, fault=lambda stage: stage == "decoded" and stop.set())
    finally:
        stop.set()
        thread.join()
    assert written["n"] > 0
    cdc.ingest(batch_size=5000)
    cdc.assert_raw_equals_source()
    cdc.assert_change_log_has_no_duplicates()
    snap = cdc.raw("select min(_lsn), max(_lsn) from raw.users_changes where _op = 'r'")[0]
    assert snap[0] == snap[1]  # one consistent point
    streamed_before = cdc.raw(
        "select count(*) from raw.users_changes where _op <> 'r' and _lsn <= ?", [snap[0]]
    )
    assert streamed_before == [(0,)]  # every streamed change is newer than the snapshot


@pytest.mark.parametrize("stage", ["snapshot", "decoded", "applied", "committed", "acked"])
def test_crash_at_each_stage_then_restart_loses_nothing_and_duplicates_nothing(cdc, stage):
    seed_users(cdc, 3000)
    if stage != "snapshot":
        cdc.ingest(batch_size=1000)
    cdc.execute(
        "insert into orders (user_id, total, status) select g, g * 1.01, 'new' from generate_series(1, 3000) g",
        "update users set country = 'ES' where id % 2 = 0",
        "delete from users where id % 7 = 0",
        "update users set id = id + 100000 where id % 11 = 0",
    )
    before = cdc.slot_confirmed()
    with pytest.raises(Crash):
        cdc.ingest(batch_size=1000, fault=crash_at(stage, hit=2))
    if stage in ("decoded", "applied"):
        assert cdc.slot_confirmed() == before  # nothing committed beyond the first batch's ack
    cdc.ingest(batch_size=1000)
    cdc.assert_raw_equals_source()
    cdc.assert_change_log_has_no_duplicates()
    if stage == "snapshot":  # the changes predate the slot: all in the snapshot
        expected = (3000 - 428) + 3000
    else:  # users: snapshot, updates, deletes, primary-key moves (delete + update); orders
        expected = 3000 + 1500 + 428 + 2 * (272 - 38) + 3000
    logged = cdc.raw(
        "select (select count(*) from raw.users_changes) + (select count(*) from raw.orders_changes)"
    )[0][0]
    assert logged == expected


def test_slot_is_acknowledged_only_after_the_warehouse_commit(cdc):
    cdc.ingest()
    seed_users(cdc, 10)
    before = cdc.slot_confirmed()
    for stage in ("decoded", "applied"):
        with pytest.raises(Crash):
            cdc.ingest(fault=crash_at(stage))
        assert cdc.slot_confirmed() == before
        assert cdc.raw("select count(*) from raw.users") == [(0,)]
    with pytest.raises(Crash):
        cdc.ingest(fault=crash_at("committed"))
    assert cdc.slot_confirmed() == before  # committed, not yet acknowledged
    assert cdc.raw("select count(*) from raw.users") == [(10,)]
    # restart: the warehouse is ahead of the slot, so the feed acknowledges it first
    feed = cdc.feed()
    wh = cdc.warehouse()
    try:
        feed.open(["users"], wh.state())
        assert parse_lsn(cdc.slot_confirmed()) > parse_lsn(before)
    finally:
        feed.close()
        wh.close()
    assert cdc.ingest().tables["users"].changes == 0


def test_lag_counts_pending_changes_and_seconds_behind_in_one_round_trip(cdc):
    cdc.ingest()
    seed_users(cdc, 5)
    cdc.execute("insert into orders (user_id, total, status) values (1, 1, 'new')")
    time.sleep(1.1)
    feed = cdc.feed()
    wh = cdc.warehouse()
    calls = []
    real = feed._query
    feed._query = lambda *a, **k: calls.append(a[0]) or real(*a, **k)
    try:
        lag = feed.lag(wh.state())
    finally:
        feed.close()
        wh.close()
    assert len(calls) == 1
    assert lag["users"].pending_changes == 5
    assert lag["orders"].pending_changes == 1
    assert lag["products"].pending_changes == 0
    assert lag["users"].seconds_behind >= 1.0
    assert lag["products"].seconds_behind == 0
    assert lag["users"].position_lag_bytes > 0
    result = cdc.ingest(measure_lag=True)
    assert result.tables["users"].lag_before.pending_changes == 5
    assert result.tables["users"].lag_after.pending_changes == 0
    assert result.tables["users"].metadata()["lag_after_pending_changes"] == 0


def test_heartbeat_advances_an_idle_slot(cdc, pg_stack):
    cdc.ingest()
    # WAL written elsewhere on the server: the captured database is idle
    other = cdc.url.rsplit("/", 1)[0] + "/postgres"
    import psycopg2

    conn = psycopg2.connect(other)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("create temp table filler as select g from generate_series(1, 20000) g")
        cur.execute("select pg_current_wal_lsn()::text")
        wal = cur.fetchone()[0]
    conn.close()
    assert parse_lsn(cdc.slot_confirmed()) < parse_lsn(wal)
    result = cdc.ingest()
    assert result.changes == 0
    assert parse_lsn(cdc.slot_confirmed()) >= parse_lsn(wal)


def test_subset_ingest_keeps_the_other_tables_changes(cdc):
    cdc.ingest()
    cdc.execute(
        "insert into users (email) values ('a@example.com')",
        "insert into orders (user_id, total, status) values (1, 9.99, 'new')",
    )
    only_orders = cdc.ingest(["orders"])
    assert set(only_orders.tables) == {"orders"}
    assert cdc.raw("select count(*) from raw.orders") == [(1,)]
    assert cdc.raw("select count(*) from raw.users") == [(0,)]
    cdc.execute("update orders set status = 'paid'")
    assert cdc.ingest(["orders"]).tables["orders"].changes_by_op == {"u": 1}
    users = cdc.ingest(["users"])
    assert users.tables["users"].changes_by_op == {"c": 1}
    cdc.assert_raw_equals_source()
    cdc.assert_change_log_has_no_duplicates()


def test_business_dates_cover_before_and_after_images(cdc):
    cdc.ingest()
    cdc.execute(
        "insert into orders (id, user_id, total, status, created_at) values "
        "(1, 1, 5, 'new', '2026-01-05 23:30:00+00'), (2, 1, 5, 'new', '2026-01-07 10:00:00+00')"
    )
    assert cdc.ingest().tables["orders"].business_dates == {
        dt.date(2026, 1, 5),
        dt.date(2026, 1, 7),
    }
    cdc.execute("update orders set created_at = '2026-02-01 00:10:00+00' where id = 1")
    cdc.execute("delete from orders where id = 2")
    dates = cdc.ingest().tables["orders"].business_dates
    assert dates == {dt.date(2026, 1, 5), dt.date(2026, 2, 1), dt.date(2026, 1, 7)}


def test_slot_status_reports_wal_status_retained_bytes_and_activity(cdc):
    feed = cdc.feed()
    assert feed.slot_status() == {"slot": cdc.slot, "exists": False}
    cdc.ingest()
    status = feed.slot_status()
    feed.close()
    assert status["exists"] is True
    assert status["wal_status"] in ("reserved", "extended")
    assert status["active"] is False
    assert status["retained_bytes"] >= 0
    assert status["confirmed_flush_lsn"] == cdc.slot_confirmed()


def test_recreated_slot_resynchronizes_tables_and_marks_rows_deleted_meanwhile(cdc):
    seed_users(cdc, 5)
    cdc.ingest()
    conn = cdc.connect()
    with conn.cursor() as cur:
        cur.execute("select pg_drop_replication_slot(%s)", (cdc.slot,))
    conn.close()
    cdc.execute("delete from users where id = 1", "update users set country = 'PT' where id = 2")
    result = cdc.ingest()
    assert "users" in result.snapshot_tables
    cdc.assert_raw_equals_source()
    assert cdc.raw("select _is_deleted from raw.users where id = 1") == [(True,)]


def test_peek_ranges_cover_the_backlog_contiguously_and_grow():
    mib = 1 << 20
    ranges = peek_ranges(100, 100 + 100 * mib, 8 * mib, 2, 32 * mib)
    assert ranges[0] == (100, 100 + 8 * mib)
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:], strict=False))
    assert ranges[-1][1] == 100 + 100 * mib
    sizes = [hi - lo for lo, hi in ranges]
    assert sizes[:3] == [8 * mib, 16 * mib, 32 * mib]
    assert max(sizes[:-1]) == 32 * mib  # capped; a short remainder joins the last range
    assert sizes[-1] <= 32 * mib * 3 // 2
    assert peek_ranges(5, 9, 8 * mib, 2, 32 * mib) == [(5, 9)]


def test_peek_ranges_split_a_large_remainder_instead_of_ending_on_a_giant_range():
    mib = 1 << 20
    sizes = [hi - lo for lo, hi in peek_ranges(0, 152 * mib, 8 * mib, 4, 256 * mib)]
    assert sizes == [8 * mib, 32 * mib, 56 * mib, 56 * mib]  # not 8/32/112
    ranges = peek_ranges(7, 7 + 600 * mib + 3, 8 * mib, 4, 256 * mib)
    assert ranges[0][0] == 7 and ranges[-1][1] == 7 + 600 * mib + 3
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:], strict=False))
    sizes = [hi - lo for lo, hi in ranges]
    assert all(b <= 4 * a for a, b in zip(sizes, sizes[1:], strict=False))
    assert sizes[-1] <= 2 * sizes[-2]


def test_large_backlog_is_read_in_ranges_from_temporary_slot_copies(cdc):
    """A backlog over the first range is peeked as LSN ranges by two sessions, each from a
    temporary copy of the slot: the project's slot is not held meanwhile, the copies are gone
    afterwards, and the raw tables equal the source."""
    seed_users(cdc, 20)
    cdc.ingest()
    for i in range(40):  # 40 transactions, so the ranges split between them
        cdc.execute(
            "insert into orders (user_id, total, status) select 1, g, 'new' "
            "from generate_series(1, 25) g",
            "update users set full_name = md5(random()::text) where id = %(id)s",
            "delete from orders where id %% 7 = 0",
            params={"id": i % 20 + 1},
        )
    seen = []

    def during(info: dict) -> None:
        seen.append(
            cdc.query(
                "select slot_name, temporary, active from pg_replication_slots "
                "where database = current_database() order by slot_name"
            )
        )

    with tiny_peek_ranges(first=4096, largest=16384):
        result = cdc.ingest(batch_size=100, progress=during)
    assert result.tables["orders"].changes_by_op["c"] == 40 * 25
    assert result.tables["users"].changes_by_op == {"u": 40}
    copies = {name for rows in seen for name, temporary, _ in rows if temporary}
    assert len(copies) == 2  # two reading sessions, one copy each
    assert all(
        not active for rows in seen for name, temporary, active in rows if name == cdc.slot
    )  # the project's slot was never held while the copies were read
    left = cdc.query("select slot_name from pg_replication_slots where temporary")
    assert not [name for (name,) in left if name in copies]
    cdc.assert_raw_equals_source()
    cdc.assert_change_log_has_no_duplicates()
    assert cdc.slot_confirmed() is not None


def test_range_boundaries_do_not_cut_the_batches_short(cdc):
    """A range's last chunk goes on with the next range's first, so with ranges of a few
    transactions every batch but the last is full; where a table's columns change between two
    chunks (a column added mid-backlog) they stay two batches, and nothing is lost."""
    seed_users(cdc, 5)
    cdc.ingest()
    for i in range(60):
        if i == 30:
            cdc.execute("alter table orders add column channel text")
        cdc.execute(
            "insert into orders (user_id, total, status) select 1, g, 'new' "
            "from generate_series(1, 10) g",
            "update users set full_name = md5(random()::text) where id = %(id)s",
            params={"id": i % 5 + 1},
        )
    sizes = []
    with tiny_peek_ranges(first=2048, largest=4096):
        result = cdc.ingest(batch_size=100, progress=lambda info: sizes.append(info["changes"]))
    assert result.tables["orders"].changes_by_op == {"c": 600}
    assert result.tables["users"].changes_by_op == {"u": 60}
    # 100 messages a batch, 11 changes in 15 of them (two transactions: Begin, Commit); the one
    # short batch besides the last is the one before the added column
    assert len([n for n in sizes[:-1] if n < 65]) <= 1, sizes
    cdc.assert_raw_equals_source()
    cdc.assert_change_log_has_no_duplicates()


def test_ranges_shorter_than_one_wal_record_lose_nothing(cdc):
    """Each copy consumes what it reads, up to the end of the last WAL record it decoded; with
    ranges shorter than a record (here 64-128 bytes against 1.5 KB rows) that end lies past the
    start of the copy's next range, and its advance must not go back (nor fail)."""
    seed_users(cdc, 6)
    cdc.ingest()
    for i in range(12):
        cdc.execute(
            "update users set full_name = repeat(chr(65 + %(i)s), 1500) where id = %(id)s",
            "insert into orders (user_id, total, status) values (%(id)s, %(i)s, 'new')",
            params={"i": i, "id": i % 6 + 1},
        )
    with tiny_peek_ranges(first=64, largest=128):
        result = cdc.ingest(batch_size=5)
    assert result.tables["users"].changes_by_op == {"u": 12}
    assert result.tables["orders"].changes_by_op == {"c": 12}
    cdc.assert_raw_equals_source()
    cdc.assert_change_log_has_no_duplicates()


def test_backlog_is_one_peek_when_the_server_has_no_slots_to_spare(cdc, monkeypatch):
    """With fewer than two free replication slots (simulated: the server's limit is not ours to
    change here) the backlog is read as one peek of the project's slot, and nothing is lost."""
    cdc.ingest()
    for _ in range(20):
        cdc.execute(
            "insert into orders (user_id, total, status) select 1, g, 'new' "
            "from generate_series(1, 25) g"
        )
    monkeypatch.setattr(slot_admin, "free_slots", lambda query: 1)
    seen = []
    with tiny_peek_ranges(first=4096, largest=16384):
        cdc.ingest(
            batch_size=100,
            progress=lambda info: seen.append(
                cdc.query("select count(*) from pg_replication_slots where temporary")[0][0]
            ),
        )
    assert seen and set(seen) == {0}
    cdc.assert_raw_equals_source()


def test_lag_does_not_peek_the_slot_while_another_ingest_drains_it(cdc):
    """The ranged read leaves the slot free, so a lag reading during an ingest (the sensor's,
    every few seconds) could decode the whole backlog again. While another session holds the
    ingest lock, lag reports the WAL bytes behind and an unknown pending count instead; the
    ingest's own lag readings (same session) still count."""
    cdc.ingest()
    for _ in range(20):
        cdc.execute(
            "insert into orders (user_id, total, status) select 1, g, 'new' "
            "from generate_series(1, 25) g"
        )
    wh = cdc.warehouse()
    state = wh.state()
    wh.close()
    sensor = cdc.feed()
    assert sensor.lag(state)["orders"].pending_changes == 500
    during = []

    def tick(info: dict) -> None:
        if not during:
            during.append(sensor.lag(state))

    with tiny_peek_ranges(first=4096, largest=16384):
        result = cdc.ingest(batch_size=100, progress=tick, measure_lag=True)
    assert result.tables["orders"].lag_before.pending_changes == 500  # its own session
    assert result.tables["orders"].lag_after.pending_changes == 0
    (lag,) = during
    assert lag["orders"].pending_changes is None
    assert lag["orders"].position_lag_bytes > 0
    wh = cdc.warehouse()
    after = sensor.lag(wh.state())
    wh.close()
    sensor.close()
    assert after["orders"].pending_changes == 0
