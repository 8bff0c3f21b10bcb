"""The slot feed asks pgoutput for binary values where the binary path reads every published
column's type (lib/pgoutput_binary.py), and reads as text otherwise, or from the point where a
column's type within the backlog turns out to be one it does not read."""

from __future__ import annotations

from cdc_helpers import tiny_peek_ranges

from analytics_assets.dev.schema import APP_TABLES


def recorded_formats(feed) -> list[bool]:
    """Each read session's choice (True: binary), as the feed makes it."""
    formats: list[bool] = []
    choose = feed._binary_values

    def recording() -> bool:
        formats.append(choose())
        return formats[-1]

    feed._binary_values = recording
    return formats


def test_binary_where_every_published_type_is_read_in_binary_else_text(cdc):
    cdc.ingest()
    cdc.execute("insert into orders (user_id, total, status) values (1, 9.99, 'new')")
    feed = cdc.feed()
    cdc.ingest(feed=feed)
    assert feed.value_format == "binary"
    cdc.assert_raw_equals_source()

    cdc.execute("create table tags (id int primary key, labels text[])")
    cdc.tables = (*APP_TABLES, "tags")
    cdc.ingest()  # the new table's snapshot
    cdc.execute(
        "insert into tags values (1, '{a,b}')",
        "insert into orders (user_id, total, status) values (2, 5, 'new')",
    )
    feed = cdc.feed()
    cdc.ingest(feed=feed)
    assert feed.value_format == "text"  # an array column is published now
    cdc.assert_raw_equals_source(APP_TABLES)
    assert cdc.raw("select id, labels from raw.tags") == [(1, "{a,b}")]


def test_a_type_altered_within_the_backlog_is_read_as_text_from_there_losing_nothing(cdc):
    """The catalog's types (all read in binary) are not those of the backlog's first rows (an
    enum, altered to text since): the session starts in binary, meets the enum's binary values
    mid-backlog, and reads the rest as text, after the batches it already handed on."""
    cdc.execute(
        "create type mood as enum ('calm', 'restless')",
        "create table moods (id int primary key, m mood)",
    )
    cdc.tables = (*APP_TABLES, "moods")
    cdc.ingest()
    for i in range(30):  # binary values only: these batches go on before the enum's
        cdc.execute(
            "insert into orders (user_id, total, status) select %(i)s, g, 'new' "
            "from generate_series(1, 5) g",
            params={"i": i},
        )
    cdc.execute("insert into moods values (1, 'calm'), (2, 'restless')")
    cdc.execute("alter table moods alter column m type text")
    cdc.execute(
        "insert into moods values (3, 'text now')",
        "update moods set m = 'calm, as text' where id = 1",
        "insert into orders (user_id, total, status) values (99, 1, 'late')",
    )
    feed = cdc.feed()
    formats = recorded_formats(feed)
    sizes: list[int] = []
    with tiny_peek_ranges(first=2048, largest=4096):
        result = cdc.ingest(
            feed=feed, batch_size=20, progress=lambda info: sizes.append(info["changes"])
        )
    assert formats[0] is True and formats[-1] is False and feed.value_format == "text"
    assert len(sizes) > 3  # several batches, some of them applied before the enum's rows
    assert result.tables["orders"].changes_by_op == {"c": 151}
    assert result.tables["moods"].changes_by_op == {"c": 3, "u": 1}
    cdc.assert_raw_equals_source()
    cdc.assert_change_log_has_no_duplicates()
    assert cdc.raw("select id, m from raw.moods order by id") == [
        (1, "calm, as text"),
        (2, "restless"),
        (3, "text now"),
    ]
