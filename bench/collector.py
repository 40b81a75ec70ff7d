"""Collector: one scrape of a simulated 50-sandbox node, through the real sources.

Reports the median wall time of building and encoding the batch from the sources'
readings (the collector's own per-sample work), and of a whole scrape (file reads,
kata-monitor over loopback HTTP, build, encode) and its bytes per sample.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from prometheus_client import CollectorRegistry

from collectors.agent import build_agent
from collectors.sim.model import FleetSpec
from collectors.sim.runner import Simulator
from sandmeter.clock import wall_ms
from sandmeter.settings import CollectorSettings
from sandmeter.wire import Encoder, SampleBatch


class EncodingSink:
    """Encodes like the Kafka sink, sends nowhere."""

    def __init__(self) -> None:
        self.enc = Encoder()
        self.last_bytes = 0

    def put(self, batch: SampleBatch) -> None:
        self.last_bytes = len(self.enc.encode(batch))

    def close(self, timeout_s: float) -> None:
        pass


def main(sandboxes: int = 50, repeats: int = 30) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        sim = Simulator(Path(tmp), FleetSpec(nodes=1, sandboxes=sandboxes, churn_per_min=0, reset_per_min=0))
        sim.start()
        nd = sim.describe()["nodes"][0]
        sink = EncodingSink()
        settings = CollectorSettings(
            node_id=nd["node_id"],
            cgroup_root=Path(nd["cgroup_root"]),
            proc_root=Path(nd["proc_root"]),
            sandbox_dirs=(Path(nd["sandbox_dir"]),),
            bundle_dirs=(Path(nd["bundle_dir"]),),
            kata_monitor_url=nd["kata_monitor_url"],
            metrics_port=0,
        )
        agent = build_agent(settings, CollectorRegistry(), sink)
        agent.watcher.start(on_start=agent.on_start, on_stop=agent.on_stop)
        agent.scrape()  # warm: labels, cgroup paths, parse cache
        readings = [src.read(agent.watcher.alive()) for src in agent.sources]
        alive = agent.watcher.alive()
        build, scrape = [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            batch = agent._build(readings, [], alive, wall_ms())
            build.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            agent.scrape()
            scrape.append(time.perf_counter() - t0)
        agent.close()
        sim.stop()
    n = len(batch)
    print(
        f"collector ({sandboxes} sandboxes, {n} samples/scrape): build+encode median "
        f"{statistics.median(build) * 1e3:.2f} ms; whole scrape median {statistics.median(scrape) * 1e3:.1f} ms; "
        f"{sink.last_bytes / n:.2f} bytes/sample"
    )
