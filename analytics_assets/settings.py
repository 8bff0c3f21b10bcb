"""One switch (`ANALYTICS_ENV`) and every setting that follows from it, in one typed object.

`get_settings()` returns `Settings`, grouped by who uses them (`settings.cdc.batch_size`,
`settings.warehouse.path`, `settings.quality.volume_band`, ...). This module is the only reader of
the environment: `VARIABLES` declares every variable it reads (name, default, group), each read
goes through `_read`, which refuses an undeclared name, and `tests/prod/test_production_docs.py`
checks docs/production.md's settings tables against `VARIABLES` both ways.

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
CDC_FEEDS = ("slot", "kafka")
DEFAULT_START_DATE = "2026-01-01"
# dbt/profiles.yml: env_var('GCP_PROJECT', 'gcp-project-not-set'); a test keeps the two equal.
GCP_PROJECT_NOT_SET = "gcp-project-not-set"
# Read by Dagster itself through dg.EnvVar, so the UI shows the name and never the URL.
SLACK_WEBHOOK_VAR = "SLACK_WEBHOOK_URL"
KAFKA_PREFIX = "KAFKA_"


@dataclass(frozen=True)
class Variable:
    """An environment variable this module reads. `default` is the text used when it is unset
    (None: computed, see `shown`); `shown` is the default as docs/production.md writes it."""

    name: str
    group: str
    default: str | None = None
    shown: str | None = None

    @property
    def documented_default(self) -> str | None:
        return self.shown if self.shown is not None else self.default


VARIABLES: dict[str, Variable] = {
    v.name: v
    for v in (
        # general
        Variable("ANALYTICS_ENV", "general", "dev"),
        Variable("ANALYTICS_DATA_DIR", "general", shown=".data"),
        Variable("DAGSTER_HOME", "general"),
        Variable("ANALYTICS_PG_PORT", "general"),
        # source
        Variable("SOURCE_DATABASE_URL", "source"),
        Variable("CAPTURED_TABLES", "source", "users,products,orders,order_items"),
        # cdc
        Variable("CDC_FEED", "cdc", "slot"),
        Variable("CDC_DATABASE_URL", "cdc"),
        Variable("CDC_PUBLICATION", "cdc", "analytics_pub"),
        Variable("CDC_SLOT", "cdc", "analytics_slot"),
        Variable("CDC_BATCH_SIZE", "cdc", "50000"),
        Variable("CDC_TOPIC_PREFIX", "cdc", "app"),
        Variable("CDC_COLUMN_TYPES", "cdc"),
        Variable("CDC_LAG_MAX_PENDING", "cdc", "500"),
        Variable("CDC_LAG_MAX_SECONDS", "cdc", "30"),
        Variable("CDC_LAG_MAX_BYTES", "cdc", str(1 << 20)),
        Variable("CDC_MAX_IDLE_MINUTES", "cdc", "2"),
        Variable("CDC_PAUSE_AT", "cdc"),
        # partitions
        Variable("PARTITION_START_DATE", "partitions", DEFAULT_START_DATE),
        Variable("PARTITION_TIMEZONE", "partitions", "UTC"),
        Variable("PARTITION_GRACE_MINUTES", "partitions", "30"),
        # warehouse
        Variable("WAREHOUSE_PATH", "warehouse", shown=".data/warehouse.duckdb"),
        Variable("WAREHOUSE_LOCK_TIMEOUT_SECONDS", "warehouse", "300"),
        Variable("WAREHOUSE_READ_PATH", "warehouse", shown=".data/read/warehouse.duckdb"),
        Variable("RAW_SCHEMA", "warehouse", "raw"),
        Variable("GCP_PROJECT", "warehouse", GCP_PROJECT_NOT_SET),
        Variable("BIGQUERY_DATASET", "warehouse", "analytics"),
        Variable("BIGQUERY_LOCATION", "warehouse", "US"),
        # quality
        Variable("QUALITY_VOLUME_BAND", "quality", "0.5"),
        Variable("QUALITY_VOLUME_SETTLE_DAYS", "quality", "2"),
        Variable("QUALITY_RECONCILE_MARGIN_SECONDS", "quality", "300"),
        Variable("QUALITY_SLOT_WAL_WARN_FRACTION", "quality", "0.5"),
        Variable("QUALITY_SLOT_WAL_ERROR_FRACTION", "quality", "0.8"),
        Variable("QUALITY_SLOT_HEARTBEAT_WARN_MINUTES", "quality", "60"),
        Variable("QUALITY_SLOT_HEARTBEAT_ERROR_MINUTES", "quality", "1440"),
        # freshness
        Variable("FRESHNESS_RAW_WARN_MINUTES", "freshness", "15"),
        Variable("FRESHNESS_RAW_FAIL_MINUTES", "freshness", "60"),
        Variable("FRESHNESS_DEFAULT_WARN_MINUTES", "freshness", "1440"),
        Variable("FRESHNESS_DEFAULT_FAIL_MINUTES", "freshness", "2160"),
        # notify
        Variable("NOTIFY_PATH", "notify", shown=".data/notifications.jsonl"),
        Variable(SLACK_WEBHOOK_VAR, "notify"),
        # dbt
        Variable("DBT_TARGET", "dbt"),
        Variable("DBT_TARGET_PATH", "dbt", "target"),
        Variable("DBT_ARTIFACT_RUNS_KEPT", "dbt", "10"),
        Variable("MODELS_REFRESH_MINUTES", "dbt", "15"),
        Variable("DBT_WARM_START", "dbt", "true"),
        # history (dbt reads the same variables in macros/retention.sql; these validate them)
        Variable("CHANGE_LOG_RETENTION_DAYS", "history", "30"),
        Variable("HISTORY_RETENTION_DAYS", "history", "0"),
    )
}


@dataclass(frozen=True)
class SourceSettings:
    url: str | None  # the app database, as the tables' owner (creates the publication)
    tables: tuple[str, ...]  # captured by CDC


@dataclass(frozen=True)
class CdcSettings:
    feed: str  # slot | kafka
    # the CDC connection (slot feed): a role with REPLICATION and SELECT on the captured tables;
    # None: the source URL's role does everything
    url: str | None
    publication: str
    slot: str
    batch_size: int
    topic_prefix: str
    # librdkafka consumer properties from KAFKA_<NAME> variables (name lower-cased, _ -> .)
    kafka_config: tuple[tuple[str, str], ...]
    # (table, column, Postgres type) from CDC_COLUMN_TYPES: types of schemaless Kafka topics
    column_types: tuple[tuple[str, str, str], ...]
    lag_max_pending: int
    lag_max_seconds: int
    # slot feed: WAL bytes behind that count as lag, and the most WAL a lag reading decodes
    lag_max_bytes: int
    max_idle_minutes: int
    # kill tests only: `<stage>:<hit>:<dir>`, see lib/cdc.py `pause_at`
    pause_at: str | None


@dataclass(frozen=True)
class PartitionSettings:
    start: str  # first daily partition, YYYY-MM-DD
    timezone: str  # the business day's IANA zone
    grace_minutes: int


@dataclass(frozen=True)
class WarehouseSettings:
    path: Path  # the DuckDB file (dev)
    lock_timeout_seconds: float  # an ingest waits this long for another holder of the file
    read_path: Path  # the read copy of the DuckDB file that readers open (dev)
    # BigQuery (prod): the raw CDC tables go to dataset `raw_schema` of `gcp_project`
    raw_schema: str
    gcp_project: str
    bigquery_dataset: str  # dbt's dataset prefix: <dataset>_<layer>
    bigquery_location: str

    @property
    def gcp_project_set(self) -> bool:
        return self.gcp_project != GCP_PROJECT_NOT_SET


@dataclass(frozen=True)
class QualitySettings:
    volume_band: float
    volume_settle_days: float
    reconcile_margin_seconds: float
    slot_wal_warn_fraction: float
    slot_wal_error_fraction: float
    heartbeat_warn_minutes: float
    heartbeat_error_minutes: float


@dataclass(frozen=True)
class FreshnessSettings:
    raw_warn_minutes: int
    raw_fail_minutes: int
    default_warn_minutes: int
    default_fail_minutes: int


@dataclass(frozen=True)
class NotifySettings:
    path: Path  # the dev sink (JSON lines)
    slack_webhook_var: str = SLACK_WEBHOOK_VAR  # its value is read by Dagster (dg.EnvVar)


@dataclass(frozen=True)
class DbtSettings:
    target: str
    target_path: Path  # relative to dbt/ unless absolute
    artifact_runs_kept: int
    # minutes between refreshes of the unpartitioned models off the near-real-time path
    models_refresh_minutes: int
    # run dbt forked from a server that has imported it (lib/dbt_warm.py), not as a new process
    warm_start: bool = True


@dataclass(frozen=True)
class HistorySettings:
    change_log_retention_days: int  # raw.<table>_changes kept by commit time; 0: forever
    history_retention_days: int  # closed versions kept after they ended; 0: forever


@dataclass(frozen=True)
class Settings:
    env: str
    data_dir: Path
    dagster_home: str | None
    source: SourceSettings
    cdc: CdcSettings
    partitions: PartitionSettings
    warehouse: WarehouseSettings
    quality: QualitySettings
    freshness: FreshnessSettings
    notify: NotifySettings
    dbt: DbtSettings
    history: HistorySettings

    @property
    def is_prod(self) -> bool:
        return self.env == "prod"


def _read(name: str) -> str | None:
    """The variable's value, or its declared default when unset or empty."""
    value = os.environ.get(name)
    return value if value not in (None, "") else VARIABLES[name].default


