"""The ClickHouse connection every component opens (clickhouse-driver, native protocol)."""

from __future__ import annotations

from typing import Any


def client(host: str, port: int, database: str) -> Any:
    """A new connection; a Client is not thread-safe, so each thread opens its own."""
    from clickhouse_driver import Client

    return Client(
        host=host, port=port, database=database, connect_timeout=3, send_receive_timeout=30,
        settings={"use_numpy": True},
    )  # fmt: skip
