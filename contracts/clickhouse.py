"""The ClickHouse connection every component opens (clickhouse-driver, native protocol)."""

from __future__ import annotations

from typing import Any

# the server's codes for a refused login: 18.16 (unknown user, wrong or missing password) and
# current releases (one code for all, so as not to tell which part was wrong)
AUTH_FAILED_CODES = frozenset({192, 193, 194, 516})


def client(host: str, port: int, database: str, user: str = "default", password: str = "") -> Any:
    """A new connection; a Client is not thread-safe, so each thread opens its own."""
    from clickhouse_driver import Client

    return Client(
        host=host, port=port, database=database, user=user, password=password, connect_timeout=3,
        send_receive_timeout=30, settings={"use_numpy": True},
    )  # fmt: skip


def refused_login(exc: BaseException) -> bool:
    """Whether `exc` is the server refusing the user or password (retrying will not help)."""
    return getattr(exc, "code", None) in AUTH_FAILED_CODES
