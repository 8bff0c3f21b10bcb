"""`rows_after`: the Arrow step both warehouses take first, dropping changes already applied."""

from __future__ import annotations

import pyarrow as pa

from analytics_assets.lib.feeds.base import LSN, SEQ, Position
from analytics_assets.lib.warehouse.base import rows_after


def _rows(positions: list[tuple[int, int]]) -> pa.Table:
    return pa.table(
        {
            "id": list(range(len(positions))),
            LSN: pa.array([p[0] for p in positions], pa.int64()),
            SEQ: pa.array([p[1] for p in positions], pa.int64()),
        }
    )


def test_replayed_changes_up_to_the_stored_position_are_dropped():
    rows = _rows([(10, 0), (10, 1), (10, 2), (11, 0), (12, 5)])
    kept = rows_after(rows, Position(10, 1))
    assert list(zip(kept[LSN].to_pylist(), kept[SEQ].to_pylist(), strict=True)) == [
        (10, 2),
        (11, 0),
        (12, 5),
    ]
    assert rows_after(rows, Position(12, 5)).num_rows == 0
    assert rows_after(rows, Position(9, 99)).num_rows == 5


def test_a_batch_entirely_after_the_position_is_passed_on_without_a_copy():
    rows = _rows([(20, 0), (20, 1), (21, 0)])
    assert rows_after(rows, Position(19, 7)) is rows
    assert rows_after(rows, None) is rows
    # the same first LSN as the position: compared by sequence, so it is filtered
    assert rows_after(rows, Position(20, 0)).num_rows == 2
