"""The CDC connection uses a dedicated role: LOGIN REPLICATION, SELECT on the captured tables
and nothing more. The stack creates it; the feed (as the tables' owner) grants the SELECT when
it creates or extends the publication; an ingest goes through it end to end."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from dataclasses import replace
from urllib.parse import urlsplit

import psycopg2
import psycopg2.extras
import pytest
from cdc_helpers import CdcEnv

from analytics_assets import settings
from analytics_assets.dev import stack
from analytics_assets.lib import cdc as cdc_lib

PRIVILEGES = ("select", "insert", "update", "delete", "truncate")


def test_stack_creates_a_replication_only_role(pg_stack):
    conn = psycopg2.connect(pg_stack.url("postgres"))
    with conn.cursor() as cur:
        cur.execute(
            "select rolcanlogin, rolreplication, rolsuper, rolcreatedb, rolcreaterole, "
            "rolbypassrls from pg_roles where rolname = %s",
            (stack.CDC_ROLE,),
        )
        assert cur.fetchall() == [(True, True, False, False, False, False)]
        cur.execute(
            "select count(*) from pg_auth_members m join pg_roles r on r.oid = m.member "
            "where r.rolname = %s",
            (stack.CDC_ROLE,),
        )
        assert cur.fetchone()[0] == 0  # member of no role (pg_read_all_data etc.)
    conn.close()


def test_ingest_runs_as_the_cdc_role_with_select_only_on_captured_tables(platform_env):
    cfg = platform_env
    cdc_url = urlsplit(cfg.cdc.url)
    assert cdc_url.username == stack.CDC_ROLE and cdc_url.password is None
    assert cdc_url.path == urlsplit(cfg.source.url).path  # the same database as the source
    db = cdc_url.path.lstrip("/")
    env = CdcEnv(cfg.source.url, db, cfg.warehouse.path.parent, tables=cfg.source.tables)
    env.execute(
        "insert into users (email, country) select 'u' || g || '@example.com', 'DE' "
        "from generate_series(1, 300) g",
        "insert into orders (user_id, total, status) select g, g, 'new' "
        "from generate_series(1, 200) g",
    )
    sessions: set[str] = set()
    me = f"analytics_assets_cdc pid {os.getpid()}"

    def who(stage: str) -> None:
        if stage in ("snapshot", "decoded"):
            sessions.update(
                r[0]
                for r in env.query(
                    "select usename from pg_stat_activity where application_name = %s", (me,)
                )
            )

    feed = cdc_lib.make_feed(cfg)
    # the warehouse file where the CDC helpers look for it
    warehouse = cdc_lib.make_warehouse(
        replace(cfg, warehouse=replace(cfg.warehouse, path=env.tmp / f"{db}.duckdb"))
    )
    try:
        cdc_lib.ingest(feed=feed, warehouse=warehouse, fault=who, measure_lag=False)
        env.execute("update users set country = 'SE' where id % 5 = 0")
        env.execute("delete from orders where id % 4 = 0")
        streamed = cdc_lib.ingest(feed=feed, warehouse=warehouse, fault=who)
    finally:
        warehouse.close()
        feed.close()
    assert sessions == {stack.CDC_ROLE}, "the feed's sessions ran as the CDC role"
    assert streamed.tables["users"].changes_by_op == {"u": 60}
    assert streamed.tables["orders"].changes_by_op == {"d": 50}
    env.assert_raw_equals_source()
    env.assert_change_log_has_no_duplicates()

    grants = dict(
        env.query(
            "select c.relname, array_agg(p order by p) filter "
            "(where has_table_privilege(%s, c.oid, p)) from pg_class c "
            "join pg_namespace n on n.oid = c.relnamespace "
            "cross join unnest(%s::text[]) p "
            "where n.nspname = 'public' and c.relkind = 'r' group by c.relname",
            (stack.CDC_ROLE, list(PRIVILEGES)),
        )
    )
    for table in cfg.source.tables:
        assert grants[table] == ["select"], table  # no insert, update, delete, truncate
    others = {t: p for t, p in grants.items() if t not in cfg.source.tables}
    assert others and all(p is None for p in others.values()), others  # e.g. schema_migrations


def test_cdc_url_password_never_shown(platform_env):
    """CDC_DATABASE_URL is a secret: a refused connection names the server, not the password."""
    secret = f"S3cret-{uuid.uuid4().hex}"
    env = dict(os.environ)
    env["CDC_DATABASE_URL"] = f"postgresql://{stack.CDC_ROLE}:{secret}@127.0.0.1:1/app"
    proc = subprocess.run(
        [sys.executable, "-m", "analytics_assets.cli", "cdc", "ingest", "--quiet"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert secret not in proc.stderr + proc.stdout
    assert "***" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    settings.get_settings.cache_clear()


def _connect(pg_stack, role: str, database: str, kind=None):
    url = f"postgresql://{role}@127.0.0.1:{pg_stack.port}/{database}"
    return psycopg2.connect(url, **({"connection_factory": kind} if kind else {}))


def _walsender_answers(conn) -> bool:
    with conn.cursor() as cur:
        cur.execute("IDENTIFY_SYSTEM")
        answered = bool(cur.fetchone()[0])  # the cluster's system identifier
    conn.close()
    return answered


def test_pg_hba_keeps_physical_replication_to_the_superuser_and_the_cdc_role_to_the_source(
    pg_stack,
):
    """pg_hba.conf (dev/stack.py `PG_HBA`): a physical replication connection (a base backup,
    every database's WAL) is refused to the CDC role and to any other role with REPLICATION;
    the CDC role's logical replication connection to the source database is accepted, and it
    cannot connect to Dagster's storage database at all."""
    physical = psycopg2.extras.PhysicalReplicationConnection
    logical = psycopg2.extras.LogicalReplicationConnection
    other = f"app_repl_{uuid.uuid4().hex[:6]}"
    admin = _connect(pg_stack, stack.SUPERUSER, "postgres")
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'create role "{other}" login replication')
    try:
        for role in (stack.CDC_ROLE, other):
            with pytest.raises(psycopg2.OperationalError, match="no pg_hba.conf entry for repl"):
                _connect(pg_stack, role, stack.SOURCE_DB, physical)
        assert _walsender_answers(_connect(pg_stack, stack.SUPERUSER, "postgres", physical))
        assert _walsender_answers(_connect(pg_stack, stack.CDC_ROLE, stack.SOURCE_DB, logical))
        with pytest.raises(psycopg2.OperationalError, match="pg_hba.conf rejects connection"):
            _connect(pg_stack, stack.CDC_ROLE, stack.DAGSTER_DB, logical)
        with pytest.raises(psycopg2.OperationalError, match="pg_hba.conf rejects connection"):
            _connect(pg_stack, stack.CDC_ROLE, stack.DAGSTER_DB)
    finally:
        with admin.cursor() as cur:
            cur.execute(f'drop role "{other}"')
        admin.close()


