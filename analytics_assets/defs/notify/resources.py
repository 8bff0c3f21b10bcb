"""The notifier: where the platform tells people something went wrong (or the day's numbers).

prod posts to a Slack incoming webhook whose URL comes from `SLACK_WEBHOOK_URL` through
`dg.EnvVar`, so the Dagster UI shows the variable's name and never its value. The URL is a
credential (anyone holding it can post to the channel): it is kept out of the resource's repr,
logs and error messages. dev appends JSON lines to `settings.notify.path` (under `.data/`).
"""

from __future__ import annotations

import datetime as dt
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import dagster as dg
from pydantic import Field

from analytics_assets.settings import get_settings


class NotificationError(RuntimeError):
    """A message could not be delivered. The text never contains the webhook URL."""


class Notifier(dg.ConfigurableResource):
    """Posts platform messages to Slack (prod) or a JSON-lines file (dev)."""

    slack_webhook_url: str | None = Field(
        default=None,
        repr=False,
        description="Slack incoming-webhook URL; set it with dg.EnvVar, it is a credential.",
    )
    sink_path: str | None = Field(
        default=None, description="JSON-lines file that receives messages instead of Slack (dev)."
    )
    timeout_seconds: float = Field(default=10.0, description="HTTP timeout for one Slack post.")

    @property
    def destination(self) -> str:
        """Where messages go, safe to show anywhere."""
        if self.slack_webhook_url:
            return "slack"
        return f"file {self.sink_path}" if self.sink_path else "nowhere (not configured)"

    def notify(self, kind: str, text: str, fields: dict[str, Any] | None = None) -> None:
        """Deliver one message, or raise NotificationError."""
        if self.slack_webhook_url:
            self._post_to_slack(text)
        elif self.sink_path:
            self._append_to_sink(kind, text, fields or {})
        else:
            raise NotificationError("Notifier has neither a Slack webhook nor a sink path.")

    def _append_to_sink(self, kind: str, text: str, fields: dict[str, Any]) -> None:
        record = {
            "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "kind": kind,
            "text": text,
            "fields": fields,
        }
        path = Path(self.sink_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record, default=str, sort_keys=True) + "\n")

    def _post_to_slack(self, text: str) -> None:
        url = self.slack_webhook_url
        body = json.dumps({"text": text}).encode()
        try:
            request = urllib.request.Request(
                url, data=body, headers={"Content-Type": "application/json"}, method="POST"
            )
            with urllib.request.urlopen(request, timeout=self.timeout_seconds) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read(200).decode(errors="replace").strip()
            raise NotificationError(
                _scrub(f"Slack webhook answered HTTP {exc.code}: {detail or exc.reason}", url)
            ) from None
        except Exception as exc:
            # `from None`: the original exception (and its traceback) may carry the URL.
            raise NotificationError(
                _scrub(f"Slack webhook post failed: {type(exc).__name__}: {exc}", url)
            ) from None


def _scrub(message: str, url: str) -> str:
    """Remove the URL and its path (the secret part of a Slack webhook) from a message."""
    path = urlsplit(url).path
    for secret in (url, path if len(path) > 1 else ""):
        if secret:
            message = message.replace(secret, "<SLACK_WEBHOOK_URL>")
    return message


def build_notifier() -> Notifier:
    settings = get_settings()
    if settings.is_prod:
        return Notifier(slack_webhook_url=dg.EnvVar(settings.notify.slack_webhook_var))
    return Notifier(sink_path=str(settings.notify.path))
