"""Helpers for end-to-end tests: real collectors over a simulated fleet."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from processes import Children, Collectors
from prometheus_client import CollectorRegistry, start_http_server
from support import private_db

from billing import ApiSettings
from collectors.agent import CollectorAgent, build_agent, run_agent
from collectors.sim.runner import Simulator, collector_settings
from collectors.sim.spec import FaultSpec, FleetSpec
from collectors.sink import BatchSink
from contracts.clock import wall_ms
from contracts.names import HEALTH_INCIDENT as INCIDENT
from contracts.wire import SampleBatch
from dashboards.rules import API_JOB, COLLECTOR_JOB, PROCESSOR_JOB, SCALE_JOB
from pipeline import build_processor
from pipeline.settings import ProcessorSettings
from sandmeter.demo import PLANS, serve_api
from sandmeter.stack import AlertReceiver, Delivery, ServiceError, Stack, Target, create_topics
from sandmeter.stack.procs import free_port
from sandmeter.stack.users import API, BILLING, SCALE, WRITER


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
        cs = collector_settings(nd, kafka_bootstrap=bootstrap, topic=topic, spool_dir=spool, spool_fsync=False)
        agent = build_agent(cs, CollectorRegistry())
        if nd["node_id"] in held:
            agent.sink = HeldSink(agent.sink)
        agents.append(agent)
        threads.append(threading.Thread(target=run_agent, args=(agent, interval_s, stop, 60.0), daemon=True))
    for t in threads:
        t.start()
    for a in agents:  # watching before the caller starts the simulator: every start is seen happen
        assert a.watcher.ready.wait(10), f"{a.node}: the sandbox watcher did not start"
    return RunningCollectors(agents, threads, stop)


@pytest.fixture
def shm_path(tmp_path: Path) -> Iterator[Path]:
    """A temporary directory on tmpfs where there is one (as /run, /sys and /proc are on a node):
    a simulated fleet there creates and removes a sandbox in a millisecond, not tens of them."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or not os.access(shm, os.W_OK):
        yield tmp_path
        return
    d = Path(tempfile.mkdtemp(prefix="sandmeter-", dir=shm))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def collectors() -> Any:
    """`start_collectors`, for tests to call with their simulator, topic and stop event."""
    return start_collectors


@dataclass
class FaultRun:
    """One simulator run with an injected hang and stall through every real component, watched
    by the stack's Prometheus and Alertmanager, ending with one collector killed."""

    db: str
    ch: Any
    truth: dict[str, Any]
    open_now: set[tuple[str, str]]  # incidents open on the processor's gauges mid-run
    alerts_topic: str
    metrics_text: dict[str, str]  # "processor" / "collector" / "api" / "scale" -> what their /metrics served
    from_ms: int
    to_ms: int
    alerts: list[Delivery]  # what Alertmanager delivered to the webhook during the run
    killed: tuple[str, float]  # the node whose collector was SIGKILLed after the drain, and when (Unix s)


def _serve(registry: CollectorRegistry) -> int:
    port = free_port()
    start_http_server(port, addr="127.0.0.1", registry=registry)  # what `sandmeter process|collect` run
    return port


def _stops_missing(ch: Any, sandboxes: set[str]) -> set[str]:
    rows = ch.execute("SELECT DISTINCT sandbox_id FROM sandbox_lifecycle FINAL WHERE event = 'stop'")
    return sandboxes - {str(r[0]) for r in rows}