_IDENT = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def validate_identifier(name: str, what: str = "identifier") -> str:
    """Identifiers from configuration are checked before they ever reach SQL (they are also quoted)."""
    if not _IDENT.match(name):
        raise ConfigError(
            f"{what} {name!r} is not a valid name: use lowercase letters, digits and _ (max 63)."
        )
    return name


def data_dir() -> Path:
    """Uncached, like `stack_port`: the embedded stack runs before (and writes) the state that
    `get_settings` reads the source URL from."""
    return Path(_read("ANALYTICS_DATA_DIR") or PROJECT_ROOT / ".data").resolve()


def stack_port() -> str | None:
    """ANALYTICS_PG_PORT as given (the stack checks it is a free port number)."""
    return _read("ANALYTICS_PG_PORT")


def stack_state_path() -> Path:
    return data_dir() / "stack.json"


def read_stack_state() -> dict | None:
    path = stack_state_path()
    if not path.exists():
        return None
    return json.loads(path.read_text())


@functools.cache
def get_settings() -> Settings:
    env = _read("ANALYTICS_ENV")
    if env not in ENVIRONMENTS:
        raise ConfigError(f"ANALYTICS_ENV={env!r} is not one of {', '.join(ENVIRONMENTS)}.")
    ddir = data_dir()
    source_url = _read("SOURCE_DATABASE_URL")
    if source_url is None and env == "dev":
        state = read_stack_state()
        if state:
            source_url = state["source_url"]
    warehouse = Path(_read("WAREHOUSE_PATH") or ddir / "warehouse.duckdb").resolve()
    return Settings(
        env=env,
        data_dir=ddir,
        dagster_home=_read("DAGSTER_HOME"),
        source=SourceSettings(url=source_url, tables=_captured_tables()),
        cdc=_cdc(env, source_url),
        partitions=PartitionSettings(
            start=_date("PARTITION_START_DATE"),
            timezone=_time_zone("PARTITION_TIMEZONE"),
            grace_minutes=_positive_int("PARTITION_GRACE_MINUTES"),
        ),
        warehouse=WarehouseSettings(
            path=warehouse,
            lock_timeout_seconds=_seconds("WAREHOUSE_LOCK_TIMEOUT_SECONDS"),
            read_path=Path(
                _read("WAREHOUSE_READ_PATH") or warehouse.parent / "read" / warehouse.name
            ).resolve(),
            raw_schema=validate_identifier(_read("RAW_SCHEMA"), "RAW_SCHEMA"),
            gcp_project=_read("GCP_PROJECT"),
            bigquery_dataset=validate_identifier(_read("BIGQUERY_DATASET"), "BIGQUERY_DATASET"),
            bigquery_location=_read("BIGQUERY_LOCATION"),
        ),
        quality=_quality(),
        freshness=FreshnessSettings(
            raw_warn_minutes=_positive_int("FRESHNESS_RAW_WARN_MINUTES", "minutes"),
            raw_fail_minutes=_positive_int("FRESHNESS_RAW_FAIL_MINUTES", "minutes"),
            default_warn_minutes=_positive_int("FRESHNESS_DEFAULT_WARN_MINUTES", "minutes"),
            default_fail_minutes=_positive_int("FRESHNESS_DEFAULT_FAIL_MINUTES", "minutes"),
        ),
        notify=NotifySettings(path=Path(_read("NOTIFY_PATH") or ddir / "notifications.jsonl")),
        dbt=DbtSettings(
            target=_read("DBT_TARGET") or ("prod" if env == "prod" else "dev"),
            target_path=Path(_read("DBT_TARGET_PATH")),
            artifact_runs_kept=_positive_int("DBT_ARTIFACT_RUNS_KEPT"),
            models_refresh_minutes=_minutes_dividing_an_hour("MODELS_REFRESH_MINUTES"),
            warm_start=_switch("DBT_WARM_START"),
        ),
        history=HistorySettings(
            change_log_retention_days=_days("CHANGE_LOG_RETENTION_DAYS"),
            history_retention_days=_days("HISTORY_RETENTION_DAYS"),
        ),
    )


