"""The lossless value rule both feeds follow: a typed column where the value fits, its exact text
beside it where it does not.

Every decoded column of a date, timestamp or decimal type has a VARCHAR companion
`<column>__raw`. When the source value is one the typed column cannot hold on every warehouse, the
typed column is NULL and `<column>__raw` holds the value as PostgreSQL prints it (DateStyle ISO,
TimeZone UTC); otherwise `<column>__raw` is NULL. So for a non-NULL source value exactly one of
the two is set. The warehouse adds `<column>__raw` to the raw table with the first change whose
companion holds a value (lib/warehouse/base.py), so a raw table has it once the column has held
such a value (and keeps it). What goes there:

- dates and timestamps outside 0001-01-01 .. 9999-12-31 (BigQuery's range; Arrow's text parser and
  Python's datetime share it): `infinity`, `-infinity`, BC (`0044-03-15 BC`,
  `0044-03-15 12:00:00+00 BC`) and years past 9999 (`10000-01-01`);
- `NaN`, `Infinity` and `-Infinity` of a `numeric(p, s)` column (p <= 38: decimal128).

Numerics that no decimal128 holds (unconstrained `numeric`, `numeric(p, s)` with p > 38) are a
VARCHAR column of their exact text instead, NaN and ±Infinity included.

The text is what PostgreSQL prints for the value whichever feed delivered it: the slot feed has
that text from pgoutput; the Debezium decoder prints epoch values the same way (`pg_date_text`,
`pg_timestamp_text`), so raw is the same on both feeds.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from analytics_assets.lib.warehouse.names import RAW_SUFFIX

# epoch microseconds / days of 0001-01-01 and 10000-01-01: the typed columns' range
LOW_DAY, HIGH_DAY = -719_162, 2_932_897
LOW_US, HIGH_US = LOW_DAY * 86_400_000_000, HIGH_DAY * 86_400_000_000
INT64_MAX, INT64_MIN = 2**63 - 1, -(2**63)
INT32_MAX, INT32_MIN = 2**31 - 1, -(2**31)
MAX_DECIMAL_PRECISION = 38  # decimal128 (DuckDB's and BigQuery's NUMERIC maximum)


def decimal_type(precision: str | int | None, scale: int) -> pa.DataType:
    """decimal128 when it holds every value of numeric(precision, scale) (a negative scale:
    decimal128(precision - scale, 0)), else a string of the exact value."""
    p = int(precision or MAX_DECIMAL_PRECISION)
    digits, scale = (p - scale, 0) if scale < 0 else (max(p, scale, 1), scale)
    return pa.decimal128(digits, scale) if digits <= MAX_DECIMAL_PRECISION else pa.string()


# PostgreSQL's text of the values a typed column takes (anything else goes to `__raw`)
_REGULAR = {
    "timestamp": r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d{1,6})?$",
    "timestamptz": r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d{1,6})?\+00$",
    "date": r"^\d{4}-\d\d-\d\d$",
    "decimal": r"^-?\d+(\.\d+)?$",
}


def raw_column(name: str) -> str:
    return name + RAW_SUFFIX


def has_raw(t: pa.DataType) -> bool:
    """Does a column of this Arrow type get a `__raw` companion?"""
    return pa.types.is_timestamp(t) or pa.types.is_date(t) or pa.types.is_decimal(t)


def _kind(t: pa.DataType) -> str:
    if pa.types.is_timestamp(t):
        return "timestamptz" if t.tz else "timestamp"
    return "date" if pa.types.is_date(t) else "decimal"


def split_text(values: pa.Array, target: pa.DataType) -> tuple[pa.Array, pa.Array]:
    """PostgreSQL text (DateStyle ISO, TimeZone UTC) -> (typed array, `__raw` array) for a type
    with a companion. Raises pa.ArrowInvalid only for text PostgreSQL never prints."""
    if pa.types.is_string_view(values.type) and not pa.types.is_decimal(target):
        values = values.cast(pa.string())  # (decimals parse straight from the decoder's views)
    try:  # the usual batch: every value fits, one C++ cast
        return pc.cast(values, target), pa.nulls(len(values), pa.string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        values = values.cast(pa.string())
    regular = pc.match_substring_regex(values, _REGULAR[_kind(target)])
    regular = pc.fill_null(regular, True)
    typed = pc.cast(pc.if_else(regular, values, pa.scalar(None, values.type)), target)
    raw = pc.if_else(regular, pa.scalar(None, pa.string()), values.cast(pa.string()))
    return typed, raw


# -- PostgreSQL's text of epoch values (what the Debezium decoder puts in `__raw`) ---------------


def _civil(days: int) -> tuple[int, int, int]:
    """Proleptic Gregorian (year, month, day) of days since 1970-01-01; year 0 is 1 BC (Howard
    Hinnant's days_from_civil inverse, exact for any integer)."""
    z = days + 719_468
    era = z // 146_097
    doe = z - era * 146_097
    yoe = (doe - doe // 1460 + doe // 36_524 - doe // 146_096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + 3 if mp < 10 else mp - 9
    return yoe + era * 400 + (month <= 2), month, day


def days_from_civil(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (year 0 is 1 BC)."""
    y = year - (month <= 2)
    era = y // 400
    yoe = y - era * 400
    mp = month - 3 if month > 2 else month + 9
    doy = (153 * mp + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146_097 + doe - 719_468


def _date_parts(days: int) -> tuple[str, bool]:
    year, month, day = _civil(days)
    bc = year <= 0
    return f"{1 - year if bc else year:04d}-{month:02d}-{day:02d}", bc


def pg_date_text(days: int) -> str:
    """PostgreSQL's text of a date given as epoch days: `0044-03-15 BC`, `10000-01-01`."""
    if days == INT32_MAX:
        return "infinity"
    if days == INT32_MIN:
        return "-infinity"
    text, bc = _date_parts(days)
    return text + (" BC" if bc else "")


def pg_timestamp_text(us: int, tz: bool) -> str:
    """PostgreSQL's text of a timestamp given as epoch microseconds (with `tz`: in UTC)."""
    if us == INT64_MAX:
        return "infinity"
    if us == INT64_MIN:
        return "-infinity"
    days, rest = divmod(us, 86_400_000_000)
    date, bc = _date_parts(days)
    secs, micro = divmod(rest, 1_000_000)
    text = f"{date} {secs // 3600:02d}:{secs // 60 % 60:02d}:{secs % 60:02d}"
    if micro:
        text += f".{micro:06d}".rstrip("0")
    return text + ("+00" if tz else "") + (" BC" if bc else "")


def pg_time_text(us: int) -> str:
    """PostgreSQL's text of a `time` given as microseconds since midnight (24:00:00 included)."""
    secs, micro = divmod(us, 1_000_000)
    text = f"{secs // 3600:02d}:{secs // 60 % 60:02d}:{secs % 60:02d}"
    return text + (f".{micro:06d}".rstrip("0") if micro else "")


def decimal_text(unscaled: int, scale: int) -> str:
    """The exact decimal `unscaled * 10**-scale` as PostgreSQL prints it (`scale` digits after
    the point; a negative scale, PostgreSQL 15's numeric(p, -s), gives an integer)."""
    if scale <= 0:
        return str(unscaled * 10**-scale)
    digits = str(abs(unscaled)).rjust(scale + 1, "0")
    sign = "-" if unscaled < 0 else ""
    return f"{sign}{digits[:-scale]}.{digits[-scale:]}"


__all__ = [
    "RAW_SUFFIX",
    "days_from_civil",
    "decimal_text",
    "has_raw",
    "pg_date_text",
    "pg_time_text",
    "pg_timestamp_text",
    "raw_column",
    "split_text",
]
