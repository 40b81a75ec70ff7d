"""The cluster flavour: local replicated tables behind Distributed ones, a tenant's rows on one
shard, a replayed write (any flush boundaries) adding nothing, keys checked and retention
applied on every host's local tables."""

from __future__ import annotations

import datetime as dt
import re
import uuid
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import cluster_db

from contracts import names as n
from contracts.names import Tables, databases
from contracts.quantities import COLUMNS
from pipeline import shards
from pipeline.accounted import Accounted
from pipeline.accounting import USAGE_COLUMNS
from pipeline.schema import SchemaError, available, check_keys, migrate
from pipeline.shards import EVERYWHERE, SHARD_KEY, cluster_statements, local
from pipeline.writer import ClickHouseWriter
from sandmeter.stack import CLUSTER, Cluster

T0 = 1_795_773_600_000  # 2026-11-27T10:00Z
DAY_MS = 86_400_000


def test_every_table_is_sharded_by_a_key_column_or_replicated_everywhere() -> None:
    for mig in available():
        for stmt in mig.statements:
            out = cluster_statements(stmt, CLUSTER, Tables("db"))
            name = stmt.split("IF NOT EXISTS")[1].split()[0]
            db = Tables("db").db(name)  # each table in the database of its readers
            assert name in SHARD_KEY or name in EVERYWHERE, name
            assert "ENGINE = Replicated" in out[0] and "'/clickhouse/tables/" in out[0] and "'{replica}'" in out[0]
            if name in SHARD_KEY:
                assert out[0].startswith(f"CREATE TABLE IF NOT EXISTS {db}.{name}_local ") and "{shard}" in out[0]
                assert out[1].startswith(f"CREATE TABLE IF NOT EXISTS {db}.{name} AS {db}.{name}_local ")
                assert out[1].endswith(f"Distributed({CLUSTER}, {db}, {name}_local, {SHARD_KEY[name]})")
                # the shard key's column is in the sorting key, so a row's duplicates share its shard
                column = SHARD_KEY[name].removeprefix("cityHash64(").rstrip(")")
                assert column in re.findall(r"\w+", stmt.split("ORDER BY")[1]), name
            else:
                assert len(out) == 1 and f"/all/{db}/" in out[0] and db == "db_billing"


def test_a_versioned_engine_keeps_its_version_column() -> None:
    stmt = next(s for m in available() for s in m.statements if "processor_checkpoints" in s)
    assert (
        "ReplicatedReplacingMergeTree("
        "'/clickhouse/tables/{shard}/db_internal/processor_checkpoints', '{replica}', offset)"
        in (cluster_statements(stmt, CLUSTER, Tables("db"))[0])
    )


@pytest.fixture(scope="module")
def cdb(cluster: Cluster) -> Any:
    with cluster_db(cluster) as d:
        yield d


def host(cluster: Cluster, i: int, db: str) -> Any:
    return cluster.ch(cluster.nodes[i].tcp_port, db)


@pytest.mark.cluster
def test_migrate_makes_local_and_distributed_tables_on_every_host_once(cluster: Cluster, cdb: Any) -> None:
    name, ch = cdb
    connect = lambda h, p: cluster.ch(p, name, cluster=CLUSTER)  # noqa: E731
    assert migrate(ch, 1, CLUSTER, connect) == []  # each host recorded its own versions
    for i in range(4):
        tables = dict(
            host(cluster, i, name).execute(
                "SELECT name, engine FROM system.tables WHERE database IN %(d)s", {"d": databases(name)}
            )
        )
        assert tables[n.T_USAGE] == "Distributed" and tables[local(n.T_USAGE)] == "ReplicatedReplacingMergeTree"
        assert tables[n.T_API_KEYS] == "ReplicatedReplacingMergeTree" and tables[n.T_MIGRATIONS] == "MergeTree"
        assert tables[n.T_CHECKPOINTS] == "Distributed"
        versions = host(cluster, i, name).execute(f"SELECT count() FROM {Tables(name).migrations}")[0][0]
        assert versions == len(available())


def usage_rows(rows: list[tuple[str, int, int]]) -> pd.DataFrame:
    """Usage rows (tenant, end offset, cpu) with every other column derived from them."""
    df = pd.DataFrame(
        {
            "tenant": [r[0] for r in rows],
            "sandbox_id": [f"sb-{r[0]}" for r in rows],
            "node": "n1",
            "start_ms": np.array([T0 + r[1] * 1000 for r in rows], np.uint64),
            "end_ms": np.array([T0 + r[1] * 1000 + 1000 for r in rows], np.uint64),
            **{c: np.array([r[2] for r in rows], np.uint64) for c in COLUMNS},
            "batch_id": [f"b{r[1]}" for r in rows],
        }
    )
    return df[list(USAGE_COLUMNS)]


rows_st = st.lists(
    st.tuples(st.sampled_from(["acme", "globex", "initech", "umbrella", "hooli", "", "x" * 40]),
              st.integers(0, 500), st.integers(0, 10**12)),
    min_size=1, max_size=60, unique_by=lambda r: (r[0], r[1]),
)  # fmt: skip


