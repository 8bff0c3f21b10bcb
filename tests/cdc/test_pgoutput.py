"""The columnar pgoutput decoder on real messages from the embedded PostgreSQL 18."""

from __future__ import annotations

import numpy as np
import psycopg2
import pyarrow as pa
import pytest
from psycopg2 import sql

from analytics_assets.lib.feeds.base import Position
from analytics_assets.lib.feeds.slot_reader import peek_copy_sql
from analytics_assets.lib.pgoutput import PgOutputDecoder
from analytics_assets.lib.pgoutput_types import INT2, INT4, INT8, NUMERIC, TIMESTAMPTZ, arrow_type
from analytics_assets.lib.pgoutput_wire import frame_copy_rows


class Peek:
    """A pgoutput slot on the test database, read with the same COPY the feed uses."""

    def __init__(self, url: str, tables: list[str]):
        self.url = url
        self.conn = psycopg2.connect(url)
        self.conn.autocommit = True
        db = url.rsplit("/", 1)[1]
        self.slot, self.pub = f"dec_{db}", f"decpub_{db}"
        with self.conn.cursor() as cur:
            cur.execute("set timezone = 'UTC'")
            cur.execute(
                sql.SQL("create publication {} for table {}").format(
                    sql.Identifier(self.pub), sql.SQL(", ").join(map(sql.Identifier, tables))
                )
            )
            cur.execute("select pg_create_logical_replication_slot(%s, 'pgoutput')", (self.slot,))

    def execute(self, *statements, params=None) -> None:
        with self.conn.cursor() as cur:
            cur.execute("begin")
            for s in statements:
                cur.execute(s, params)
            cur.execute("commit")

    def messages(self, binary: bool = False) -> tuple[bytes, np.ndarray]:
        """The slot's messages so far, as the feed reads them (`binary`: values in binary)."""
        rows: list[bytes] = []

        class Sink:
            write = rows.append

        query = peek_copy_sql(self.slot, self.pub, 2**63 - 1, binary=binary)
        with self.conn.cursor() as cur:
            cur.copy_expert(query.as_string(self.conn), Sink())
        rows[0] = rows[0][19:]
        rows.pop()  # trailer
        return frame_copy_rows(rows)

    def decode(self, decoder=None, binary=False, **kw):
        buf, starts = self.messages(binary)
        decoder = decoder or PgOutputDecoder(primary_keys=kw.pop("keys", None))
        return decoder.decode(buf, starts, **kw)

    def close(self) -> None:
        with self.conn.cursor() as cur:
            cur.execute("select pg_drop_replication_slot(%s)", (self.slot,))
        self.conn.close()


@pytest.fixture
def peek(source_db):
    p = Peek(source_db, ["users", "orders"])
    yield p
    p.close()


def rows(table: pa.Table, *columns: str) -> list[tuple]:
    data = table.select(list(columns)).to_pylist()
    return sorted(tuple(r.values()) for r in data)


def test_arrow_types_follow_type_oids_and_keep_numeric_precision():
    assert arrow_type(INT2, -1) == pa.int16()
    assert arrow_type(INT4, -1) == pa.int32()
    assert arrow_type(INT8, -1) == pa.int64()
    assert arrow_type(NUMERIC, ((12 << 16) | 2) + 4) == pa.decimal128(12, 2)
    assert arrow_type(NUMERIC, -1) == pa.string()  # unconstrained: exact text
    assert arrow_type(NUMERIC, ((50 << 16) | 2) + 4) == pa.string()  # wider than DECIMAL(38)
    assert arrow_type(TIMESTAMPTZ, -1) == pa.timestamp("us", tz="UTC")


def test_transactions_become_typed_columns_with_commit_positions(peek):
    peek.execute(
        "insert into orders (id, user_id, total, status) values "
        "(1, 10, 12.34, 'new'), (2, 20, 99999999.99, 'ünïcødé ✓'), (3, 30, 0.01, 'new')"
    )
    peek.execute(
        "update orders set status = 'paid' where id = 1", "delete from orders where id = 3"
    )
    out = peek.decode(keys={"orders": ("id",)})
    orders = out.tables["orders"].rows
    assert orders.schema.field("total").type == pa.decimal128(12, 2)
    assert orders.schema.field("created_at").type == pa.timestamp("us", tz="UTC")
    by_pos = sorted(
        zip(
            orders["_lsn"].to_pylist(),
            orders["_seq"].to_pylist(),
            orders["_op"].to_pylist(),
            orders["id"].to_pylist(),
            strict=True,
        )
    )
    (lsn1, *_), (lsn2, *_) = by_pos[0], by_pos[-1]
    assert lsn1 < lsn2
    assert [(s, op, i) for _, s, op, i in by_pos] == [
        (2, "c", 1),
        (4, "c", 2),
        (6, "c", 3),
        (2, "u", 1),
        (4, "d", 3),
    ]
    assert "ünïcødé ✓" in orders["status"].to_pylist()
    assert orders["_is_deleted"].to_pylist().count(True) == 1
    assert out.last == Position(lsn2, 4) and not out.in_transaction
    assert out.checkpoint_lsn > lsn2  # end of the last commit record


def test_primary_key_update_emits_the_old_key_delete_just_before_the_new_image(peek):
    peek.execute("insert into users (id, email) values (1, 'a@example.com')")
    peek.execute("update users set id = 2 where id = 1")
    users = peek.decode(keys={"users": ("id",)}).tables["users"].rows
    changed = [r for r in users.to_pylist() if r["_op"] != "c"]
    changed.sort(key=lambda r: r["_seq"])
    assert [(r["id"], r["_op"], r["_seq"]) for r in changed] == [(1, "d", 1), (2, "u", 2)]


