"""An Alertmanager webhook receiver on 127.0.0.1 that keeps every alert it is sent.

The demo prints what it received and the end-to-end tests assert on it. Each POST holds every
alert of one notification group, firing and resolved together, so it is kept per alert.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Delivery:
    """One alert of one notification, as Alertmanager delivered it."""

    at: float  # wall clock (Unix s) when the POST arrived
    receiver: str
    alert: dict[str, Any]  # status, labels, annotations, startsAt, endsAt, generatorURL, fingerprint

    @property
    def name(self) -> str:
        return str(self.labels.get("alertname", ""))

    @property
    def status(self) -> str:
        return str(self.alert.get("status", ""))

    @property
    def labels(self) -> dict[str, str]:
        labels = self.alert.get("labels")
        return labels if isinstance(labels, dict) else {}


def alert_time(text: str) -> float:
    """An RFC 3339 time from Alertmanager (up to nanoseconds) as Unix seconds."""
    head, _, frac = text.rstrip("Z").partition(".")
    return datetime.fromisoformat(f"{head}.{(frac + '000000')[:6]}+00:00").timestamp()


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, keep: Callable[[float, Any], None]) -> None:
        self.keep = keep
        super().__init__(("127.0.0.1", port), _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:
        at = time.time()
        try:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        except (ValueError, OSError):
            self.send_response(400)  # not a notification; Alertmanager never sends one
        else:
            self.server.keep(at, body)
            self.send_response(200)  # at once: a slow receiver delays the group's next notification
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *_args: Any) -> None:
        pass


class AlertReceiver:
    """Receives Alertmanager's webhook notifications at `url` until closed."""

    def __init__(self, port: int = 0) -> None:
        self._cv = threading.Condition()
        self._deliveries: list[Delivery] = []
        self._server = _Server(port, self._keep)
        self._thread = threading.Thread(target=self._server.serve_forever, name="alert-receiver", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}/alerts"

    def _keep(self, at: float, body: Any) -> None:
        alerts = body.get("alerts") if isinstance(body, dict) else None
        receiver = str(body.get("receiver", "")) if isinstance(body, dict) else ""
        with self._cv:
            for a in alerts if isinstance(alerts, list) else []:
                if isinstance(a, dict):
                    self._deliveries.append(Delivery(at, receiver, a))
            self._cv.notify_all()

    def deliveries(self) -> list[Delivery]:
        with self._cv:
            return list(self._deliveries)

    def wait(self, match: Callable[[Delivery], bool], timeout_s: float) -> Delivery | None:
        """The first delivery `match` accepts, waiting up to `timeout_s` for it."""
        deadline = time.monotonic() + timeout_s
        with self._cv:
            while True:
                found = next((d for d in self._deliveries if match(d)), None)
                left = deadline - time.monotonic()
                if found is not None or left <= 0:
                    return found
                self._cv.wait(left)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