def _captured_tables() -> tuple[str, ...]:
    return tuple(
        validate_identifier(t.strip(), "captured table")
        for t in _read("CAPTURED_TABLES").split(",")
        if t.strip()
    )


def _cdc(env: str, source_url: str | None) -> CdcSettings:
    cdc_url = _read("CDC_DATABASE_URL")
    if cdc_url is None and env == "dev" and source_url:
        cdc_url = _stack_cdc_url(source_url)
    batch = _positive_int("CDC_BATCH_SIZE")
    feed = _read("CDC_FEED")
    if feed not in CDC_FEEDS:
        raise ConfigError(f"CDC_FEED={feed!r} is not one of {', '.join(CDC_FEEDS)}.")
    return CdcSettings(
        feed=feed,
        url=cdc_url,
        publication=validate_identifier(_read("CDC_PUBLICATION"), "publication"),
        slot=validate_identifier(_read("CDC_SLOT"), "slot"),
        batch_size=batch,
        topic_prefix=_read("CDC_TOPIC_PREFIX"),
        kafka_config=kafka_config(),
        column_types=column_types(),
        lag_max_pending=_positive_int("CDC_LAG_MAX_PENDING"),
        lag_max_seconds=_positive_int("CDC_LAG_MAX_SECONDS"),
        lag_max_bytes=_positive_int("CDC_LAG_MAX_BYTES"),
        max_idle_minutes=_positive_int("CDC_MAX_IDLE_MINUTES"),
        pause_at=_read("CDC_PAUSE_AT"),
    )


