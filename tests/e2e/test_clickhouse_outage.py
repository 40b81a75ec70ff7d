"""ClickHouse goes away for longer than Kafka's max.poll.interval, then comes back.

Real collectors -> Tansu -> a `sandmeter process` child -> ClickHouse, which the test stops
for 25 s, longer than the processor's 10 s poll interval: the processor retries its write
and pauses consumption (still polling, so it stays in its group; before the chain of steps it
blocked and dropped out), and when ClickHouse is back it writes, resumes and loses nothing:
per-tenant CPU and IO equal truth exactly.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from processes import Processors, drain_and_catch_up, metric

from collectors.sim.runner import Simulator
from collectors.sim.spec import FleetSpec
from contracts.names import PROCESSOR_CHECKPOINTS as CHECKPOINTS
from contracts.names import PROCESSOR_WRITE_FAILURES as WRITE_FAILURES
from sandmeter.stack import Stack, create_topics
from sandmeter.stack.procs import free_port

pytestmark = pytest.mark.e2e


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return -1.0


def test_clickhouse_outage_longer_than_the_poll_interval_loses_nothing(
    stack: Stack, db: tuple[str, Any], tmp_path: Path, collectors: Any
) -> None:
    name, ch = db
    topic = f"samples-{name}"
    create_topics(stack.kafka_bootstrap, 4, (topic, topic + ".dlq"))
    procs = Processors(stack, name, topic, f"group-{name}", tmp_path)
    procs.env["SANDMETER_PROCESSOR_MAX_POLL_INTERVAL_MS"] = "10000"
    sim = Simulator(tmp_path / "fleet", FleetSpec(nodes=2, sandboxes=8, tenants=2, churn_per_min=6, seed=21))
    sim.start()
    fleet = collectors(sim, stack.kafka_bootstrap, topic, tmp_path / "spool", 0.5)
    port = free_port()
    proc = procs.start(metrics_port=port)
    try:
        deadline = time.monotonic() + 60
        while metric(port, CHECKPOINTS) < 1:
            assert time.monotonic() < deadline, "no checkpoint before the outage"
            time.sleep(0.2)
        rss_before = rss_mb(proc.pid)
        stack.clickhouse.stop()
        time.sleep(25)  # the processor's write blocks and retries; its poll interval (10 s) expires
        failures = metric(port, WRITE_FAILURES)
        rss_during = rss_mb(proc.pid)
        assert proc.poll() is None, "the processor died while ClickHouse was away"
        stack.clickhouse.start(stack.settings.start_timeout_s)
        time.sleep(8)
        drain_and_catch_up(sim, fleet, stack.kafka_bootstrap, f"group-{name}", topic)
    finally:
        fleet.stop_event.set()
        if stack.clickhouse.pid() is None:
            stack.clickhouse.start(stack.settings.start_timeout_s)
        procs.stop_all()
        truth = sim.stop()

    print(f"write failures during the outage: {failures:.0f}; RSS {rss_before:.0f} MB -> {rss_during:.0f} MB")
    assert failures >= 2  # it kept retrying rather than dying or dropping the flush
    assert rss_during < rss_before + 50  # consumption paused: memory stays bounded by one flush
    rows = ch.execute("SELECT tenant, sum(cpu_used_us), sum(io_read_bytes) FROM usage_intervals FINAL GROUP BY tenant")
    got = {r[0]: (int(r[1]), int(r[2])) for r in rows}
    assert got == {t: (v["cpu_used_us"], v["io_read_bytes"]) for t, v in truth["tenants"].items()}
