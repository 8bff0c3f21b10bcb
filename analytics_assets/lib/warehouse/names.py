"""The warehouse's own relation names and identifier quoting: what readers of the raw layer (the
quality checks) need, without the adapters' Arrow, NumPy and DuckDB imports, so the code location
loads without them."""

from __future__ import annotations

STATE_TABLE = "_cdc_state"  # per table: applied position and feed checkpoint
DEAD_LETTERS = "_dead_letters"  # change records the feed could not decode
RAW_SUFFIX = "__raw"  # `<column>__raw`: a value its typed column cannot hold (lib/values.py)


def q(name: str) -> str:
    """Quote an identifier (source column names may be anything)."""
    return '"' + name.replace('"', '""') + '"'


def backquote(name: str) -> str:
    """Quote an identifier as BigQuery does (where SQL is written for BigQuery alone)."""
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"
