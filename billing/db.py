"""The API's ClickHouse connection: read-only, time-bounded, and a failure to reach it is a 503.

Every query the API sends carries `readonly = 2` (reads and per-query settings only), so no
request can write, whatever a route does; finalizing invoices and creating keys are jobs
with their own connection (billing/finalize.py, billing/keys.py). `max_execution_time`
bounds each query, so a heavy range cannot hold a worker for long.
"""

from __future__ import annotations

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


class ReadOnly:
    """Wraps a clickhouse-driver client (or anything with its `execute`)."""

    def __init__(self, client: Any, max_execution_s: float) -> None:
        self.client = client
        self.settings = {"readonly": 2, "max_execution_time": max(1, int(max_execution_s))}

    def execute(self, sql: str, params: Any = None, settings: dict[str, Any] | None = None, **kw: Any) -> Any:
        try:
            return self.client.execute(sql, params, settings={**(settings or {}), **self.settings}, **kw)
        except UNREACHABLE as exc:
            raise unavailable("clickhouse_unavailable", "the usage store is unreachable; retry later") from exc
        except che.ServerException as exc:
            if exc.code in RETRYABLE:
                raise unavailable("clickhouse_busy", "the usage store is busy; retry later") from exc
            raise


def read_only(factory: Callable[[], Any], max_execution_s: float) -> Callable[[], ReadOnly]:
    def make() -> ReadOnly:
        try:
            client = factory()
        except UNREACHABLE as exc:
            raise unavailable("clickhouse_unavailable", "the usage store is unreachable; retry later") from exc
        return ReadOnly(client, max_execution_s)

    return make