def _quality() -> QualitySettings:
    s = QualitySettings(
        volume_band=_number("QUALITY_VOLUME_BAND", low=0.0),
        volume_settle_days=_number("QUALITY_VOLUME_SETTLE_DAYS", low=0.0, high=30.0),
        reconcile_margin_seconds=_number("QUALITY_RECONCILE_MARGIN_SECONDS", low=0.0),
        slot_wal_warn_fraction=_number("QUALITY_SLOT_WAL_WARN_FRACTION", low=0.0, high=1.0),
        slot_wal_error_fraction=_number("QUALITY_SLOT_WAL_ERROR_FRACTION", low=0.0, high=1.0),
        heartbeat_warn_minutes=_number("QUALITY_SLOT_HEARTBEAT_WARN_MINUTES", low=0.0),
        heartbeat_error_minutes=_number("QUALITY_SLOT_HEARTBEAT_ERROR_MINUTES", low=0.0),
    )
    if s.slot_wal_warn_fraction > s.slot_wal_error_fraction:
        raise ConfigError(
            "QUALITY_SLOT_WAL_WARN_FRACTION must not be above QUALITY_SLOT_WAL_ERROR_FRACTION."
        )
    if s.heartbeat_warn_minutes > s.heartbeat_error_minutes:
        raise ConfigError(
            "QUALITY_SLOT_HEARTBEAT_WARN_MINUTES must not be above "
            "QUALITY_SLOT_HEARTBEAT_ERROR_MINUTES."
        )
    return s


