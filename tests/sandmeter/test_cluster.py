"""`sandmeter stack up --cluster`: ZooKeeper and 2 shards x 2 replicas from generated configs
in the state dir; `status` shows each process, `down` stops all of them."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support import free_ports

from sandmeter.stack import CLUSTER, Cluster, StackSettings
from sandmeter.stack.procs import free_port
from sandmeter.stack.users import ADMIN, Users

pytestmark = [pytest.mark.kafka, pytest.mark.cluster]


def sandmeter(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sandmeter.cli", *args], env=env, capture_output=True, text=True, timeout=120
    )


def test_stack_up_cluster_status_and_down_through_the_cli(tmp_path: Path) -> None:
    from clickhouse_driver import Client

    base = free_ports(12)
    env = {
        **os.environ,
        "SANDMETER_STACK_STATE_DIR": str(tmp_path),
        "SANDMETER_STACK_ALERTING": "false",  # the cluster is what this test is about
        "SANDMETER_STACK_KAFKA_PORT": str(free_port()),
        "SANDMETER_STACK_ZOOKEEPER_PORT": str(free_port()),
        "SANDMETER_STACK_CLICKHOUSE_TCP_PORT": str(base),
        "SANDMETER_STACK_CLICKHOUSE_HTTP_PORT": str(base + 4),
        "SANDMETER_STACK_CLUSTER_INTERSERVER_PORT": str(base + 8),
    }
    t0 = time.monotonic()
    up = sandmeter(env, "stack", "up", "--cluster")
    print(f"stack up --cluster: {time.monotonic() - t0:.1f} s")
    try:
        assert up.returncode == 0, up.stderr
        assert "zookeeper, ch-s1r1, ch-s1r2, ch-s2r1, ch-s2r2" in up.stdout
        status = sandmeter({**env, "SANDMETER_STACK_CLUSTER": "true"}, "stack", "status")
        assert status.returncode == 0, status.stdout
        lines = {ln.split()[0]: ln for ln in status.stdout.splitlines()}
        pids = [int(ln.split("pid=")[1].split()[0]) for ln in lines.values()]
        assert set(lines) == {"broker", "zookeeper", "ch-s1r1", "ch-s1r2", "ch-s2r1", "ch-s2r2"}
        assert all(ln.endswith("answering") for ln in lines.values())
        # each server knows the whole cluster and its own place in it
        for i, (shard, replica) in enumerate([(1, 1), (1, 2), (2, 1), (2, 2)]):
            # as the admin, whose password the stack made in its state dir
            ch = Client("127.0.0.1", base + i, user=ADMIN, password=Users(tmp_path).password(ADMIN))
            assert ch.execute(
                "SELECT shard_num, replica_num, port FROM system.clusters WHERE cluster = %(c)s", {"c": CLUSTER}
            ) == [(1, 1, base), (1, 2, base + 1), (2, 1, base + 2), (2, 2, base + 3)]
            macros = dict(ch.execute("SELECT macro, substitution FROM system.macros"))
            assert macros == {"cluster": CLUSTER, "shard": f"{shard:02d}", "replica": f"ch-s{shard}r{replica}"}
            config = tmp_path / f"ch-s{shard}r{replica}"
            assert (config / "users.xml").exists() and (config / "config.d" / "cluster.xml").exists()
        assert (tmp_path / "zookeeper" / "zoo.cfg").read_text().count(f"dataDir={tmp_path.resolve()}") == 1
    finally:
        down = sandmeter(env, "stack", "down")  # without --cluster: `down` stops whatever runs
    assert down.returncode == 0
    assert "zookeeper" in down.stdout and "ch-s2r2" in down.stdout and "broker" in down.stdout
    assert not list(tmp_path.glob("*.pid"))
    # every process is gone (its ports may be taken by anyone's outgoing connections meanwhile)
    assert not [p for p in pids if Path(f"/proc/{p}/cmdline").exists() and Path(f"/proc/{p}/cmdline").read_bytes()]


def test_a_stopped_node_restarts_with_its_data(cluster: Cluster) -> None:
    node = cluster.nodes[3]
    assert cluster.stop_node(node.name)
    assert not cluster.stop_node(node.name)  # stopped already
    assert cluster.start_node(node.name)
    assert cluster.ch(node.tcp_port, "system").execute("SELECT 1") == [(1,)]


def test_the_single_server_stays_the_default() -> None:
    assert StackSettings().cluster is False
