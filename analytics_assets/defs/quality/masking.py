"""Masking of personal data in check evidence: sample rows end up in the event log, the UI and
Slack, where nobody should read a customer's email or name.

A value is masked when its column is personal (`email`, `full_name`, ...), when the dbt test that
produced it tests a personal column (its output columns have generic names such as
`failing_value`), or when it looks like an email address whatever the column.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

PERSONAL_COLUMNS = frozenset(
    {"email", "full_name", "first_name", "last_name", "name_of_user", "phone", "address"}
)
_EMAIL = re.compile(r"^\s*([^@\s]+)@([^@\s]+)\s*$")
_EMAIL_ANYWHERE = re.compile(r"[^@\s]+@[^@\s]+")


def is_personal(column: str | None) -> bool:
    if not column:
        return False
    name = column.lower()
    return name in PERSONAL_COLUMNS or name.endswith("_email")


def mask_email(value: str) -> str:
    """`alice@example.com` -> `a***@example.com`: the domain stays (it helps debugging)."""
    match = _EMAIL.match(value)
    if not match:
        return mask_text(value)
    local, domain = match.groups()
    return f"{local[0]}***@{domain}"


def mask_text(value: str) -> str:
    """`Alice Smith` -> `A***`; an empty string stays empty."""
    value = value.strip()
    return f"{value[0]}***" if value else value


def mask_value(value: Any) -> Any:
    if value is None:
        return None
    text = str(value)
    return mask_email(text) if "@" in text else mask_text(text)


def json_safe(value: Any) -> Any:
    """A value for JSON metadata: decimals and times as text, bytes as a placeholder."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        return f"<{len(bytes(value))} bytes>"
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return str(value)


def mask_row(row: Mapping[str, Any], *, tested_column: str | None = None) -> dict[str, Any]:
    """One sample row, safe to show: personal values masked, the rest made JSON-safe."""
    all_personal = is_personal(tested_column)
    out = {}
    for column, value in row.items():
        if value is not None and (
            is_personal(column)
            or (all_personal and isinstance(value, str))
            or (isinstance(value, str) and _EMAIL_ANYWHERE.search(value))
        ):
            out[column] = mask_value(value)
        else:
            out[column] = json_safe(value)
    return out


def mask_rows(
    rows: Iterable[Mapping[str, Any]], *, tested_column: str | None = None
) -> list[dict[str, Any]]:
    return [mask_row(r, tested_column=tested_column) for r in rows]
