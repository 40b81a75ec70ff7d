"""Helpers shared by test modules (tests/ is on sys.path through its conftest)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from typing import Any

from contracts.clock import wall_ms
from sandmeter.stack import Stack


@contextlib.contextmanager
def private_db(stack: Stack) -> Iterator[tuple[str, Any]]:
    """A migrated ClickHouse database of the caller's own, dropped afterwards."""
    from contracts.clickhouse import client
    from pipeline.schema import migrate

    name = f"t_{uuid.uuid4().hex[:8]}"
    ch = client("127.0.0.1", stack.settings.clickhouse_tcp_port, "default")
    ch.execute(f"CREATE DATABASE {name}")
    try:
        dbc = client("127.0.0.1", stack.settings.clickhouse_tcp_port, name)
        migrate(dbc, wall_ms())
        yield name, dbc
    finally:
        ch.execute(f"DROP DATABASE {name}")
