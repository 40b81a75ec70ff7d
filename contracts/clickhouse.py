"""The ClickHouse connection every component opens (clickhouse-driver, native protocol)."""

from __future__ import annotations

from typing import Any

from contracts.names import Tables

# the server's codes for a refused login: 18.16 (unknown user, wrong or missing password) and
# current releases (one code for all, so as not to tell which part was wrong)
AUTH_FAILED_CODES = frozenset({192, 193, 194, 516})

# Sent with every query when the tables are a cluster's Distributed tables (docs/architecture.md,
# "Cluster"): an insert returns only once each shard's replica has its rows, so the rollups
# computed next, a checkpoint and a crash replay all see them; every client reads and writes
# each shard on its first healthy replica, its own host's replica not preferred, so processors
# on different hosts see each other's writes at once (a rollup of a tenant sums intervals two
# processors wrote; a partition's next owner reads the checkpoint its last owner wrote); a join
# of two Distributed tables joins each shard's local rows (both are sharded by the same key).
CLUSTER_SETTINGS = {
    "insert_distributed_sync": 1,
    "load_balancing": "in_order",
    "prefer_localhost_replica": 0,
    "distributed_product_mode": "local",
}


def client(
    host: str, port: int, database: str, user: str = "default", password: str = "", *,
    cluster: str = "", alt_hosts: str = "", insert_quorum: int = 0, home: str = "",
) -> Any:  # fmt: skip
    """A new connection; a Client is not thread-safe, so each thread opens its own.

    `database` is the configured name the four databases derive from (contracts.names.Tables);
    the connection carries them as `.tables` (see `tables`) and starts in `home` (default
    `database`): a user allowed only the billing database must start there on 18.16.

    `cluster`: the tables are that cluster's (the settings above go with every query);
    `alt_hosts` ("host:port,..."): where to connect when `host` does not answer;
    `insert_quorum`: replicas that must have an insert before it returns (0: one).
    """
    from clickhouse_driver import Client

    settings: dict[str, Any] = {"use_numpy": True}
    if cluster:
        settings.update(CLUSTER_SETTINGS)
    if insert_quorum:
        settings["insert_quorum"] = insert_quorum
    extra = {"alt_hosts": alt_hosts} if alt_hosts else {}
    c = Client(
        host=host, port=port, database=home or database, user=user, password=password, connect_timeout=3,
        send_receive_timeout=30, settings=settings, **extra,
    )  # fmt: skip
    c.tables = Tables(database)
    return c


def tables(ch: Any) -> Tables:
    """The qualified table names of the installation `ch` (a `client()`, or a wrapper of one
    that passes `.tables` on) talks to."""
    t = getattr(ch, "tables", None)
    if not isinstance(t, Tables):
        raise TypeError(f"{type(ch).__name__} carries no .tables: open it with contracts.clickhouse.client()")
    return t


def refused_login(exc: BaseException) -> bool:
    """Whether `exc` is the server refusing the user or password (retrying will not help)."""
    return getattr(exc, "code", None) in AUTH_FAILED_CODES
