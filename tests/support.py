"""Helpers shared by test modules (tests/ is on sys.path through its conftest)."""

from __future__ import annotations

import contextlib
import random
import uuid
from collections.abc import Iterator
from typing import Any

from contracts.clock import wall_ms
from contracts.names import databases
from sandmeter.stack import CLUSTER, Cluster, Stack
from sandmeter.stack.procs import port_free


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
        migrate(dbc, wall_ms())  # creates the other three (contracts.names.databases)
        yield name, dbc
    finally:
        for each in databases(name):
            ch.execute(f"DROP DATABASE IF EXISTS {each}")


@contextlib.contextmanager
def cluster_db(cluster: Cluster) -> Iterator[tuple[str, Any]]:
    """A database of the caller's own on every host of the cluster, migrated in the cluster
    flavour as `sandmeter migrate` does it; the client talks to the first host."""
    from contracts.clickhouse import client
    from pipeline.schema import migrate

    name = f"c_{uuid.uuid4().hex[:8]}"
    ports = [n.tcp_port for n in cluster.nodes]
    for port in ports:
        client("127.0.0.1", port, "default").execute(f"CREATE DATABASE {name}")
    try:
        dbc = client("127.0.0.1", ports[0], name, cluster=CLUSTER)
        migrate(dbc, wall_ms(), CLUSTER, lambda host, port: client(host, port, name, cluster=CLUSTER))
        yield name, dbc
    finally:
        for port in ports:  # a host a test left stopped keeps its copy; its state dir goes anyway
            with contextlib.suppress(Exception):
                for each in databases(name):
                    client("127.0.0.1", port, "default").execute(f"DROP DATABASE IF EXISTS {each}")


def free_ports(count: int) -> int:
    """The first of `count` consecutive free ports on 127.0.0.1 (the cluster's nodes take base + i)."""
    for _ in range(200):
        base = random.randrange(20_000, 60_000)
        if all(port_free(base + i) for i in range(count)):
            return base
    raise RuntimeError(f"no {count} consecutive free ports found")
