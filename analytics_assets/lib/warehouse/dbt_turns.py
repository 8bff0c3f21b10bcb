"""A dbt-duckdb plugin (dbt/profiles.yml): dbt waits for its turn on the warehouse file like
every other writer (`turns.py`) instead of failing when another process holds it.

The plugin opens the file itself, waiting, just before dbt-duckdb does; dbt-duckdb's own open
then joins that database in DuckDB's instance cache (same path, same config) without touching
the file, and the plugin lets go of its connection once dbt has its own. With `keep_open:
false` (DBT_DUCKDB_KEEP_OPEN, a dev switch; the platform's runs keep it open) dbt opens the file
for each node and closes it after, and waits politely: an announced waiter goes first."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dbt.adapters.duckdb.plugins import BasePlugin

from analytics_assets.lib.errors import WarehouseLocked
from analytics_assets.lib.warehouse import turns


class Plugin(BasePlugin):
    _held: Any = None

    def update_connection_config(self, creds: Any, config: dict[str, Any]) -> None:
        from analytics_assets.settings import get_settings

        timeout = get_settings().warehouse.lock_timeout_seconds
        try:
            self._held = turns.connect(
                Path(creds.path), timeout, polite=not creds.keep_open, config=config
            )
        except turns.Refused as exc:
            raise WarehouseLocked(
                f"dbt waited {timeout:g}s (WAREHOUSE_LOCK_TIMEOUT_SECONDS) for the DuckDB "
                f"warehouse {creds.path}: {exc}"
            ) from None

    def configure_connection(self, conn: Any) -> None:
        if self._held is not None:
            self._held.close()  # dbt's connection keeps the database open
            self._held = None
