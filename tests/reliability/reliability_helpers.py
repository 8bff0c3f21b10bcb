"""What the fault tests share: a backlog of changes behind a snapshot, and counting the change
log (each change applied exactly once means the log holds exactly as many rows)."""

from __future__ import annotations


def load_backlog(cdc, rows: int, batch_size: int = 10_000) -> int:
    """Snapshot `rows` users, then leave a backlog in the slot: `rows` new orders, every second
    user updated, every ninth deleted. Returns the number of changes in the backlog."""
    cdc.execute(
        "insert into users (email, full_name, country) select 'u' || g || '@example.com', "
        "'Name ' || g, 'DE' from generate_series(1, %s) g",
        params=(rows,),
    )
    cdc.ingest(batch_size=batch_size)
    cdc.execute(
        "insert into orders (user_id, total, status) "
        "select g, g * 1.5, 'new' from generate_series(1, %s) g",
        params=(rows,),
    )
    cdc.execute(
        "update users set country = 'FR' where id % 2 = 0",
        "delete from users where id % 9 = 0",
    )
    return rows + rows // 2 + rows // 9


def logged_changes(cdc) -> int:
    """Rows in every raw.<table>_changes log."""
    return sum(
        cdc.raw(f"select count(*) from raw.{t}_changes")[0][0]  # noqa: S608 - captured names
        for t in cdc.tables
    )
