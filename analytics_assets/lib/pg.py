"""Connections to the source Postgres, with errors that never leak the DSN's password."""

from __future__ import annotations

import psycopg2

from analytics_assets.lib.errors import ConfigError
from analytics_assets.settings import redact_url, require_source_url


def connect(url: str | None = None, **kwargs):
    url = url or require_source_url()
    try:
        return psycopg2.connect(url, connect_timeout=10, **kwargs)
    except psycopg2.OperationalError as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else "connection failed"
        raise ConfigError(
            f"Cannot connect to the source database {redact_url(url)}: {reason}. "
            "In dev run `analytics-assets stack up`; in prod check SOURCE_DATABASE_URL."
        ) from None
