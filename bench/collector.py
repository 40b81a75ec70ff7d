"""Collector: CPU time per scrape of one simulated 50-sandbox node, through the real sources.

kata-monitor exports every family (`--kata-detail`, ~310 series per sandbox), as a real one does.
The simulator runs in a child process (`sandmeter simulate`), so this process holds only
the collector: `time.process_time()` around a scrape is the collector's own CPU across its
source threads (kata-monitor over loopback HTTP, cgroup, /proc, host, pod network), building,
encoding and spooling the batch; the stamping process's CPU is read from its /proc entry.
Beside it, in the same run, a baseline reads exactly the files and directories one scrape
read (recorded through Python's audit events) and GETs kata-monitor's body once, doing
nothing with the bytes. Target: a scrape costs <= 2x that baseline.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from collectors.agent import build_agent
from collectors.base import read_file
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


class Recorder:
    """Which files and directories a scrape reads, through Python's audit events (`open`,
    `os.listdir`, `os.scandir`), so the baseline can read exactly those."""

    def __init__(self, root: Path) -> None:
        self.root = str(root)
        self.on = False
        self.files: list[str] = []
        self.dirs: list[str] = []
        sys.addaudithook(self._hook)

    def _hook(self, event: str, args: tuple[object, ...]) -> None:
        if not self.on or not args or not isinstance(args[0], (str, bytes, Path)):
            return
        path = os.fsdecode(args[0])
        if not path.startswith(self.root):
            return
        if event == "open" and (len(args) < 3 or not isinstance(args[2], int) or args[2] & 3 == os.O_RDONLY):
            self.files.append(path)
        elif event in ("os.listdir", "os.scandir"):
            self.dirs.append(path)


def read_only(files: list[str], dirs: list[str], url: str) -> None:
    """The baseline: the same bytes a scrape reads, and nothing done with them."""
    for f in files:
        with contextlib.suppress(OSError):
            read_file(f)
    for d in dirs:
        with contextlib.suppress(OSError):
            os.listdir(d)
    with urllib.request.urlopen(url + "/metrics", timeout=10) as resp:
        resp.read()


def child_cpu_s(pid: int) -> float:
    """utime + stime of a child process (the stamping process), in seconds."""
    f = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def main(sandboxes: int = 50, repeats: int = 30) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "fleet"
        sim = subprocess.Popen(
            [sys.executable, "-m", "sandmeter.cli", "simulate", "--root", str(root), "--nodes", "1",
             "--sandboxes", str(sandboxes), "--kata-detail", "--churn-per-min", "0", "--restart-per-min", "0"],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        rec = Recorder(root)
        try:
            deadline = time.monotonic() + 30
            while not (root / "fleet.json").exists():
                if time.monotonic() > deadline or sim.poll() is not None:
                    raise RuntimeError("the simulator did not start")
                time.sleep(0.1)
            nd = json.loads((root / "fleet.json").read_text())["nodes"][0]
            while len(os.listdir(nd["sandbox_dir"])) < sandboxes:  # every sandbox is there
                if time.monotonic() > deadline:
                    raise RuntimeError("the simulator did not create its sandboxes")
                time.sleep(0.1)
            sink = SpoolingSink(Path(tmp) / "spool")
            # the simulated kata-monitor renders ~15,700 lines in Python: slow on a busy machine
            settings = collector_settings(nd, metrics_port=0, source_timeout_s=20.0)
            agent = build_agent(settings, CollectorRegistry(), sink)
            agent.watcher.start(on_start=agent.on_start, on_stop=agent.on_stop)
            for _ in range(2):
                agent.scrape()  # warm: labels, cgroup paths, parse cache
            rec.on = True
            agent.scrape()
            rec.on = False
            stamper = getattr(agent.watcher._dw, "proc", None)
            cpu, wall, samples, base = [], [], [], []
            child0 = child_cpu_s(stamper.pid) if stamper else 0.0
            for _ in range(repeats):
                c0, t0 = time.process_time(), time.perf_counter()
                batch = agent.scrape()
                cpu.append(time.process_time() - c0)
                wall.append(time.perf_counter() - t0)
                samples.append(len(batch))
                c0 = time.process_time()
                read_only(rec.files, rec.dirs, nd["kata_monitor_url"])
                base.append(time.process_time() - c0)
                time.sleep(0.05)
            child = (child_cpu_s(stamper.pid) - child0) / repeats if stamper else 0.0
            alive = agent.watcher.alive()
            per_source: dict[str, list[float]] = {src.name: [] for src in agent.sources}
            readings: list[Any] = []
            for _ in range(repeats):
                readings = []
                for src in agent.sources:
                    c0 = time.process_time()
                    readings.append(src.read(alive))
                    per_source[src.name].append(time.process_time() - c0)
            build = []
            for _ in range(repeats):
                c0 = time.process_time()
                agent._build(readings, [], alive, wall_ms())
                build.append(time.process_time() - c0)
            agent.close()
            sink.close(0)
        finally:
            sim.terminate()
            sim.wait(timeout=30)
    med = statistics.median
    print(
        f"collector ({sandboxes} sandboxes, {med(samples):.0f} samples/scrape, {repeats} scrapes): "
        f"CPU per scrape median {med(cpu) * 1e3:.1f} ms (max {max(cpu) * 1e3:.1f}), wall median "
        f"{med(wall) * 1e3:.1f} ms; read-only baseline (the same {len(rec.files)} files, {len(rec.dirs)} directory "
        f"listings, one GET of kata-monitor) median {med(base) * 1e3:.1f} ms: ratio {med(cpu) / med(base):.2f}x; "
        f"stamping process {child * 1e3:.2f} ms CPU per scrape; per source "
        + ", ".join(f"{k} {med(v) * 1e3:.1f}" for k, v in per_source.items())
        + f" ms; build+encode+spool {med(build) * 1e3:.2f} ms; {sink.last_bytes / samples[-1]:.2f} wire bytes/sample"
    )


if __name__ == "__main__":
    main()
