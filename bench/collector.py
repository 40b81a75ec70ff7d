"""Collector: CPU time per scrape of one simulated 50-sandbox node, through the real sources.

kata-monitor exports every family (`--kata-detail`, ~310 series per sandbox), as a real one does.
The simulator runs in a child process (`sandmeter simulate`), so this process holds only
the collector: `time.process_time()` around a scrape is the collector's own CPU across its
source threads (kata-monitor over loopback HTTP, cgroup, /proc, host), building, encoding
and spooling the batch. Target: <= 100 ms per scrape, 2% of a core at the 5 s interval.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from prometheus_client import CollectorRegistry

from collectors.agent import build_agent
from collectors.sim import collector_settings
from collectors.spool import DiskSpool, SpoolRecord
from contracts.clock import wall_ms
from contracts.wire import Encoder, SampleBatch


class SpoolingSink:
    """Encodes and spools like the Kafka sink (fsync on), then discards instead of sending."""

    def __init__(self, directory: Path) -> None:
        self.enc = Encoder()
        self.spool = DiskSpool(directory, 1 << 30, 1000)
        self.last_bytes = 0

    def put(self, batch: SampleBatch) -> None:
        payload = self.enc.encode(batch)
        self.spool.append(SpoolRecord(batch.node, batch.batch_id, payload))
        head = self.spool.head()
        if head:
            self.spool.pop(head[0])
        self.last_bytes = len(payload)

    def close(self, timeout_s: float) -> None:
        self.spool.close()


def main(sandboxes: int = 50, repeats: int = 30) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "fleet"
        sim = subprocess.Popen(
            [sys.executable, "-m", "sandmeter.cli", "simulate", "--root", str(root), "--nodes", "1",
             "--sandboxes", str(sandboxes), "--kata-detail"],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 30
            while not (root / "fleet.json").exists():
                if time.monotonic() > deadline or sim.poll() is not None:
                    raise RuntimeError("the simulator did not start")
                time.sleep(0.1)
            nd = json.loads((root / "fleet.json").read_text())["nodes"][0]
            sink = SpoolingSink(Path(tmp) / "spool")
            settings = collector_settings(nd, metrics_port=0)
            agent = build_agent(settings, CollectorRegistry(), sink)
            agent.watcher.start(on_start=agent.on_start, on_stop=agent.on_stop)
            agent.scrape()  # warm: labels, cgroup paths, parse cache
            cpu, wall, samples = [], [], []
            for _ in range(repeats):
                c0, t0 = time.process_time(), time.perf_counter()
                batch = agent.scrape()
                cpu.append(time.process_time() - c0)
                wall.append(time.perf_counter() - t0)
                samples.append(len(batch))
                time.sleep(0.05)
            readings = [src.read(agent.watcher.alive()) for src in agent.sources]
            build = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                agent._build(readings, [], agent.watcher.alive(), wall_ms())
                build.append(time.perf_counter() - t0)
            agent.close()
            sink.close(0)
        finally:
            sim.terminate()
            sim.wait(timeout=30)
    print(
        f"collector ({sandboxes} sandboxes, {statistics.median(samples):.0f} samples/scrape, {repeats} scrapes): "
        f"CPU per scrape median {statistics.median(cpu) * 1e3:.1f} ms (max {max(cpu) * 1e3:.1f}), "
        f"wall median {statistics.median(wall) * 1e3:.1f} ms; build+encode median "
        f"{statistics.median(build) * 1e3:.2f} ms; {sink.last_bytes / samples[-1]:.2f} wire bytes/sample"
    )


if __name__ == "__main__":
    main()
