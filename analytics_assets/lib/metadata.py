"""Dagster metadata from plain values, the one way the project builds it."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import dagster as dg

ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


def as_metadata(raw: Mapping[str, Any]) -> dict[str, dg.MetadataValue]:
    """Numbers stay numbers (the UI plots them), lists and dicts become JSON, None is left out."""
    out: dict[str, dg.MetadataValue] = {}
    for key, value in raw.items():
        if value is None:
            continue
        if isinstance(value, dg.MetadataValue):
            out[key] = value
        elif isinstance(value, bool):
            out[key] = dg.MetadataValue.bool(value)
        elif isinstance(value, int):
            out[key] = dg.MetadataValue.int(value)
        elif isinstance(value, float):
            out[key] = dg.MetadataValue.float(value)
        elif isinstance(value, list | dict):
            out[key] = dg.MetadataValue.json(value)
        else:
            out[key] = dg.MetadataValue.text(str(value))
    return out


def without_ansi(text: str) -> str:
    """Text without the terminal colour codes dbt puts in its messages: the run page and a log
    file show them raw."""
    return ANSI_ESCAPE.sub("", text)
