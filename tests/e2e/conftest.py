"""Helpers for end-to-end tests: real collectors over a simulated fleet."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from collectors.agent import CollectorAgent, build_agent, run_agent
from collectors.sim.runner import Simulator
from collectors.sink import BatchSink
from sandmeter.settings import CollectorSettings
from sandmeter.wire import SampleBatch


class HeldSink:
    """Holds a node's batches back (a node cut off from Kafka), then delivers them in order.

    Wraps the node's real KafkaSink, so the held batches reach the real broker, late.
    """

    def __init__(self, inner: BatchSink) -> None:
        self.inner = inner
        self.held: list[SampleBatch] = []
        self.holding = True
        self._lock = threading.Lock()

    def put(self, batch: SampleBatch) -> None:
        with self._lock:
            if self.holding:
                self.held.append(batch)
                return
        self.inner.put(batch)

    def release(self) -> int:
        with self._lock:
            for b in self.held:
                self.inner.put(b)
            n, self.held, self.holding = len(self.held), [], False
        return n

    def close(self, timeout_s: float) -> None:
        self.release()
        self.inner.close(timeout_s)


class RunningCollectors:
    def __init__(self, agents: list[CollectorAgent], threads: list[threading.Thread], stop: threading.Event) -> None:
        self.agents, self.threads, self.stop_event = agents, threads, stop
        self._stopped = False

    def release(self) -> int:
        """Delivers what the held nodes' sinks kept back; returns how many batches."""
        return sum(a.sink.release() for a in self.agents if isinstance(a.sink, HeldSink))

    def stop(self, sink_timeout_s: float) -> None:
        """Stops scraping and watching, then gives each sink time to deliver its spool (once)."""
        if self._stopped:
            return
        self._stopped = True
        self.stop_event.set()
        for t in self.threads:
            t.join(timeout=10)
        for a in self.agents:
            a.close()
            a.sink.close(timeout_s=sink_timeout_s)


def start_collectors(
    sim: Simulator, bootstrap: str, topic: str, spool: Path, interval_s: float, held: tuple[str, ...] = ()
) -> RunningCollectors:
    """A real collector per simulated node, each scraping on its own thread until stopped.

    The nodes in `held` keep their batches back until `release()` (see HeldSink).
    """
    stop = threading.Event()
    agents: list[CollectorAgent] = []
    threads = []
    for nd in sim.describe()["nodes"]:
        cs = CollectorSettings(
            node_id=nd["node_id"], kafka_bootstrap=bootstrap, topic=topic,
            cgroup_root=Path(nd["cgroup_root"]), proc_root=Path(nd["proc_root"]),
            sandbox_dirs=(Path(nd["sandbox_dir"]),), bundle_dirs=(Path(nd["bundle_dir"]),),
            kata_monitor_url=nd["kata_monitor_url"], spool_dir=spool, spool_fsync=False,
        )  # fmt: skip
        agent = build_agent(cs, CollectorRegistry())
        if nd["node_id"] in held:
            agent.sink = HeldSink(agent.sink)
        agents.append(agent)
        threads.append(threading.Thread(target=run_agent, args=(agent, interval_s, stop, 60.0), daemon=True))
    for t in threads:
        t.start()
    return RunningCollectors(agents, threads, stop)


@pytest.fixture
def collectors() -> Any:
    """`start_collectors`, for tests to call with their simulator, topic and stop event."""
    return start_collectors