def kafka_config() -> tuple[tuple[str, str], ...]:
    """Every `KAFKA_<NAME>` environment variable as the librdkafka property `<name>` (lower
    case, `_` -> `.`), e.g. KAFKA_GROUP_ID -> group.id."""
    return tuple(
        sorted(
            (name[len(KAFKA_PREFIX) :].lower().replace("_", "."), value)
            for name, value in os.environ.items()
            if name.startswith(KAFKA_PREFIX) and len(name) > len(KAFKA_PREFIX) and value != ""
        )
    )


def dbt_profile_environment() -> tuple[tuple[str, str | None], ...]:
    """The variables dbt/profiles.yml reads, as set now (unset: None): dbt renders the profile
    from them, and re-parses the project when the rendered profile changes."""
    text = (DBT_PROJECT_DIR / "profiles.yml").read_text()
    names = sorted(set(re.findall(r"env_var\(\s*['\"](\w+)['\"]", text)))
    return tuple((name, os.environ.get(name)) for name in names)


def column_types() -> tuple[tuple[str, str, str], ...]:
    """CDC_COLUMN_TYPES: a JSON object {table: {column: Postgres type}} (e.g.
    `{"orders": {"total": "numeric(12,2)", "paid_at": "timestamptz"}}`), the column types of
    Debezium topics written without the schema wrapper, which otherwise land as JSON infers
    them (decimals and timestamps as text). lib/debezium.py maps the type names."""
    text = _read("CDC_COLUMN_TYPES")
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


def _positive_int(name: str, unit: str = "") -> int:
    value = _read(name)
    if not value.isdigit() or int(value) <= 0:
        what = f"a positive whole number of {unit}" if unit else "a positive integer"
        raise ConfigError(f"{name}={value!r} must be {what}.")
    return int(value)


def _switch(name: str) -> bool:
    value = _read(name).strip().lower()
    if value not in ("true", "false", "1", "0", "yes", "no"):
        raise ConfigError(f"{name}={value!r} is not a switch: use true or false.")
    return value in ("true", "1", "yes")


def _number(name: str, *, low: float, high: float | None = None) -> float:
    raw = _read(name)
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number.") from None
    if value < low or (high is not None and value > high):
        bounds = f">= {low}" if high is None else f"between {low} and {high}"
        raise ConfigError(f"{name}={raw!r} must be {bounds}.")
    return value


def _minutes_dividing_an_hour(name: str) -> int:
    """A cadence in minutes that a cron expression repeats evenly every hour."""
    value = _positive_int(name, "minutes")
    if 60 % value:
        raise ConfigError(
            f"{name}={value} must divide 60 (1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30, 60)."
        )
    return value


def _days(name: str) -> int:
    """A retention in whole days; 0 keeps forever."""
    value = _read(name)
    if not value.isdigit():
        raise ConfigError(f"{name}={value!r} must be a whole number of days (0: keep forever).")
    return int(value)


def _date(name: str) -> str:
    value = _read(name)
    try:
        dt.date.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"{name}={value!r} is not a date (YYYY-MM-DD).") from None
    return value


# An IANA name (Area/Location, Etc/GMT+9, UTC): it also goes into dbt's SQL as a literal.
_ZONE_NAME = re.compile(r"^[A-Za-z0-9_+-]+(/[A-Za-z0-9_+-]+)*$")


def _time_zone(name: str) -> str:
    """The business day's time zone: a name both Python's zoneinfo and the warehouses know."""
    import zoneinfo

    value = _read(name)
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


def _seconds(name: str) -> float:
    value = _read(name)
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds < float("inf"):
        raise ConfigError(f"{name}={value!r} must be a number of seconds (0 or more).")
    return seconds


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


def require_source_url() -> str:
    url = get_settings().source.url
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
