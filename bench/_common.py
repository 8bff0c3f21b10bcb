"""Shared by the benchmarks: a scratch embedded stack, and the result record `run_all.py` reads.

Every benchmark script prints its figures and ratios and, with `--json PATH`, also writes them as
one record: {"name", "title", "figures": {label: value}, "ratios": [{"name", "value", "target",
"better", "met"}], "notes": [...]}. A ratio compares a figure with a limit or with a baseline
measured in the same run, so it means the same on any machine; bare times are context only.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


class Result:
    def __init__(self, name: str, title: str):
        self.record: dict = {"name": name, "title": title, "figures": {}, "ratios": [], "notes": []}

    def figure(self, label: str, value) -> None:
        self.record["figures"][label] = value
        print(f"{label}: {value}", flush=True)

    def ratio(self, name: str, value: float, target: float | None, better: str = "lower") -> None:
        """`better` = "lower" (value must be <= target) or "higher" (>= target)."""
        met = None
        if target is not None:
            met = value <= target if better == "lower" else value >= target
        self.record["ratios"].append(
            {"name": name, "value": round(value, 3), "target": target, "better": better, "met": met}
        )
        cmp = "<=" if better == "lower" else ">="
        goal = f"  (target {cmp} {target}: {'met' if met else 'MISSED'})" if target else ""
        print(f"ratio {name} = {value:.3f}{goal}", flush=True)

    def note(self, text: str) -> None:
        self.record["notes"].append(text)
        print(f"note: {text}", flush=True)

    def write(self, path: str | None) -> None:
        if path:
            Path(path).write_text(json.dumps(self.record, indent=2, default=str))


class CpuMeter:
    """CPU seconds (user + system) spent between start() and stop() by this process and by the
    embedded PostgreSQL server (the postmaster and every backend: live ones are read directly,
    ended ones through the postmaster's reaped-children times)."""

    def __init__(self):
        import psutil

        from analytics_assets.dev import stack

        pid = stack.server_pid()
        self._server = psutil.Process(pid) if pid else None
        self._self = psutil.Process()
        self._start: tuple[float, float] | None = None
        self.client = self.server = 0.0

    def _server_seconds(self) -> float:
        if self._server is None:
            return 0.0
        import psutil

        def reaped() -> float:
            t = self._server.cpu_times()
            return t.user + t.system + t.children_user + t.children_system

        # a backend that ends between the two readings would be counted twice or not at all:
        # read until the postmaster's own and reaped-children times did not move meanwhile
        for _ in range(200):
            before = reaped()
            live = 0.0
            for child in self._server.children():
                with contextlib.suppress(psutil.Error):  # ended meanwhile: caught below
                    c = child.cpu_times()
                    live += c.user + c.system
            if reaped() == before:
                return before + live
            time.sleep(0.01)
        raise RuntimeError("the server's CPU times did not settle")

    def _client_seconds(self) -> float:
        t = self._self.cpu_times()
        return t.user + t.system

    def start(self) -> None:
        self._start = (self._client_seconds(), self._server_seconds())

    def stop(self) -> dict[str, float]:
        assert self._start is not None, "start() first"
        self.client = self._client_seconds() - self._start[0]
        self.server = self._server_seconds() - self._start[1]
        return {"client_cpu_s": self.client, "server_cpu_s": self.server}


def arg_parser(doc: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes (a few minutes)")
    parser.add_argument("--json", default=None, help="also write the result record here")
    return parser


@contextlib.contextmanager
def scratch_stack(prefix: str, databases: tuple[str, ...] = ("bench",)) -> Iterator[dict]:
    """An embedded PostgreSQL on a temp data dir (never the developer's `.data`), with empty
    scratch databases; yields {"dir": temp dir, "urls": {db: url}}; stops the server after."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        saved = {k: os.environ.get(k) for k in ("ANALYTICS_DATA_DIR", "ANALYTICS_PG_PORT")}
        os.environ["ANALYTICS_DATA_DIR"] = tmp
        os.environ.pop("ANALYTICS_PG_PORT", None)
        os.environ.pop("SOURCE_DATABASE_URL", None)
        import psycopg2

        from analytics_assets import settings
        from analytics_assets.dev import stack

        settings.get_settings.cache_clear()
        info = stack.up(quiet=True)
        try:
            admin = psycopg2.connect(info.url("postgres"))
            admin.autocommit = True
            for db in databases:
                admin.cursor().execute(f'create database "{db}"')
            admin.close()
            yield {"dir": Path(tmp), "urls": {db: info.url(db) for db in databases}}
        finally:
            stack.down(quiet=True)
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            settings.get_settings.cache_clear()
