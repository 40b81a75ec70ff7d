"""Request metrics, and the last word on unexpected errors.

An ASGI middleware around the whole app: every response is counted by route template (the
path pattern, never the raw path, so labels stay few) and status, including a 500 for an
exception no handler took; its latency goes to a histogram per route. Such an exception is
logged with its traceback and answered with a problem+json 500.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from billing.errors import internal_error
from contracts.names import API_REQUEST_SECONDS, API_REQUESTS

log = logging.getLogger("billing.app")
UNMATCHED: Final = "unmatched"
BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def request_metrics(registry: CollectorRegistry) -> tuple[Counter, Histogram]:
    return (
        Counter(API_REQUESTS, "API responses by route template and status", ["route", "status"], registry=registry),
        Histogram(API_REQUEST_SECONDS, "API request latency by route template", ["route"], buckets=BUCKETS,
                  registry=registry),
    )  # fmt: skip


class Observe:
    def __init__(self, app: ASGIApp, metrics: tuple[Counter, Histogram], state: Any) -> None:
        self.app, self.state = app, state
        self.requests, self.seconds = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = 0

        async def sent(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sent)
        except Exception as exc:
            log.error("api: %s %s -> 500: %r", scope.get("method"), _route(scope), exc, exc_info=True)
            if status:  # the response had started: nothing else can be sent
                status = 500
                raise
            status = 500
            await internal_error()(scope, receive, send)
        finally:
            route = _route(scope)
            self.requests.labels(route, str(status or 500)).inc()
            self.seconds.labels(route).observe(time.perf_counter() - t0)
            self.state.requests += 1
            self.state.errors += status >= 400 or status == 0


def _route(scope: Scope) -> str:
    route = scope.get("route")
    return str(getattr(route, "path", UNMATCHED))
