"""One switch (`ANALYTICS_ENV`) and the settings that follow from it.

Everything is resolved inside cached functions, never at import time, so tests can point the
project at a scratch data directory by setting environment variables and calling
`get_settings.cache_clear()`.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from analytics_assets.lib.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DBT_PROJECT_DIR = PROJECT_ROOT / "dbt"

ENVIRONMENTS = ("dev", "prod")
DEFAULT_START_DATE = "2026-01-01"


@dataclass(frozen=True)
class Settings:
    env: str
    data_dir: Path
    warehouse_path: Path
    source_url: str | None
    captured_tables: tuple[str, ...]
    partition_start: str
    timezone: str
    publication: str
    slot: str
    cdc_batch_size: int
    notify_path: Path
    lag_max_pending: int
    lag_max_seconds: int
    ingest_max_idle_minutes: int
    partition_grace_minutes: int
    cdc_feed: str = "slot"
    cdc_topic_prefix: str = "app"
    # librdkafka consumer properties from KAFKA_<NAME> variables (name lower-cased, _ -> .)
    kafka_config: tuple[tuple[str, str], ...] = ()
    # (table, column, Postgres type) from CDC_COLUMN_TYPES: types of schemaless Kafka topics
    cdc_column_types: tuple[tuple[str, str, str], ...] = ()
    # BigQuery (prod): the raw CDC tables go to dataset `raw_schema` of `gcp_project`
    gcp_project: str | None = None
    bigquery_location: str | None = None
    raw_schema: str = "raw"
    # the CDC connection (slot feed): a role with REPLICATION and SELECT on the captured tables;
    # None: the source URL's role does everything
    cdc_url: str | None = None
    # seconds an ingest waits for another process to let go of the DuckDB file (dev)
    warehouse_lock_timeout: float = 30.0
    # slot feed: WAL bytes behind that count as lag, and the most WAL a lag reading decodes
    lag_max_bytes: int = 1 << 20
    # kill tests only: `<stage>:<hit>:<dir>`, see lib/cdc.py `pause_at`
    cdc_pause_at: str | None = None
    # per-invocation dbt target folders kept under DBT_TARGET_PATH (each 3-5 MB); older ones go
    dbt_artifact_runs_kept: int = 10
    # minutes between refreshes of the unpartitioned models off the near-real-time path
    models_refresh_minutes: int = 15
    # the read copy of the DuckDB warehouse that readers open (dev); None: beside the file
    warehouse_read_path: Path | None = None

    @property
    def is_prod(self) -> bool:
        return self.env == "prod"

    @property
    def dbt_target(self) -> str:
        return os.environ.get("DBT_TARGET") or ("prod" if self.is_prod else "dev")


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


_IDENT = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def validate_identifier(name: str, what: str = "identifier") -> str:
    """Identifiers from configuration are checked before they ever reach SQL (they are also quoted)."""
    if not _IDENT.match(name):
        raise ConfigError(
            f"{what} {name!r} is not a valid name: use lowercase letters, digits and _ (max 63)."
        )
    return name


def data_dir() -> Path:
    return Path(_env("ANALYTICS_DATA_DIR", str(PROJECT_ROOT / ".data"))).resolve()


def stack_state_path() -> Path:
    return data_dir() / "stack.json"


def read_stack_state() -> dict | None:
    path = stack_state_path()
    if not path.exists():
        return None
    return json.loads(path.read_text())


@functools.cache
def get_settings() -> Settings:
    env = _env("ANALYTICS_ENV", "dev")
    if env not in ENVIRONMENTS:
        raise ConfigError(f"ANALYTICS_ENV={env!r} is not one of {', '.join(ENVIRONMENTS)}.")
    ddir = data_dir()
    source_url = _env("SOURCE_DATABASE_URL")
    if source_url is None and env == "dev":
        state = read_stack_state()
        if state:
            source_url = state["source_url"]
    tables = tuple(
        validate_identifier(t.strip(), "captured table")
        for t in _env("CAPTURED_TABLES", "users,products,orders,order_items").split(",")
        if t.strip()
    )
    start = _env("PARTITION_START_DATE", DEFAULT_START_DATE)
    try:
        dt.date.fromisoformat(start)
    except ValueError:
        raise ConfigError(f"PARTITION_START_DATE={start!r} is not a date (YYYY-MM-DD).") from None
    cdc_url = _env("CDC_DATABASE_URL")
    if cdc_url is None and env == "dev" and source_url:
        cdc_url = _stack_cdc_url(source_url)
    batch = _positive_int("CDC_BATCH_SIZE", "50000")
    feed = _env("CDC_FEED", "slot")
    if feed not in CDC_FEEDS:
        raise ConfigError(f"CDC_FEED={feed!r} is not one of {', '.join(CDC_FEEDS)}.")
    return Settings(
        env=env,
        data_dir=ddir,
        warehouse_path=Path(_env("WAREHOUSE_PATH", str(ddir / "warehouse.duckdb"))).resolve(),
        source_url=source_url,
        cdc_url=cdc_url,
        captured_tables=tables,
        partition_start=start,
        timezone=_time_zone("PARTITION_TIMEZONE", "UTC"),
        publication=validate_identifier(_env("CDC_PUBLICATION", "analytics_pub"), "publication"),
        slot=validate_identifier(_env("CDC_SLOT", "analytics_slot"), "slot"),
        cdc_batch_size=batch,
        notify_path=Path(_env("NOTIFY_PATH", str(ddir / "notifications.jsonl"))),
        lag_max_pending=_positive_int("CDC_LAG_MAX_PENDING", "500"),
        lag_max_seconds=_positive_int("CDC_LAG_MAX_SECONDS", "30"),
        lag_max_bytes=_positive_int("CDC_LAG_MAX_BYTES", str(1 << 20)),
        ingest_max_idle_minutes=_positive_int("CDC_MAX_IDLE_MINUTES", "2"),
        partition_grace_minutes=_positive_int("PARTITION_GRACE_MINUTES", "30"),
        cdc_feed=feed,
        cdc_topic_prefix=_env("CDC_TOPIC_PREFIX", "app"),
        kafka_config=kafka_config(),
        cdc_column_types=column_types(),
        gcp_project=_env("GCP_PROJECT"),
        bigquery_location=_env("BIGQUERY_LOCATION", "US"),
        raw_schema=validate_identifier(_env("RAW_SCHEMA", "raw"), "RAW_SCHEMA"),
        warehouse_lock_timeout=_seconds("WAREHOUSE_LOCK_TIMEOUT_SECONDS", "30"),
        cdc_pause_at=_env("CDC_PAUSE_AT"),
        dbt_artifact_runs_kept=_positive_int("DBT_ARTIFACT_RUNS_KEPT", "10"),
        models_refresh_minutes=_minutes_dividing_an_hour("MODELS_REFRESH_MINUTES", "15"),
        warehouse_read_path=Path(_env("WAREHOUSE_READ_PATH")).resolve()
        if _env("WAREHOUSE_READ_PATH")
        else None,
    )


CDC_FEEDS = ("slot", "kafka")


def kafka_config() -> tuple[tuple[str, str], ...]:
    """Every `KAFKA_<NAME>` environment variable as the librdkafka property `<name>` (lower
    case, `_` -> `.`), e.g. KAFKA_GROUP_ID -> group.id."""
    return tuple(
        sorted(
            (name[len("KAFKA_") :].lower().replace("_", "."), value)
            for name, value in os.environ.items()
            if name.startswith("KAFKA_") and len(name) > len("KAFKA_") and value != ""
        )
    )


def column_types() -> tuple[tuple[str, str, str], ...]:
    """CDC_COLUMN_TYPES: a JSON object {table: {column: Postgres type}} (e.g.
    `{"orders": {"total": "numeric(12,2)", "paid_at": "timestamptz"}}`), the column types of
    Debezium topics written without the schema wrapper, which otherwise land as JSON infers
    them (decimals and timestamps as text). lib/debezium.py maps the type names."""
    text = _env("CDC_COLUMN_TYPES")
    if text is None:
        return ()
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"CDC_COLUMN_TYPES is not JSON ({exc}).") from None
    ok = isinstance(data, dict) and all(
        isinstance(cols, dict) and all(isinstance(t, str) for t in cols.values())
        for cols in data.values()
    )
    if not ok:
        raise ConfigError(
            'CDC_COLUMN_TYPES must be {"<table>": {"<column>": "<Postgres type>"}}, e.g. '
            '{"orders": {"total": "numeric(12,2)"}}.'
        )
    return tuple(
        (validate_identifier(table, "CDC_COLUMN_TYPES table"), column, type_.strip().lower())
        for table, cols in sorted(data.items())
        for column, type_ in sorted(cols.items())
    )


def _positive_int(name: str, default: str) -> int:
    value = _env(name, default)
    if not value.isdigit() or int(value) <= 0:
        raise ConfigError(f"{name}={value!r} must be a positive integer.")
    return int(value)


def _minutes_dividing_an_hour(name: str, default: str) -> int:
    """A cadence in minutes that a cron expression repeats evenly every hour."""
    value = _positive_int(name, default)
    if 60 % value:
        raise ConfigError(
            f"{name}={value} must divide 60 (1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30, 60)."
        )
    return value


# An IANA name (Area/Location, Etc/GMT+9, UTC): it also goes into dbt's SQL as a literal.
_ZONE_NAME = re.compile(r"^[A-Za-z0-9_+-]+(/[A-Za-z0-9_+-]+)*$")


def _time_zone(name: str, default: str) -> str:
    """The business day's time zone: a name both Python's zoneinfo and the warehouses know."""
    import zoneinfo

    value = _env(name, default)
    try:
        if not _ZONE_NAME.match(value):
            raise ValueError(value)
        zoneinfo.ZoneInfo(value)
    except (ValueError, OSError, zoneinfo.ZoneInfoNotFoundError):  # OSError: a folder, e.g. America
        raise ConfigError(
            f"{name}={value!r} is not a time zone: use an IANA name such as UTC, Asia/Seoul "
            "or America/New_York."
        ) from None
    return value


def _stack_cdc_url(source_url: str) -> str | None:
    """On the embedded stack, CDC connects as the stack's CDC role to the same database as
    SOURCE_DATABASE_URL (which stays the owner's: it creates the publication and grants)."""
    state = read_stack_state()
    parts = urlsplit(source_url)
    if not state or not state.get("cdc_role") or parts.hostname != "127.0.0.1":
        return None
    try:
        if parts.port != int(state["port"]):
            return None
    except ValueError:
        return None
    return urlunsplit(parts._replace(netloc=f"{state['cdc_role']}@127.0.0.1:{parts.port}"))


def _seconds(name: str, default: str) -> float:
    value = _env(name, default)
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds < float("inf"):
        raise ConfigError(f"{name}={value!r} must be a number of seconds (0 or more).")
    return seconds


def require_source_url() -> str:
    url = get_settings().source_url
    if not url:
        raise ConfigError(
            "No source database: run `analytics-assets stack up` (dev) or set SOURCE_DATABASE_URL."
        )
    return url


def redact_url(url: str) -> str:
    """A DSN safe to print: the password is replaced, never shown."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))
