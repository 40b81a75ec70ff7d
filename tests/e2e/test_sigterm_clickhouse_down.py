"""SIGTERM ends `sandmeter process` within 10 s while ClickHouse is down, and nothing is lost.

Real collectors -> Tansu -> `sandmeter process` children -> ClickHouse. Once the first
processor has checkpointed, ClickHouse is stopped; its lag gauge must keep growing (consumption
is paused, the collectors keep sending), and while it retries its write it gets SIGTERM and
must exit (code 0) within 10 s, checkpointing nothing it did not write. A second processor
started while ClickHouse is still down refuses to start (exit 3, one line naming ClickHouse).
Then ClickHouse returns, a third processor finishes the stream, and per-tenant CPU and IO
equal the simulator's truth exactly. (A partition assigned during an outage waits, paused,
for its checkpoint: tests/pipeline/test_processor.py.)
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from processes import Processors, drain_and_catch_up, metric

from collectors.sim.model import FleetSpec
from collectors.sim.runner import Simulator
from contracts.names import PROCESSOR_CHECKPOINTS as CHECKPOINTS
from contracts.names import PROCESSOR_LAG as LAG
from contracts.names import PROCESSOR_WRITE_FAILURES as WRITE_FAILURES
from sandmeter.stack import Stack, create_topics
from sandmeter.stack.procs import free_port

pytestmark = pytest.mark.e2e
EXIT_WITHIN_S = 10.0


def sigterm(proc: subprocess.Popen[bytes]) -> float:
    """Seconds from SIGTERM to the exit; fails past EXIT_WITHIN_S or on a non-zero exit code."""
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(timeout=EXIT_WITHIN_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"the processor ignored SIGTERM for {EXIT_WITHIN_S} s")
    assert code == 0
    return time.monotonic() - t0


def lag(port: int) -> float:
    """The processor's consumer lag summed over its partitions (-1: not served)."""
    import urllib.request

    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    except OSError:
        return -1.0
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(LAG + "{"))


def wait_for(cond: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def test_sigterm_with_clickhouse_down_exits_in_time_and_loses_nothing(
    stack: Stack, db: tuple[str, Any], tmp_path: Path, collectors: Any
) -> None:
    name, ch = db
    topic = f"samples-{name}"
    create_topics(stack.kafka_bootstrap, 4, (topic, topic + ".dlq"))
    procs = Processors(stack, name, topic, f"group-{name}", tmp_path)
    sim = Simulator(tmp_path / "fleet", FleetSpec(nodes=2, sandboxes=6, tenants=2, churn_per_min=6, seed=33))
    sim.start()
    fleet = collectors(sim, stack.kafka_bootstrap, topic, tmp_path / "spool", 0.5)
    port = free_port()
    first = procs.start(metrics_port=port)
    try:
        wait_for(lambda: metric(port, CHECKPOINTS) >= 1, 60, "no checkpoint before the outage")
        stack.clickhouse.stop()
        wait_for(lambda: metric(port, WRITE_FAILURES) >= 2, 30, "the processor never retried a write")
        lag_before = lag(port)
        wait_for(lambda: lag(port) > lag_before, 20, "the lag gauge froze during the outage")
        mid_retry = sigterm(first)
        t0 = time.monotonic()
        second = procs.start()  # ClickHouse still down: it refuses to start, saying why
        assert second.wait(timeout=EXIT_WITHIN_S + 20) == 3
        starting = time.monotonic() - t0
        stack.clickhouse.start(stack.settings.start_timeout_s)
        procs.start()
        drain_and_catch_up(sim, fleet, stack.kafka_bootstrap, f"group-{name}", topic)
    finally:
        fleet.stop_event.set()
        if stack.clickhouse.pid() is None:
            stack.clickhouse.start(stack.settings.start_timeout_s)
        procs.stop_all()
        truth = sim.stop()

    print(f"SIGTERM to exit with ClickHouse down: {mid_retry:.2f} s mid-retry; a start refused in {starting:.2f} s; "
          f"lag grew from {lag_before:.0f} during the outage")  # fmt: skip
    rows = ch.execute("SELECT tenant, sum(cpu_used_us), sum(io_read_bytes) FROM usage_intervals FINAL GROUP BY tenant")
    got = {r[0]: (int(r[1]), int(r[2])) for r in rows}
    assert got == {t: (v["cpu_used_us"], v["io_read_bytes"]) for t, v in truth["tenants"].items()}
