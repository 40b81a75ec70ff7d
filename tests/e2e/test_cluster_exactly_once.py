"""Exactly once on the 2x2 cluster: real collectors -> Tansu -> two `sandmeter process` children
in one consumer group -> ClickHouse 2 shards x 2 replicas (ZooKeeper), read back through the API.

Mid-run one processor is SIGKILLed past its last checkpoint (a replacement joins; its
partitions are replayed) and the replica that shard 2's writes go to first is stopped for a
while and restarted. Per-tenant totals through the API equal the simulator's ground truth, the
restarted replica catches up with its peer, and every tenant's rows sit on one shard.
"""

from __future__ import annotations

import signal
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from grafana_macros import render_sql, targets
from processes import Processors, drain_and_catch_up, metric, sandboxes_off
from support import cluster_db

from billing import OPERATOR, ApiSettings, create_app, create_key, load_book
from collectors.sim.model import FleetSpec
from collectors.sim.runner import Simulator
from contracts.clickhouse import tables
from contracts.names import PROCESSOR_BATCHES as BATCHES
from contracts.names import PROCESSOR_CHECKPOINTS as CHECKPOINTS
from contracts.names import T_RAW_SERIES, T_SAMPLES, T_USAGE, T_USAGE_HOUR, T_USAGE_MINUTE, Tables, databases
from dashboards import generate as g
from pipeline import reconcile_rollups
from sandmeter.stack import CLUSTER, Cluster, Stack, create_topics
from sandmeter.stack.procs import free_port
from sandmeter.stack.users import ADMIN

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
HOUR = 3_600_000
REPLICATED = (T_USAGE, T_USAGE_MINUTE, T_USAGE_HOUR, T_SAMPLES, T_RAW_SERIES)


