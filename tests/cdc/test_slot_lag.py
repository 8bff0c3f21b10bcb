"""The slot feed's lag reading at a backlog larger than its window (`lib/feeds/slot_lag.py`):
one statement, exact below the window, a labelled lower bound above it, and the sensor's
decisions (`defs/automation/logic.py`) still right."""

from __future__ import annotations

import datetime as dt

from analytics_assets.defs.automation.logic import lagging_tables, watermark_from_lag

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
