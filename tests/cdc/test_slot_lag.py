"""The slot feed's lag reading at a backlog larger than its window (`lib/feeds/slot_lag.py`):
one statement, exact below the window, a labelled lower bound above it, and the sensor's
decisions (`defs/automation/logic.py`) still right."""

from __future__ import annotations

import datetime as dt
import re

import psycopg2

from analytics_assets.defs.automation.logic import lagging_tables, watermark_from_lag
from analytics_assets.lib import pgoutput_wire as wire
from analytics_assets.lib.feeds.base import Position, TableState, format_lsn, parse_lsn
from analytics_assets.lib.feeds.slot_lag import LAG_SQL
from analytics_assets.lib.feeds.slot_reader import peek_copy_sql
from analytics_assets.lib.pgoutput import PgOutputDecoder

WINDOW = 32 << 10  # small, so a few thousand changes are a backlog far beyond it
HUGE = 1 << 40  # a window no backlog here reaches: the exact reading to compare with


def read(cdc, window: int, state):
    feed = cdc.feed()
    feed.lag_window_bytes = window
    try:
        lag = feed.lag(state)
        return lag, feed.statements
    finally:
        feed.close()


def users_in_transactions(cdc, transactions: int, rows: int) -> None:
    for t in range(transactions):
        cdc.execute(
            "insert into users (email, full_name) select 'u' || g || '@example.com', "
            "repeat('n', 40) from generate_series(%s, %s) g",
            params=(t * rows + 1, (t + 1) * rows),
        )


def test_a_backlog_beyond_the_window_is_counted_from_its_start_and_flagged(cdc):
    cdc.ingest()
    wh = cdc.warehouse()
    state = wh.state()
    wh.close()
    users_in_transactions(cdc, 40, 50)  # 2,000 users, ~10 x the window of WAL
    cdc.execute("insert into orders (user_id, total, status) values (1, 1, 'new')")

    exact, _ = read(cdc, HUGE, state)
    sampled, statements = read(cdc, WINDOW, state)

    assert statements == 2, "session settings + one lag statement, whatever the backlog"
    assert not exact["users"].pending_sampled and exact["users"].pending_changes == 2000
    assert exact["orders"].pending_changes == 1
    users = sampled["users"]
    assert users.pending_sampled
    assert 0 < users.pending_changes < 2000  # a lower bound: the window's transactions only
    assert users.oldest_commit_ts == exact["users"].oldest_commit_ts  # the first pending commit
    assert sampled["orders"].pending_changes == 0  # its commit lies past the window
    assert sampled["orders"].pending_sampled
    assert users.position_lag_bytes >= WINDOW * 5
    assert users.as_metadata()["lag_pending_changes_counted"].endswith("(a lower bound)")
    assert users.seconds_known and not sampled["orders"].seconds_known

    now = dt.datetime.now(dt.UTC)
    # the watermark stops at the oldest unapplied commit, found in the window
    assert watermark_from_lag(sampled, now) == watermark_from_lag(exact, now) < now
    # thresholds the counts and times do not reach: the bytes behind decide
    quiet = dict(max_pending=10**9, max_seconds=10**9)
    assert lagging_tables(exact, **quiet, max_bytes=HUGE) == []
    assert lagging_tables(sampled, **quiet, max_bytes=WINDOW) == sorted(cdc.tables)
    # a count threshold the window's lower bound already reaches decides on its own
    assert "users" in lagging_tables(
        sampled, max_pending=users.pending_changes, max_seconds=10**9, max_bytes=HUGE
    )


def test_a_first_transaction_larger_than_the_window_is_not_decoded_whole(cdc):
    """The window's end stops the peek inside the transaction: nothing is counted, the oldest
    commit is unknown (so no partition closes on it), and the table lags by bytes."""
    cdc.ingest()
    wh = cdc.warehouse()
    state = wh.state()
    wh.close()
    users_in_transactions(cdc, 1, 3000)  # one transaction, ~15 x the window
    users_in_transactions(cdc, 1, 5)

    sampled, statements = read(cdc, WINDOW, state)
    exact, _ = read(cdc, HUGE, state)

    assert statements == 2
    assert exact["users"].pending_changes == 3005
    assert all(item.pending_sampled and item.pending_changes == 0 for item in sampled.values())
    assert all(item.oldest_commit_ts is None for item in sampled.values())
    # how far behind is unknown too: no `lag_seconds` of 0 in the metadata
    assert not sampled["users"].seconds_known and exact["users"].seconds_known
    assert "lag_seconds" not in sampled["users"].as_metadata()
    assert exact["users"].as_metadata()["lag_seconds"] >= 0
    now = dt.datetime.now(dt.UTC)
    assert watermark_from_lag(sampled, now) is None  # unknown, never `now`
    assert watermark_from_lag(exact, now) < now
    assert "users" in lagging_tables(sampled, max_pending=1, max_seconds=1, max_bytes=WINDOW)


