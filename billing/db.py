"""The API's ClickHouse connection: read-only, time-bounded, and a failure to reach it is a 503.

The API never writes (finalizing invoices and creating keys are jobs with their own
connection: billing/finalize.py, billing/keys.py), and its user should be allowed SELECT only
(docs/deployment.md). On top of that, every query carries `readonly = 2` (reads and
per-query settings only) and `max_execution_time`, so no request can write whatever a route
does, and a heavy range cannot hold a worker for long. A user whose profile is read-only
already (`readonly = 1`) may change no setting at all; for it the server's own rule is
the guard and nothing is sent (the socket timeout still bounds a request). Which one the
user is, is asked once per process.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Final

from clickhouse_driver import errors as che

from billing.errors import unavailable

# server error codes that mean "busy or away, try again", not "our query is wrong"
RETRYABLE: Final = frozenset({
    159,  # TIMEOUT_EXCEEDED
    160,  # TOO_SLOW
    202,  # TOO_MANY_SIMULTANEOUS_QUERIES
    203,  # NO_FREE_CONNECTION
    209,  # SOCKET_TIMEOUT
    210,  # NETWORK_ERROR
    241,  # MEMORY_LIMIT_EXCEEDED
    242,  # TABLE_IS_READ_ONLY
    252,  # TOO_MANY_PARTS
})  # fmt: skip
UNREACHABLE: Final = (che.NetworkError, che.SocketTimeoutError, che.UnexpectedPacketFromServerError, OSError, EOFError)
READONLY_PROBE: Final = "SELECT value FROM system.settings WHERE name = 'readonly'"


def _away(exc: BaseException) -> Exception:
    return unavailable("clickhouse_unavailable", "the usage store is unreachable; retry later")


class ReadOnly:
    """Wraps a clickhouse-driver client (or anything with its `execute`)."""

    def __init__(self, client: Any, settings: dict[str, Any]) -> None:
        self.client, self.settings = client, settings
        self.tables = getattr(client, "tables", None)  # the names its queries use (contracts.clickhouse)

    def execute(self, sql: str, params: Any = None, settings: dict[str, Any] | None = None, **kw: Any) -> Any:
        try:
            return self.client.execute(sql, params, settings={**(settings or {}), **self.settings}, **kw)
        except UNREACHABLE as exc:
            raise _away(exc) from exc
        except che.ServerException as exc:
            if exc.code in RETRYABLE:
                raise unavailable("clickhouse_busy", "the usage store is busy; retry later") from exc
            raise


def query_settings(readonly: str, max_execution_s: float) -> dict[str, Any]:
    """What each query carries, given the user's own `readonly` (0, 1 or 2)."""
    bound = {"max_execution_time": max(1, int(max_execution_s))}
    return {"0": {"readonly": 2, **bound}, "2": bound}.get(readonly, {})


def read_only(factory: Callable[[], Any], max_execution_s: float) -> Callable[[], ReadOnly]:
    known: list[dict[str, Any]] = []
    lock = threading.Lock()

    def make() -> ReadOnly:
        try:
            client = factory()
            if not known:
                with lock:
                    if not known:
                        known.append(query_settings(_readonly_of(client), max_execution_s))
        except UNREACHABLE as exc:
            raise _away(exc) from exc
        return ReadOnly(client, known[0])

    return make


def _readonly_of(client: Any) -> str:
    """The user's `readonly` setting; "1" (send nothing) when the server will not say."""
    try:
        rows = client.execute(READONLY_PROBE, settings={"use_numpy": False})
    except che.ServerException:
        return "1"
    return str(rows[0][0]) if rows else "1"