def iso(ms: int) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def wait_for(what: str, cond: Any, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def local_counts(cluster: Cluster, port: int, db: str) -> dict[str, int]:
    ch = cluster.ch(port, db)
    return {t: int(ch.execute(f"SELECT count() FROM {Tables(db).db(t)}.{t}_local")[0][0]) for t in REPLICATED}


def test_two_processors_and_a_replica_outage_on_the_cluster_give_ground_truth(
    stack: Stack, cluster: Cluster, tmp_path: Path, collectors: Any
) -> None:
    t_start = time.monotonic()
    s1r1, s1r2, s2r1, s2r2 = cluster.nodes
    with cluster_db(cluster) as (name, ch):
        topic = f"samples-{name}"
        create_topics(stack.kafka_bootstrap, 4, (topic, topic + ".dlq"))
        procs = Processors(stack, name, topic, f"group-{name}", tmp_path)

        def on(node: Any) -> dict[str, str]:  # a processor entering the cluster at `node`
            others = ",".join(f"127.0.0.1:{n.tcp_port}" for n in cluster.nodes if n is not node)
            return {
                "SANDMETER_PROCESSOR_CLICKHOUSE_PORT": str(node.tcp_port),
                "SANDMETER_PROCESSOR_CLICKHOUSE_CLUSTER": CLUSTER,
                "SANDMETER_PROCESSOR_CLICKHOUSE_ALT_HOSTS": others,
                # the cluster's own admin: its component users know only the database `sandmeter`
                **cluster.users.env("PROCESSOR", ADMIN),
            }

        spec = FleetSpec(nodes=4, sandboxes=16, tenants=4, churn_per_min=20, reset_per_min=10, seed=18)
        sim = Simulator(tmp_path / "fleet", spec)
        sim.start()
        fleet = collectors(sim, stack.kafka_bootstrap, topic, tmp_path / "spool", 0.5)
        try:
            ports = free_port(), free_port()
            first = procs.start(ports[0], on(s1r1))
            procs.start(ports[1], on(s2r2))
            wait_for("a checkpoint from each processor", lambda: min(metric(p, CHECKPOINTS) for p in ports) >= 1)
            saved, flushed = metric(ports[0], CHECKPOINTS), metric(ports[0], BATCHES)
            time.sleep(2.5)
            assert metric(ports[0], CHECKPOINTS) == saved and metric(ports[0], BATCHES) > flushed
            first.send_signal(signal.SIGKILL)  # flushed rows past its checkpoint: replayed by the group
            first.wait(timeout=10)
            # the replica shard 2's inserts and reads go to first (load_balancing=in_order) goes away
            before_stop = local_counts(cluster, s2r1.tcp_port, name)
            assert cluster.stop_node(s2r1.name)
            procs.start(env=on(s1r2))  # the replacement: two in the group again
            time.sleep(12)
            written_meanwhile = local_counts(cluster, s2r2.tcp_port, name)[T_USAGE] - before_stop[T_USAGE]
            assert cluster.start_node(s2r1.name)
            time.sleep(4)
            drain_and_catch_up(sim, fleet, stack.kafka_bootstrap, f"group-{name}", topic)
        finally:
            fleet.stop_event.set()
            procs.stop_all()
            truth = sim.stop()
        assert first.returncode == -signal.SIGKILL
        print(f"\nshard 2 took {written_meanwhile} usage rows while {s2r1.name} was down")
        assert written_meanwhile > 0

        # the restarted replica fetched everything its peer took meanwhile
        h = cluster.ch(s2r1.tcp_port, name)
        for t in REPLICATED:
            h.execute(f"SYSTEM SYNC REPLICA {Tables(name).db(t)}.{t}_local")
        assert local_counts(cluster, s2r1.tcp_port, name) == local_counts(cluster, s2r2.tcp_port, name)
        assert local_counts(cluster, s1r1.tcp_port, name) == local_counts(cluster, s1r2.tcp_port, name)
        # each tenant on one shard (cityHash64(tenant) % 2), both shards used
        placed = {
            node.shard: {
                r[0] for r in cluster.ch(node.tcp_port, name).execute(f"SELECT DISTINCT tenant FROM {T_USAGE}_local")
            }
            for node in (s1r1, s2r1)
        }
        assert placed[1] and placed[2] and not placed[1] & placed[2] and placed[1] | placed[2] == set(truth["tenants"])

        # per sandbox: CPU exact, allocation within 10 ms of its lifetime (as on a single server)
        off = sandboxes_off(ch, truth)
        for line in off:
            sid = line.split()[1]
            rows = ch.execute(
                f"SELECT end_ms, batch_id, cpu_used_us, node, count() FROM {T_USAGE} WHERE sandbox_id = %(s)s "
                "GROUP BY end_ms, batch_id, cpu_used_us, node ORDER BY end_ms",
                {"s": sid},
            )
            print(line, "\n  ", [tuple(r) for r in rows])
        assert not off, f"{len(off)} of {len(truth['sandboxes'])} sandboxes off"

        settings = ApiSettings(
            clickhouse_port=s1r1.tcp_port,
            clickhouse_database=name,
            clickhouse_cluster=CLUSTER,
            key_cache_s=0,
            **cluster.users.settings(ADMIN),
        )
        app = create_app(settings, settings.clickhouse, book=load_book(ROOT / "plans"))
        auth = {"Authorization": f"Bearer {create_key(ch, OPERATOR)[1]}"}
        first_ms = min(s["start_ms"] for s in truth["sandboxes"])
        last_ms = max(s["stop_ms"] for s in truth["sandboxes"])
        metrics = [("cpu_used_ms", "cpu_used_us", 1000), ("io_read_bytes", "io_read_bytes", 1),
                   ("io_write_bytes", "io_write_bytes", 1)]  # fmt: skip

        def totals(c: TestClient, tenant: str, lo: int, hi: int) -> dict[str, Decimal]:
            r = c.get(
                f"/v1/tenants/{tenant}/usage", headers=auth,
                params={"from": iso(lo), "to": iso(hi), "granularity": "day", "metric": [m for m, _, _ in metrics]},
            )  # fmt: skip
            assert r.status_code == 200, r.text
            return {m: Decimal(v) for m, v in r.json()["totals"].items()}

        expected = {
            t: {m: Decimal(v[col]) / div for m, col, div in metrics} for t, v in truth["tenants"].items()
        }  # fmt: skip
        with TestClient(app) as c:
            # an unaligned range reads the deduplicated intervals: exact however the writes went
            for tenant in truth["tenants"]:
                assert totals(c, tenant, first_ms - 601_234, last_ms + 600_777) == expected[tenant], tenant
            # whole hours read the rollups: exact once reconciled after the outage
            repaired = reconcile_rollups(ch, first_ms - HOUR, last_ms + HOUR)
            print(f"reconcile after the outage recomputed the rollups of {len(repaired)} tenant(s): {repaired}")
            lo, hi = first_ms // HOUR * HOUR, -(-(last_ms + 1) // HOUR) * HOUR
            for tenant in truth["tenants"]:
                assert totals(c, tenant, lo, hi) == expected[tenant], tenant
        assert reconcile_rollups(ch, first_ms - HOUR, last_ms + HOUR) == {}
        # every ClickHouse panel of the dashboards runs on the Distributed tables; the raw-sample
        # joins (shard-local: samples and names share a shard) find rows
        variables = {
            v["name"]: [str(r[0]) for r in ch.execute(v["query"])] or ["none"]
            for dash in g.DASHBOARDS
            for v in g.dashboard_json(dash, database=tables(ch).database).get("templating", {}).get("list", [])
        }
        joins = 0
        for dash in g.DASHBOARDS:
            for panel, t in targets(g.dashboard_json(dash, database=tables(ch).database)):
                if panel["datasource"]["uid"] == g.CH_UID:
                    sql = render_sql(t["rawSql"], first_ms // 1000 - 60, last_ms // 1000 + 60, 10, variables)
                    rows = ch.execute(sql)
                    if " JOIN " in sql:
                        assert rows, (dash, panel["title"])
                        joins += 1
        assert joins >= 3
        sizes = cluster.ch(s1r1.tcp_port, name).execute(
            "SELECT table, sum(rows), sum(data_compressed_bytes) FROM system.parts WHERE database IN %(db)s AND active "
            "AND table IN %(t)s GROUP BY table ORDER BY table",
            {"db": databases(name), "t": tuple(f"{t}_local" for t in REPLICATED)},
        )
        print(
            "shard 1, compressed column data:",
            ", ".join(f"{t} {int(r)} rows {int(b) / max(1, int(r)):.1f} B/row" for t, r, b in sizes),
        )
        print(
            f"{len(truth['sandboxes'])} sandboxes, {sum(s['counter_resets'] for s in truth['sandboxes'])} VM restarts, "
            f"{len(truth['tenants'])} tenants exact through the API; {time.monotonic() - t_start:.0f} s"
        )
