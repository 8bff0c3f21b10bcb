"""A local stand-in for Slack: this machine has no internet, so the Slack incoming webhook is
replaced by a real HTTP server on 127.0.0.1 (ephemeral port) that records every POST."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from analytics_assets import settings


@dataclass
class Webhook:
    url: str
    requests: list[dict] = field(default_factory=list)
    status: int = 200  # what the server answers; set 500 to see a delivery failure


@pytest.fixture
def webhook():
    hook = Webhook(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            hook.requests.append(
                {
                    "path": self.path,
                    "content_type": self.headers.get("Content-Type"),
                    "body": json.loads(body),
                }
            )
            reply = b"ok" if hook.status == 200 else b"invalid_token"
            self.send_response(hook.status)
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args):  # keep the test output quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    # The path is the secret part of a real webhook URL.
    hook.url = f"http://127.0.0.1:{server.server_port}/services/T0TEST/B0TEST/s3cr3t-t0ken"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield hook
    server.shutdown()
    server.server_close()


@pytest.fixture
def notify_env(monkeypatch, tmp_path):
    """A scratch warehouse path and dev sink; the settings cache cleared before and after."""
    monkeypatch.setenv("NOTIFY_PATH", str(tmp_path / "notifications.jsonl"))
    monkeypatch.setenv("WAREHOUSE_PATH", str(tmp_path / "warehouse.duckdb"))
    monkeypatch.delenv("ANALYTICS_ENV", raising=False)
    settings.get_settings.cache_clear()
    yield tmp_path
    settings.get_settings.cache_clear()


class Sink:
    """The dev sink file: one JSON object per line."""

    def __init__(self, path):
        self.path = path

    def lines(self) -> list[dict]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines()]


@pytest.fixture
def sink(notify_env) -> Sink:
    return Sink(notify_env / "notifications.jsonl")
