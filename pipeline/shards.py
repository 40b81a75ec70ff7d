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


def old_day_partitions(ch: Executes, table: str, day: int, cluster: str) -> list[str]:
    """`table`'s day partitions (YYYYMMDD) older than `day`; on a cluster those of its local
    table on any host (a Distributed table has no parts of its own)."""
    source = f"cluster('{cluster}', system.parts)" if cluster else "system.parts"
    params = {"db": tables(ch).db(table), "t": local(table) if cluster else table}
    rows = ch.execute(
        f"SELECT DISTINCT partition FROM {source} WHERE database = %(db)s AND table = %(t)s AND active", params
    )
    return sorted(str(p) for (p,) in rows if str(p).isdigit() and int(str(p)) < day)


def drop_partition(ch: Any, table: str, partition: int, cluster: str) -> None:
    """Drops one partition; on a cluster from the local table of every shard, queued as
    distributed DDL without waiting (a host that is down drops it when it is back; retention
    looks again an hour later anyway)."""
    t = tables(ch)
    if not cluster:
        ch.execute(f"ALTER TABLE {t(table)} DROP PARTITION {int(partition)}")
        return
    # 0 = do not wait for the hosts (the only value clickhouse-driver sends 18.16 intact)
    ch.execute(
        f"ALTER TABLE {t.db(table)}.{local(table)} ON CLUSTER {cluster} DROP PARTITION {int(partition)}",
        None,
        settings={"distributed_ddl_task_timeout": 0},
    )