def test_a_backlog_inside_the_window_is_read_exactly(cdc):
    cdc.ingest()
    wh = cdc.warehouse()
    state = wh.state()
    wh.close()
    users_in_transactions(cdc, 3, 10)
    lag, _ = read(cdc, 1 << 20, state)
    assert lag["users"].pending_changes == 30 and not lag["users"].pending_sampled
    assert lag["products"].pending_changes == 0
    assert "lag_pending_changes_counted" not in lag["users"].as_metadata()


def test_the_lag_statement_reads_the_bytes_where_the_decoder_does(cdc):
    """The lag SQL parses pgoutput on the server a second time: its byte offsets are the
    decoder's (`lib/pgoutput_wire.py`), and on a real stream it finds the same pending changes
    and oldest commit as the decoder, also for a position inside a transaction."""
    begins = {int(x) for x in re.findall(r"get_byte\(data, 0\) = (\d+)", LAG_SQL)}
    begins |= {int(x) for x in re.findall(r"kind = (\d+)", LAG_SQL)}
    assert begins == {wire.BEGIN}
    assert {int(x) - 1 for x in re.findall(r"substr\(data, (\d+), 8\)", LAG_SQL)} == {
        wire.BEGIN_FINAL_LSN,
        wire.BEGIN_COMMIT_TS,
    }
    assert f"get_byte(data, {wire.ROW_RELATION_ID})::int8 << 24" in LAG_SQL
    kinds = re.search(r"kind in \(([\d, ]+)\)", LAG_SQL).group(1)
    assert tuple(int(k) for k in kinds.split(",")) == wire.CHANGE_KINDS

    cdc.ingest()
    wh = cdc.warehouse()
    state = wh.state()
    wh.close()
    users_in_transactions(cdc, 3, 4)
    cdc.execute(
        "update users set full_name = 'changed' where id <= 3",
        "insert into orders (user_id, total, status) values (1, 5, 'new'), (2, 6, 'new')",
        "delete from orders where total = 6",
    )

    # the decoder's reading of the same slot: every pending change, in stream order
    feed = cdc.feed()
    keys = feed.primary_keys()
    rows: list[bytes] = []

    class Rows:
        def write(self, data: bytes) -> None:
            rows.append(bytes(data))

    conn = psycopg2.connect(cdc.url)
    with conn.cursor() as cur:
        cur.execute("select pg_current_wal_insert_lsn()::text")
        upto = parse_lsn(cur.fetchone()[0])
        cur.copy_expert(peek_copy_sql(cdc.slot, cdc.publication, upto).as_string(cur), Rows())
    conn.close()
    rows[0] = rows[0][wire.COPY_HEADER :]
    if rows[-1] == b"\xff\xff":
        rows.pop()
    buf, starts = wire.frame_copy_rows(rows)
    decoded = PgOutputDecoder(set(cdc.tables), keys).decode(buf, starts)
    users = decoded.tables["users"].rows.to_pylist()
    # a position inside the second transaction of users: the changes after it are pending
    middle = users[len(users) // 2]
    positions = dict(state)
    positions["users"] = TableState(
        "users", Position(middle["_lsn"], middle["_seq"]), format_lsn(middle["_lsn"] - 1)
    )

    lag = feed.lag(positions)
    feed.close()
    for table in ("users", "orders"):
        pos = positions[table].position
        pending = [
            r
            for r in decoded.tables[table].rows.to_pylist()
            if (r["_lsn"], r["_seq"]) > (pos.lsn, pos.seq)
        ]
        assert pending, table
        assert lag[table].pending_changes == len(pending), table
        assert lag[table].oldest_commit_ts == min(r["_commit_ts"] for r in pending), table
        assert not lag[table].pending_sampled