@pytest.mark.cluster
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=rows_st, cut1=st.integers(0, 60), cut2=st.integers(0, 60))
def test_a_replayed_flush_lands_on_the_same_shard_and_adds_nothing(
    cluster: Cluster, cdb: Any, rows: list[tuple[str, int, int]], cut1: int, cut2: int
) -> None:
    name, ch = cdb
    w = ClickHouseWriter(ch, keep_raw=False, cluster=CLUSTER)
    run = uuid.uuid4().hex[:6]  # this example's tenants: the earlier examples' rows stay out of it
    df = usage_rows([(f"{run}{t}", end, cpu) for t, end, cpu in rows])
    # written, then replayed after a "crash" with other flush boundaries, then replayed whole
    for cut in (cut1, cut2):
        for part in (df.iloc[:cut], df.iloc[cut:]):
            if len(part):
                w.write(w.prepare(Accounted(usage=part.reset_index(drop=True))))
    w.write(w.prepare(Accounted(usage=df)))
    truth = df.groupby("tenant")["cpu_used_us"].sum().astype(int).to_dict()
    mine = {"t": tuple(truth)}
    got = dict(
        ch.execute(
            f"SELECT tenant, sum(cpu_used_us) FROM {n.T_USAGE} FINAL WHERE tenant IN %(t)s GROUP BY tenant", mine
        )
    )
    assert {k: int(v) for k, v in got.items()} == truth
    # all of a tenant's rows on shard cityHash64(tenant) % 2, on both of its replicas
    for i in range(4):
        h = host(cluster, i, name)
        h.execute(f"SYSTEM SYNC REPLICA {local(n.T_USAGE)}")
        shard = cluster.nodes[i].shard - 1
        here = h.execute(
            f"SELECT DISTINCT tenant, modulo(cityHash64(tenant), 2) FROM {local(n.T_USAGE)} WHERE tenant IN %(t)s", mine
        )
        assert all(int(s) == shard for _, s in here)
        expect = {t for t in truth if int(h.execute("SELECT modulo(cityHash64(%(t)s), 2)", {"t": t})[0][0]) == shard}
        assert {t for t, _ in here} == expect


@pytest.mark.cluster
def test_keys_are_checked_on_each_hosts_local_tables(cluster: Cluster) -> None:
    with cluster_db(cluster) as (name, ch):
        h = host(cluster, 3, name)
        ddl = str(h.execute(f"SHOW CREATE TABLE {local(n.T_USAGE)}")[0][0])
        h.execute(f"DROP TABLE {local(n.T_USAGE)}")
        h.execute(ddl.replace(", batch_id)", ")").replace(f"/{n.T_USAGE}'", f"/{n.T_USAGE}_old'"))
        connect = lambda hs, p: cluster.ch(p, name, cluster=CLUSTER)  # noqa: E731
        with pytest.raises(SchemaError, match=r"usage_intervals_local .* without batch_id"):
            check_keys(ch, CLUSTER, connect)


def drop_days_before(cluster: Cluster, name: str, ch: Any, day: int) -> list[str]:
    """What `sandmeter retention` does to the raw samples (pipeline/retention.py), on the cluster."""
    connect = lambda h, p: cluster.ch(p, name, cluster=CLUSTER)  # noqa: E731
    return shards.drop_days_before(ch, n.T_SAMPLES, day, CLUSTER, connect)


@pytest.mark.cluster
def test_retention_drops_old_days_from_every_hosts_local_table(cluster: Cluster, cdb: Any) -> None:
    name, ch = cdb
    days = [T0 - 3 * DAY_MS, T0 - 2 * DAY_MS, T0]
    samples = pd.DataFrame(
        {"series_id": np.arange(1, 61, dtype=np.uint64), "ts_ms": np.array([days[i % 3] for i in range(60)], np.uint64),
         "value": np.ones(60)}
    )  # fmt: skip
    ch.insert_dataframe(f"INSERT INTO {Tables(name).samples} (series_id, ts_ms, value) VALUES", samples)
    today = int(dt.datetime.fromtimestamp(T0 / 1000, dt.UTC).strftime("%Y%m%d"))
    assert len(drop_days_before(cluster, name, ch, today)) == 2
    import time

    deadline = time.monotonic() + 20  # the drop is queued distributed DDL: every host runs it soon
    while True:
        left = [
            int(host(cluster, i, name).execute(f"SELECT count() FROM {name}_raw.{local(n.T_SAMPLES)}")[0][0])
            for i in range(4)
        ]
        if sum(left) == 2 * 20 or time.monotonic() > deadline:  # today's 20 rows, on both replicas of their shards
            break
        time.sleep(0.2)
    assert sum(left) == 40 and left[0] == left[1] and left[2] == left[3], left
    assert int(ch.execute(f"SELECT count() FROM {Tables(name).samples}")[0][0]) == 20
    assert drop_days_before(cluster, name, ch, today) == []
