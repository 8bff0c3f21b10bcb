"""The one way to connect to the source Postgres, and the one error type for it.

Every connection to the source (the slot feed's sessions, the source observations, the quality
checks, the CLI's migrations and traffic) goes through `connect`, so each has the same timeout
and keepalives, and a source that cannot be reached is always `SourceUnavailable` with a
one-line message that never holds the DSN's password.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator

import psycopg2
import psycopg2.errors

from analytics_assets.lib.errors import SourceUnavailable
from analytics_assets.settings import redact_url, require_source_url

# every value the decoders and snapshot read as text is in the form they parse
SESSION_SETTINGS = (
    "set timezone = 'UTC'; set datestyle = 'ISO, YMD'; set intervalstyle = 'postgres'; "
    "set extra_float_digits = 3; set bytea_output = 'hex'"
)
# a dead peer (network gone, server frozen) is noticed in ~60s instead of the kernel's hours
KEEPALIVES = {
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
}


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0].strip() if text else type(exc).__name__


def connect(url: str | None = None, **kwargs):
    """A psycopg2 connection to the source (`SOURCE_DATABASE_URL` unless `url`); `kwargs` go to
    psycopg2.connect (e.g. `connection_factory`)."""
    url = url or require_source_url()
    try:
        return psycopg2.connect(url, connect_timeout=10, **KEEPALIVES, **kwargs)
    except psycopg2.OperationalError as exc:
        raise SourceUnavailable(
            f"cannot connect to the source {redact_url(url)}: {first_line(exc)}. "
            "In dev run `analytics-assets stack up`; in prod check SOURCE_DATABASE_URL."
        ) from None


def session(url: str):
    """An autocommit connection with the session settings the CDC readers rely on, named after
    this process (so a held slot or lock names who holds it)."""
    conn = connect(url, application_name=f"analytics_assets_cdc pid {os.getpid()}")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(SESSION_SETTINGS)
    return conn


def connection_lost(exc: BaseException) -> bool:
    """The session is gone (as opposed to an error the server reported on a live session)."""
    if isinstance(exc, psycopg2.InterfaceError):
        return True
    code = getattr(exc, "pgcode", None) or ""
    if type(exc) in (psycopg2.OperationalError, psycopg2.DatabaseError) and not code:
        # libpq's own: "server closed the connection unexpectedly", or (a COPY cut off) "error
        # with status PGRES_COPY_OUT and no message from the libpq"
        return True
    return code.startswith(("08", "57P"))  # connection exception, admin/crash shutdown


def _lost_reason(exc: BaseException) -> str:
    if type(exc) is psycopg2.DatabaseError:  # libpq had nothing to say: a COPY was cut off
        return "the connection broke while reading the slot"
    return first_line(exc)


@contextlib.contextmanager
def source_errors(url: str, busy: Callable[[Exception], Exception]) -> Iterator[None]:
    """Driver errors as the platform's own: a lost connection becomes one-line
    `SourceUnavailable`, an object in use (a replication slot another session holds) `busy(exc)`;
    other errors pass unchanged."""
    try:
        yield
    except psycopg2.Error as exc:
        if isinstance(exc, psycopg2.errors.ObjectInUse):
            raise busy(exc) from None
        if connection_lost(exc):
            raise SourceUnavailable(
                f"lost the connection to the source {redact_url(url)} ({_lost_reason(exc)}); "
                "nothing after the last committed batch was applied: "
                "run the ingest again once the source is back"
            ) from None
        raise


__all__ = [
    "KEEPALIVES",
    "SESSION_SETTINGS",
    "connect",
    "connection_lost",
    "session",
    "source_errors",
]