def test_unchanged_toast_is_filled_from_the_full_old_tuple_or_flagged(peek, source_db):
    big = "t" * 10000
    peek.execute(
        "create table notes (id int primary key, body text, n int)",
        "alter table notes alter column body set storage external",
        sql.SQL("alter publication {} add table notes").format(sql.Identifier(peek.pub)),
    )
    peek.execute("insert into users (id, email, full_name) values (1, 'a', %s)", params=(big,))
    peek.execute("insert into notes values (1, %s, 0)", params=(big,))
    peek.execute("update users set country = 'DE'", "update notes set n = 1")
    out = peek.decode(keys={"users": ("id",), "notes": ("id",)})
    users = [r for r in out.tables["users"].rows.to_pylist() if r["_op"] == "u"]
    assert users[0]["full_name"] == big and users[0]["_unchanged_cols"] is None
    notes = [r for r in out.tables["notes"].rows.to_pylist() if r["_op"] == "u"]
    assert notes[0]["body"] is None and notes[0]["_unchanged_cols"] == ["body"]


def test_added_column_is_picked_up_from_the_new_relation_message(peek):
    peek.execute("insert into users (id, email) values (1, 'a')")
    peek.execute("alter table users add column tier text")
    peek.execute("insert into users (id, email, tier) values (2, 'b', 'gold')")
    users = peek.decode(keys={"users": ("id",)}).tables["users"].rows
    assert "tier" in users.column_names
    assert rows(users, "id", "tier") == [(1, None), (2, "gold")]


def test_chunks_that_split_transactions_decode_like_one_chunk(peek):
    peek.execute(
        "insert into orders (user_id, total, status) select g, g, 'x' from generate_series(1, 50) g"
    )
    peek.execute(
        "update orders set id = id + 1000 where id % 10 = 0", "delete from orders where id < 5"
    )
    buf, starts = peek.messages()
    whole = PgOutputDecoder(primary_keys={"orders": ("id",)}).decode(buf, starts)
    decoder = PgOutputDecoder(primary_keys={"orders": ("id",)})
    parts, checkpoints = [], []
    for piece in np.array_split(np.arange(len(starts)), 9):
        out = decoder.decode(buf, starts[piece])
        checkpoints.append(out.checkpoint_lsn)
        if "orders" in out.tables:
            parts.append(out.tables["orders"].rows)
    split = pa.concat_tables(parts)
    cols = ("_lsn", "_seq", "_op", "id", "total", "status")
    assert rows(split, *cols) == rows(whole.tables["orders"].rows, *cols)
    assert checkpoints[-1] == whole.checkpoint_lsn


def test_truncate_carries_its_position_and_skip_through_drops_older_changes(peek):
    peek.execute("insert into orders (id, user_id, total, status) values (1, 1, 1, 'a')")
    peek.execute(
        "truncate orders", "insert into orders (id, user_id, total, status) values (2, 1, 1, 'b')"
    )
    out = peek.decode(keys={"orders": ("id",)})
    (trunc,) = out.tables["orders"].truncates
    assert trunc.seq == 2
    skipped = peek.decode(keys={"orders": ("id",)}, skip_through=trunc)
    assert skipped.tables["orders"].rows["id"].to_pylist() == [2]
    assert skipped.tables["orders"].truncates == []


def test_rolled_back_transaction_sends_nothing(peek):
    conn = psycopg2.connect(peek.url)
    with conn.cursor() as cur:
        cur.execute("insert into users (email) values ('ghost')")
    conn.rollback()
    conn.close()
    out = peek.decode()
    assert out.tables == {} and out.changes == 0 and out.messages == 0


def test_heartbeat_message_moves_the_checkpoint_without_rows(peek):
    peek.execute("select pg_logical_emit_message(true, 'analytics_assets.heartbeat', 'x')")
    out = peek.decode()
    assert out.tables == {} and out.changes == 0
    assert out.checkpoint_lsn is not None and out.last is None


def test_long_non_ascii_and_null_values_decode_byte_for_byte(peek):
    big = "ü" * 3000  # long, non-ASCII: referenced by offset, not inlined
    peek.execute(
        "insert into users (id, email, full_name, country) "
        "select g, 'user' || g || '@example.com', case when g % 3 = 0 then null "
        "else repeat('名', g % 20) end, 'DE' from generate_series(1, 300) g",
    )
    peek.execute("update users set full_name = %s where id < 5", params=(big,))
    out = peek.decode(keys={"users": ("id",)}).tables["users"].rows
    with peek.conn.cursor() as cur:
        cur.execute("select id, email, full_name, country from users")
        now = {r[0]: r for r in cur.fetchall()}
    images = {}  # the last image of each row, in commit order
    for r in sorted(out.to_pylist(), key=lambda r: (r["_lsn"], r["_seq"])):
        images[r["id"]] = (r["id"], r["email"], r["full_name"], r["country"])
    assert images == now
    assert sum(v[2] is None for v in images.values()) == 99 and images[1][2] == big


def test_a_truncated_message_is_a_decode_error_naming_the_byte(peek):
    from analytics_assets.lib.errors import DecodeError

    peek.execute("insert into users (id, email, full_name) values (1, 'a', repeat('x', 500))")
    buf, starts = peek.messages()
    insert = next(i for i, s in enumerate(starts) if buf[s] == ord("I"))
    cut = int(starts[insert]) + 40  # inside the tuple: the 500-byte value runs past the end
    with pytest.raises(DecodeError, match="byte"):
        PgOutputDecoder().decode(buf[:cut] + b"\0" * 16, starts[: insert + 1])
