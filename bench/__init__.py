"""The project's benchmarks (`make bench`; figures in docs/benchmarks.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from contracts import names as n
from sandmeter.stack import Stack, StackSettings
from sandmeter.stack.procs import free_port


def local_stack(state_dir: Path) -> Stack:
    """A single-server local stack on free ports, without Prometheus and Alertmanager (a bench
    must not take the default ports another stack may hold); not started."""
    return Stack(
        StackSettings(
            state_dir=state_dir, kafka_port=free_port(), clickhouse_tcp_port=free_port(),
            clickhouse_http_port=free_port(), alerting=False,
        )
    )  # fmt: skip


def drop_databases(ch: Any, db: str) -> None:
    """Drops all four of a run's databases (usage, raw, internal, billing): a leftover
    migrations table would make the next run's `migrate` skip creating its tables."""
    for each in n.databases(db):
        ch.execute(f"DROP DATABASE IF EXISTS {each}")