def test_replication_reads_changes_of_a_table_the_cdc_role_may_not_select(source_db):
    """What REPLICATION really grants (docs/production.md, CDC role): the CDC role has no
    privilege on `payroll`, yet a slot of its own with a plugin that ignores publications
    decodes every change to it. Only who holds REPLICATION limits that, not the publication."""
    owner = psycopg2.connect(source_db)
    owner.autocommit = True
    cdc_url = source_db.replace("postgresql://postgres@", f"postgresql://{stack.CDC_ROLE}@")
    role = psycopg2.connect(cdc_url)
    role.autocommit = True
    slot = f"peek_{uuid.uuid4().hex[:8]}"
    try:
        with owner.cursor() as cur:
            cur.execute("create table payroll (id int primary key, salary numeric)")
        with role.cursor() as cur:
            with pytest.raises(psycopg2.errors.InsufficientPrivilege):
                cur.execute("select * from payroll")
            cur.execute(
                "select pg_create_logical_replication_slot(%s, 'test_decoding', true)", (slot,)
            )
        with owner.cursor() as cur:
            cur.execute("insert into payroll values (1, 987654.32)")
        with role.cursor() as cur:
            cur.execute("select data from pg_logical_slot_get_changes(%s, null, null)", (slot,))
            changes = [r[0] for r in cur.fetchall()]
        assert any("payroll" in c and "987654.32" in c for c in changes), changes
    finally:
        role.close()  # drops the temporary slot
        owner.close()
