"""A dbt-duckdb plugin (dbt/profiles.yml): dbt waits for its turn on the warehouse file like
every other writer (`turns.py`) instead of failing when another process holds it.

With `keep_open: false` (the runs beside the fast path, `defs/dbt/assets.py`) dbt opens the
file for each node and closes it after, and waits politely: announced waiters go first."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dbt.adapters.duckdb.plugins import BasePlugin

from analytics_assets.lib.errors import WarehouseLocked
from analytics_assets.lib.warehouse import turns


class Plugin(BasePlugin):
    def update_connection_config(self, creds: Any, config: dict[str, Any]) -> None:
        from analytics_assets.settings import get_settings

        timeout = get_settings().warehouse.lock_timeout_seconds
        path = Path(creds.path)
        if not turns.wait_turn(path, timeout, polite=not creds.keep_open):
            raise WarehouseLocked(
                f"dbt waited {timeout:g}s (WAREHOUSE_LOCK_TIMEOUT_SECONDS) for the DuckDB "
                f"warehouse {path}, which another process holds"
            )
