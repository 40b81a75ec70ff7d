"""`sandmeter process` children and group/metrics probes shared by the end-to-end tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from collectors.agent import wait_for_stops
from sandmeter.stack import Stack


class Processors:
    """`sandmeter process` child processes sharing one consumer group."""

    def __init__(self, stack: Stack, db: str, topic: str, group: str, logs: Path) -> None:
        self.env = {
            **os.environ,
            "SANDMETER_PROCESSOR_KAFKA_BOOTSTRAP": stack.kafka_bootstrap,
            "SANDMETER_PROCESSOR_TOPIC": topic,
            "SANDMETER_PROCESSOR_DEADLETTER_TOPIC": topic + ".dlq",
            "SANDMETER_PROCESSOR_GROUP_ID": group,
            "SANDMETER_PROCESSOR_CLICKHOUSE_PORT": str(stack.settings.clickhouse_tcp_port),
            "SANDMETER_PROCESSOR_CLICKHOUSE_DATABASE": db,
            "SANDMETER_PROCESSOR_METRICS_HOST": "127.0.0.1",
            "SANDMETER_PROCESSOR_METRICS_PORT": "0",
            "SANDMETER_PROCESSOR_FLUSH_INTERVAL_S": "0.5",
            "SANDMETER_PROCESSOR_CHECKPOINT_INTERVAL_S": "6",
        }
        self.logs = logs
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, metrics_port: int = 0) -> subprocess.Popen[bytes]:
        log = open(self.logs / f"processor-{len(self.procs)}.log", "wb")  # noqa: SIM115 - the child owns it
        env = {**self.env, "SANDMETER_PROCESSOR_METRICS_PORT": str(metrics_port)}
        p = subprocess.Popen([sys.executable, "-m", "sandmeter.cli", "process"], env=env, stdout=log, stderr=log)
        self.procs.append(p)
        return p

    def stop_all(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()


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
