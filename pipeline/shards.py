"""The cluster flavour of the schema: sharded, replicated tables behind Distributed ones.

With a cluster name set (`SANDMETER_*_CLICKHOUSE_CLUSTER`), every migration statement
`CREATE TABLE IF NOT EXISTS t (...) ENGINE = XMergeTree[(args)] ...` becomes, on each host:

- sharded tables: `t_local` ReplicatedXMergeTree(path per shard, '{replica}'[, args]) holding
  this shard's rows, and `t` Distributed(cluster, db, t_local, shard key) over all shards.
  Readers and writers keep using `t`. The shard key is a function of columns in the table's
  Replacing key (the tenant, or the raw series id), so a row and every replay of it land on
  one shard, where FINAL and the merges deduplicate them: deduplication is shard-local.
- tables replicated everywhere: `t` ReplicatedXMergeTree with one replica set spanning all
  hosts (API keys, invoices): each host holds every row and reads it locally.

The single-node migration files stay the one source of the schema: this only rewrites the
engine clause. `sandmeter_migrations` stays a plain table on each host (docs/architecture.md).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Final, Protocol

from contracts import names as n
from contracts.clickhouse import tables


class Executes(Protocol):
    def execute(self, sql: str, params: Any = None, /) -> Any: ...


# sharded table -> sharding expression, always over a column of the table's sorting key, so
# duplicates of a row meet on one shard. Usage tables put all of a tenant's rows on one shard
# (FINAL, the rollups and the API's per-tenant queries stay on it); incidents and late samples
# are keyed by node; raw samples by their series id, which places a sample next to its name
# row, so the dashboards' join of the two is shard-local too. Checkpoints are sharded (by
# Kafka partition) rather than replicated to every host and read locally: through the
# Distributed table every processor reads the replica the previous owner of a partition wrote.
SHARD_KEY: Final = {
    n.T_USAGE: "cityHash64(tenant)",
    n.T_USAGE_MINUTE: "cityHash64(tenant)",
    n.T_USAGE_HOUR: "cityHash64(tenant)",
    n.T_USAGE_TENANT_MINUTE: "cityHash64(tenant)",
    n.T_LIFECYCLE: "cityHash64(tenant)",
    n.T_FUNCTION_LOAD: "cityHash64(tenant)",
    n.T_HEALTH: "cityHash64(node)",
    n.T_LATE: "cityHash64(node)",
    n.T_SAMPLES: "series_id",
    n.T_RAW_SERIES: "series_id",
    n.T_CHECKPOINTS: "partition",
}
# written and read by the API: an instance reads its own key and invoice writes on its host
EVERYWHERE: Final = frozenset({n.T_API_KEYS, n.T_INVOICES})
_CREATE = re.compile(
    r"CREATE TABLE IF NOT EXISTS (\w+)\s*(\(.*?\))\s*ENGINE\s*=\s*(\w*MergeTree)(?:\(([^)]*)\))?(.*)$", re.S
)


def local(table: str) -> str:
    """Where a table's rows live on a host: `t_local` for a sharded table, else `t` itself."""
    return f"{table}_local" if table in SHARD_KEY else table


def cluster_statements(stmt: str, cluster: str, t: n.Tables) -> list[str]:
    """One single-node statement as the cluster flavour runs it on every host, its tables in
    the databases `t` says."""
    m = _CREATE.match(stmt.strip())
    if not m:
        return [stmt]
    name, columns, engine, args, rest = m[1], m[2], m[3], (m[4] or "").strip(), m[5]
    if name in EVERYWHERE:
        shard = "all"
    elif name in SHARD_KEY:
        shard = "{shard}"
    else:
        raise ValueError(f"table {name}: add it to pipeline/shards.py, sharded (by what) or replicated everywhere")
    # ClickHouse 18.16 has no {database} macro: the database is written into the path, so two
    # databases on one cluster (tests, staging) never share a replica set
    database = t.db(name)
    path = f"/clickhouse/tables/{shard}/{database}/{name}"
    engine_args = ", ".join([f"'{path}'", "'{replica}'", *([args] if args else [])])
    where = f"{database}.{local(name)}"
    out = [f"CREATE TABLE IF NOT EXISTS {where} {columns} ENGINE = Replicated{engine}({engine_args}){rest}"]
    if name in SHARD_KEY:
        out.append(
            f"CREATE TABLE IF NOT EXISTS {t(name)} AS {where} "
            f"ENGINE = Distributed({cluster}, {database}, {local(name)}, {SHARD_KEY[name]})"
        )
    return out


def hosts(ch: Executes, cluster: str) -> list[tuple[str, int]]:
    """(host, TCP port) of every replica of `cluster`, as the connected server knows it."""
    rows = ch.execute(
        "SELECT host_name, port FROM system.clusters WHERE cluster = %(c)s ORDER BY shard_num, replica_num",
        {"c": cluster},
    )
    if not rows:
        raise ValueError(f"the ClickHouse server knows no cluster {cluster!r} (system.clusters, remote_servers)")
    return [(str(h), int(p)) for h, p in rows]


def on_every_host(
    ch: Executes, cluster: str, connect: Callable[[str, int], Executes], fn: Callable[[Executes], None]
) -> None:
    """Runs `fn` on a connection to each host of the cluster, in turn."""
    for host, port in hosts(ch, cluster):
        fn(connect(host, port))


def old_day_partitions(ch: Executes, table: str, day: int, on_cluster: bool = False) -> list[str]:
    """`table`'s day partitions (YYYYMMDD) older than `day` on the server `ch` talks to (of a
    cluster host: its local table's)."""
    params = {"db": tables(ch).db(table), "t": local(table) if on_cluster else table}
    rows = ch.execute(
        "SELECT DISTINCT partition FROM system.parts WHERE database = %(db)s AND table = %(t)s AND active", params
    )
    return sorted(str(p) for (p,) in rows if str(p).isdigit() and int(str(p)) < day)


def drop_days_before(
    ch: Executes, table: str, day: int, cluster: str = "", connect: Callable[[str, int], Executes] | None = None
) -> list[str]:
    """Drops `table`'s day partitions older than `day`; returns them. On a cluster, on the leader
    replica of each shard's local table, connected to directly (`connect`): a replica that is
    not the leader hands a DROP PARTITION to the leader over a connection as the `default`
    user on 18.16, which the servers do not have; replication takes the drop to the others."""
    t = tables(ch)
    if not cluster:
        old = old_day_partitions(ch, table, day)
        for part in old:
            ch.execute(f"ALTER TABLE {t(table)} DROP PARTITION {int(part)}")
        return old
    if connect is None:
        raise ValueError("retention on a cluster needs a way to connect to each host")
    dropped: set[str] = set()
    where = {"db": t.db(table), "t": local(table)}
    for host, port in hosts(ch, cluster):
        h = connect(host, port)
        leader = h.execute("SELECT is_leader FROM system.replicas WHERE database = %(db)s AND table = %(t)s", where)
        if not leader or not int(leader[0][0]):
            continue
        for part in old_day_partitions(h, table, day, on_cluster=True):
            h.execute(f"ALTER TABLE {t.db(table)}.{local(table)} DROP PARTITION {int(part)}")
            dropped.add(part)
    return sorted(dropped)
