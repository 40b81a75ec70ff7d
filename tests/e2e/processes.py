"""`sandmeter <command>` children (processors, collectors, the scale publisher) and the group
and metrics probes shared by the end-to-end tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from collectors.agent import wait_for_stops
from sandmeter.stack import Stack
from sandmeter.stack.procs import free_port
from sandmeter.stack.users import WRITER


class Children:
    """`sandmeter <command>` child processes, each with its own log file and environment."""

    def __init__(self, command: str, env: Mapping[str, str], logs: Path) -> None:
        self.command, self.logs = command, logs
        self.env = {**os.environ, **env}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def spawn(
        self, name: str, env: Mapping[str, str] | None = None, args: Sequence[str] = ()
    ) -> subprocess.Popen[bytes]:
        log = open(self.logs / f"{name}.log", "wb")  # noqa: SIM115 - the child owns it
        argv = [sys.executable, "-m", "sandmeter.cli", self.command, *args]
        p = subprocess.Popen(argv, env={**self.env, **(env or {})}, stdout=log, stderr=log)
        self.procs[name] = p
        return p

    def wait_serving(self, ports: Mapping[str, int], timeout_s: float = 30) -> None:
        """Until each named child's /metrics answers; a child that exited fails with its log."""
        deadline = time.monotonic() + timeout_s
        for name, port in ports.items():
            while metric(port, "process_start_time_seconds") < 0:
                p = self.procs[name]
                assert p.poll() is None, f"{name} exited {p.returncode}: {self.log_tail(name)}"
                assert time.monotonic() < deadline, f"{name} serves no /metrics on {port}: {self.log_tail(name)}"
                time.sleep(0.1)

    def log_tail(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")[-600:]

    def kill(self, name: str) -> None:
        """SIGKILL: the process gets no chance to say goodbye."""
        self.procs[name].kill()
        self.procs[name].wait()

    def stop_all(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs.values():
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()


class Processors(Children):
    """`sandmeter process` child processes sharing one consumer group."""

    def __init__(self, stack: Stack, db: str, topic: str, group: str, logs: Path) -> None:
        super().__init__("process", {
            "SANDMETER_PROCESSOR_KAFKA_BOOTSTRAP": stack.kafka_bootstrap,
            "SANDMETER_PROCESSOR_TOPIC": topic,
            "SANDMETER_PROCESSOR_DEADLETTER_TOPIC": topic + ".dlq",
            "SANDMETER_PROCESSOR_GROUP_ID": group,
            "SANDMETER_PROCESSOR_CLICKHOUSE_PORT": str(stack.settings.clickhouse_tcp_port),
            "SANDMETER_PROCESSOR_CLICKHOUSE_DATABASE": db,
            **stack.users.env("PROCESSOR", WRITER),
            "SANDMETER_PROCESSOR_METRICS_HOST": "127.0.0.1",
            "SANDMETER_PROCESSOR_METRICS_PORT": "0",
            "SANDMETER_PROCESSOR_FLUSH_INTERVAL_S": "0.5",
            "SANDMETER_PROCESSOR_CHECKPOINT_INTERVAL_S": "6",
        }, logs)  # fmt: skip

    def start(self, metrics_port: int = 0, env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
        """One more child; `env` overrides settings of this one (e.g. its ClickHouse host)."""
        return self.spawn(
            f"processor-{len(self.procs)}", {"SANDMETER_PROCESSOR_METRICS_PORT": str(metrics_port), **(env or {})}
        )


class Collectors(Children):
    """A `sandmeter collect` child per simulated node, each serving /metrics on its own port
    (`ports`, by node id), so one can be killed as a real node's collector dies."""

    def __init__(
        self, nodes: Sequence[dict[str, Any]], bootstrap: str, topic: str, spool: Path, logs: Path,
        interval_s: float = 1.0,
    ) -> None:  # fmt: skip
        super().__init__("collect", {
            "SANDMETER_COLLECTOR_KAFKA_BOOTSTRAP": bootstrap,
            "SANDMETER_COLLECTOR_TOPIC": topic,
            "SANDMETER_COLLECTOR_SPOOL_DIR": str(spool),
            "SANDMETER_COLLECTOR_SPOOL_FSYNC": "false",
            "SANDMETER_COLLECTOR_INTERVAL_S": str(interval_s),
            "SANDMETER_COLLECTOR_METRICS_HOST": "127.0.0.1",
        }, logs)  # fmt: skip
        self.ports: dict[str, int] = {}
        for nd in nodes:
            node, port = nd["node_id"], free_port()
            self.spawn(node, {
                "SANDMETER_COLLECTOR_NODE_ID": node,
                "SANDMETER_COLLECTOR_CGROUP_ROOT": nd["cgroup_root"],
                "SANDMETER_COLLECTOR_PROC_ROOT": nd["proc_root"],
                "SANDMETER_COLLECTOR_SANDBOX_DIRS": json.dumps([nd["sandbox_dir"]]),
                "SANDMETER_COLLECTOR_BUNDLE_DIRS": json.dumps([nd["bundle_dir"]]),
                "SANDMETER_COLLECTOR_CNI_CACHE_DIR": nd["cni_cache_dir"],
                "SANDMETER_COLLECTOR_SYS_CLASS_NET": nd["sys_class_net"],
                "SANDMETER_COLLECTOR_KATA_MONITOR_URL": nd["kata_monitor_url"],
                "SANDMETER_COLLECTOR_METRICS_PORT": str(port),
            })  # fmt: skip
            self.ports[node] = port


class SimProcess(Children):
    """`sandmeter simulate` as a child process: its timing is then its own, not shared with the
    collectors' threads, as a Kata node's runtime is not the collector. Its sandboxes appear
    once `start()` is called (collectors watching by then)."""

    def __init__(self, root: Path, logs: Path, *flags: str) -> None:
        super().__init__("simulate", {}, logs)
        self.root, self._go = root, root / "go"
        self.proc = self.spawn("simulator", args=["--root", str(root), "--start-when", str(self._go), *flags])
        deadline = time.monotonic() + 30
        while not (root / "fleet.json").exists():
            assert self.proc.poll() is None, f"the simulator exited: {self.log_tail('simulator')}"
            assert time.monotonic() < deadline, f"the simulator did not start: {self.log_tail('simulator')}"
            time.sleep(0.05)

    def describe(self) -> dict[str, Any]:
        return dict(json.loads((self.root / "fleet.json").read_text()))

    def start(self) -> None:
        self._go.touch()

    def drain(self) -> None:
        """Stops every sandbox: SIGTERM drains the fleet and writes the ground truth."""
        self.stop_all()

    def stop(self) -> dict[str, Any]:
        self.drain()
        return dict(json.loads((self.root / "ground-truth.json").read_text()))


def metric(port: int, name: str) -> float:
    import urllib.request

    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    except OSError:
        return -1.0
    return next((float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " ")), -1.0)


def group_caught_up(bootstrap: str, group: str, topic: str) -> bool:
    from kafka import KafkaConsumer, TopicPartition

    # a consumer that names the group but never subscribes reads its offsets without joining
    cons = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        parts = [TopicPartition(topic, p) for p in range(4)]
        ends = cons.end_offsets(parts)
        return all((cons.committed(tp) or 0) >= end for tp, end in ends.items())
    finally:
        cons.close(autocommit=False)


def drain_and_catch_up(sim: Any, fleet: Any, bootstrap: str, group: str, topic: str, timeout_s: float = 90) -> None:
    """Stops every simulated sandbox, lets the collectors see the stops and deliver their
    spools, then waits until the consumer group has committed every message."""
    sim.drain()
    assert wait_for_stops(fleet.agents, 30), "the collectors did not see every stop"
    fleet.stop(sink_timeout_s=30)
    deadline = time.monotonic() + timeout_s
    while not group_caught_up(bootstrap, group, topic):
        assert time.monotonic() < deadline, "the processors did not catch up"
        time.sleep(1)


def sandboxes_off(ch: Any, truth: dict[str, Any]) -> list[str]:
    """Each sandbox whose CPU differs from the truth, or whose allocated vCPU or GiB time
    differs by more than 10 ms, with what happened to it: its restarts, its start and stop."""
    rows = ch.execute(
        "SELECT sandbox_id, sum(cpu_used_us), sum(vcpu_alloc_mcpu_ms), sum(mem_alloc_byte_ms), min(start_ms), "
        "max(end_ms) FROM usage_intervals FINAL GROUP BY sandbox_id"
    )
    life = dict(
        ch.execute(
            "SELECT sandbox_id, max(ts_ms) FROM sandbox_lifecycle FINAL WHERE event = 'stop' GROUP BY sandbox_id"
        )
    )
    seen = {r[0]: [int(x) for x in r[1:]] for r in rows}
    off = []
    for s in truth["sandboxes"]:
        cpu, alloc, mem_alloc, first, last = seen.get(s["sandbox_id"], (0, 0, 0, 0, 0))
        alloc_ms = (alloc - s["vcpu_alloc_mcpu_ms"]) / s["vcpu_millicores"]
        mem_ms = (mem_alloc - s["mem_alloc_byte_ms"]) / s["memory_bytes"]
        if cpu != s["cpu_used_us"] or abs(alloc_ms) > 10 or abs(mem_ms) > 10:
            off.append(
                f"sandbox {s['sandbox_id']} ({s['tenant']}, {s['node']}): cpu {cpu - s['cpu_used_us']:+d} us, "
                f"allocated {alloc_ms:+.0f} ms (GiB {mem_ms:+.0f} ms), restarts at {s['restarted_at']}, "
                f"start {s['start_ms']} (first interval {first}), "
                f"stop {s['stop_ms']} (seen {life.get(s['sandbox_id'])}, last interval {last})"
            )
    return off
