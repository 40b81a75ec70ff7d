"""Helpers for end-to-end tests that need their own ClickHouse database and topics."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from collectors.agent import CollectorAgent, build_agent, run_agent
from collectors.sim.runner import Simulator
from pipeline.migrate import migrate
from pipeline.writer import client
from sandmeter.clock import wall_ms
from sandmeter.settings import CollectorSettings
from sandmeter.stack import Stack


@pytest.fixture
def db(stack: Stack) -> Iterator[tuple[str, Any]]:
    name = f"eo_{uuid.uuid4().hex[:8]}"
    ch = client("127.0.0.1", stack.settings.clickhouse_tcp_port, "default")
    ch.execute(f"CREATE DATABASE {name}")
    dbc = client("127.0.0.1", stack.settings.clickhouse_tcp_port, name)
    migrate(dbc, wall_ms())
    yield name, dbc
    ch.execute(f"DROP DATABASE {name}")


class RunningCollectors:
    def __init__(self, agents: list[CollectorAgent], threads: list[threading.Thread], stop: threading.Event) -> None:
        self.agents, self.threads, self.stop_event = agents, threads, stop
        self._stopped = False

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


def start_collectors(sim: Simulator, bootstrap: str, topic: str, spool: Path, interval_s: float) -> RunningCollectors:
    """A real collector per simulated node, each scraping on its own thread until stopped."""
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
        agents.append(agent)
        threads.append(threading.Thread(target=run_agent, args=(agent, interval_s, stop, 60.0), daemon=True))
    for t in threads:
        t.start()
    return RunningCollectors(agents, threads, stop)


@pytest.fixture
def collectors() -> Any:
    """`start_collectors`, for tests to call with their simulator, topic and stop event."""
    return start_collectors
