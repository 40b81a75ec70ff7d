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
    """A migrated ClickHouse database of the caller's own (its four: contracts.names.Tables),
    dropped afterwards; the connection is the admin's, and the component users
    (sandmeter/stack/users.py) may use the databases while the test runs."""
    from pipeline.schema import migrate

    name = f"t_{uuid.uuid4().hex[:8]}"
    admin = stack.ch(name, home="system")
    try:
        migrate(admin, wall_ms())  # creates the four databases
        stack.allow(name)
        yield name, stack.ch(name)
    finally:
        stack.disallow(name)
        for each in databases(name):
            admin.execute(f"DROP DATABASE IF EXISTS {each}")


@contextlib.contextmanager
def cluster_db(cluster: Cluster) -> Iterator[tuple[str, Any]]:
    """A database of the caller's own on every host of the cluster, migrated in the cluster
    flavour as `sandmeter migrate` does it; the client talks to the first host."""
    from pipeline.schema import migrate

    name = f"c_{uuid.uuid4().hex[:8]}"
    ports = [n.tcp_port for n in cluster.nodes]
    try:
        admin = cluster.ch(ports[0], name, home="system", cluster=CLUSTER)
        migrate(admin, wall_ms(), CLUSTER, lambda host, port: cluster.ch(port, name, home="system", cluster=CLUSTER))
        yield name, cluster.ch(ports[0], name, cluster=CLUSTER)
    finally:
        for port in ports:  # a host a test left stopped keeps its copy; its state dir goes anyway
            with contextlib.suppress(Exception):
                for each in databases(name):
                    cluster.ch(port, "system").execute(f"DROP DATABASE IF EXISTS {each}")


def free_ports(count: int) -> int:
    """The first of `count` consecutive free ports on 127.0.0.1 (the cluster's nodes take base + i)."""
    for _ in range(200):
        base = random.randrange(20_000, 60_000)
        if all(port_free(base + i) for i in range(count)):
            return base
    raise RuntimeError(f"no {count} consecutive free ports found")
