"""An ingest process killed with SIGKILL (no exception, no `finally`, no rollback in the process)
at each moment that matters, then a clean ingest: raw equals the source and every change is in
the change log exactly once. The kill lands where CDC_PAUSE_AT parks the process:

- `decoded`: a batch is read (the slot's peek session open), nothing of it applied yet;
- `applied`: inside the warehouse transaction, the batch written, not committed;
- `committed`: the batch committed, the feed not yet acknowledged (the warehouse is ahead).

The first batch of each process commits before the kill (hit 2), so every kill interrupts an
ingest that has already made progress."""

from __future__ import annotations

from kill_helpers import PausePoint, cli_ingest, kill_cli_ingest_at
from reliability_helpers import load_backlog, logged_changes

ROWS = 30_000
BATCH = "4000"


def test_ingest_killed_while_reading_inside_the_transaction_and_before_the_ack_loses_nothing(
    cdc, cli_env, tmp_path
):
    streamed = load_backlog(cdc, ROWS)
    expected = logged_changes(cdc) + streamed
    env = {**cli_env, "CDC_BATCH_SIZE": BATCH}

    for stage in ("decoded", "applied", "committed"):
        before = logged_changes(cdc)
        kill_cli_ingest_at(env, PausePoint(tmp_path / stage, stage, hit=2))
        after = logged_changes(cdc)
        assert after > before, f"{stage}: the first batch committed before the kill"

    clean = cli_ingest(env)
    assert clean.returncode == 0, clean.stderr
    cdc.assert_raw_equals_source()
    cdc.assert_change_log_has_no_duplicates()
    assert logged_changes(cdc) == expected  # nothing lost, nothing twice