@pytest.fixture(scope="session")
def fault_run(
    stack: Stack, alert_receiver: AlertReceiver, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FaultRun]:
    """Simulator (a hung QEMU on one node, an IO stall on another) -> `sandmeter collect`
    children -> Tansu -> processor -> ClickHouse, with the billing API and a `sandmeter scale`
    child beside them, all watched by the stack's Prometheus, whose alerts reach the session's
    webhook through its Alertmanager. After the drain one collector is killed (SIGKILL).
    Shared by the health-detection, dashboard and alert-delivery tests."""
    tmp = tmp_path_factory.mktemp("fault-run")
    with private_db(stack) as (name, ch):
        topic, alerts, decisions = f"samples-{name}", f"alerts-{name}", f"decisions-{name}"
        create_topics(stack.kafka_bootstrap, 4, (topic, topic + ".dlq", alerts, decisions))
        faults = (FaultSpec("qemu_hang", at_s=5, duration_s=45, node=0), FaultSpec("io_stall", at_s=5, node=1))
        spec = FleetSpec(nodes=3, sandboxes=12, tenants=3, churn_per_min=6, reset_per_min=0, seed=9, faults=faults)
        sim = Simulator(tmp / "fleet", spec)
        t0, from_ms = time.monotonic(), wall_ms()
        sim.start()
        fleet = Collectors(sim.describe()["nodes"], stack.kafka_bootstrap, topic, tmp / "spool", tmp)
        stop_process = threading.Event()
        reg = CollectorRegistry()
        ps = ProcessorSettings(
            kafka_bootstrap=stack.kafka_bootstrap, topic=topic, deadletter_topic=topic + ".dlq",
            alerts_topic=alerts, group_id=f"group-{name}", clickhouse_port=stack.settings.clickhouse_tcp_port,
            clickhouse_database=name, metrics_port=0, flush_interval_s=0.5, **stack.users.settings(WRITER),
        )  # fmt: skip
        proc = build_processor(ps, reg)
        ports = {"processor": _serve(reg), "scale": free_port()}
        pth = threading.Thread(target=proc.run, args=(stop_process,), daemon=True)
        pth.start()
        scale = Children("scale", {
            "SANDMETER_SCALE_KAFKA_BOOTSTRAP": stack.kafka_bootstrap, "SANDMETER_SCALE_TOPIC": decisions,
            "SANDMETER_SCALE_CLICKHOUSE_PORT": str(stack.settings.clickhouse_tcp_port),
            "SANDMETER_SCALE_CLICKHOUSE_DATABASE": name, "SANDMETER_SCALE_METRICS_HOST": "127.0.0.1",
            "SANDMETER_SCALE_METRICS_PORT": str(ports["scale"]), **stack.users.env("SCALE", SCALE),
        }, tmp)  # fmt: skip
        scale.spawn("scale")
        api = ApiSettings(port=free_port(), clickhouse_port=stack.settings.clickhouse_tcp_port,
                          clickhouse_database=name, plans_dir=PLANS, **stack.users.settings(API),
                          **stack.users.settings(BILLING, "billing_"))  # fmt: skip
        ch_factory = lambda: stack.ch(name, API)  # noqa: E731
        killed = sorted(fleet.ports)[-1]  # a node without a fault
        try:
            with serve_api(api, ch_factory):
                fleet.wait_serving(fleet.ports)
                scale.wait_serving({"scale": ports["scale"]})
                watch_from = time.time()
                stack.watch({
                    PROCESSOR_JOB: [Target(ports["processor"])],
                    COLLECTOR_JOB: [Target(port, node) for node, port in fleet.ports.items()],
                    API_JOB: [Target(api.port)],
                    SCALE_JOB: [Target(ports["scale"])],
                })  # fmt: skip
                print(f"every service scraped and its alerts loaded {time.time() - watch_from:.1f} s after watching")
                # the hang opens at ~35 s and closes at ~80 s; the stall opens at ~65 s
                time.sleep(max(0.0, 95 - (time.monotonic() - t0)))
                open_now = {
                    (s.labels["kind"], s.labels["sandbox_id"])
                    for m in reg.collect()
                    if m.name == INCIDENT
                    for s in m.samples
                    if s.value == 1
                }
                ports |= {"collector": fleet.ports[killed], "api": api.port}
                texts = {
                    who: urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
                    for who, port in ports.items()
                }
                live = {s["sandbox_id"] for s in sim.truth()["sandboxes"] if s["stop_ms"] is None}
                sim.drain()  # the stall ends with its sandbox
                deadline = time.monotonic() + 60
                while missing := _stops_missing(ch, live):
                    assert time.monotonic() < deadline, f"the stops of {sorted(missing)} did not reach ClickHouse"
                    time.sleep(0.5)
                # the stall's resolution comes one scrape, one evaluation and one group interval later
                alert_receiver.wait(
                    lambda d: d.name == "SandmeterIOStall" and d.status == "resolved" and d.at >= watch_from, 15
                )
                killed_at = time.time()
                fleet.kill(killed)
                alert_receiver.wait(lambda d: d.name == "SandmeterCollectorDown" and d.at >= killed_at, 30)
        finally:
            with contextlib.suppress(ServiceError):
                stack.watch({})  # the session's Prometheus forgets these services before they stop
            fleet.stop_all()
            scale.stop_all()
            time.sleep(3)
            stop_process.set()
            pth.join(timeout=30)
            proc.close()
            truth = sim.stop()
        delivered = [d for d in alert_receiver.deliveries() if d.at >= watch_from]
        yield FaultRun(name, ch, truth, open_now, alerts, texts, from_ms, wall_ms(), delivered, (killed, killed_at))
