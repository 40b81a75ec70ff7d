"""`sandmeter simulate`: a fleet of simulated Kata nodes on loopback, on the real clock.

Each node gets a directory with `sys/fs/cgroup`, `proc` and `run/vc/sbs`, and a
kata-monitor-compatible HTTP server on 127.0.0.1. `fleet.json` in the root says where each
node's roots and URL are; `ground-truth.json` is written on stop.
"""

from __future__ import annotations

import json
import logging
import random
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from collectors.sim.model import Fleet, FleetSpec, SimSandbox
from collectors.sim.render import NodeTree, exposition, write_atomic
from contracts.clock import wall_ms

log = logging.getLogger(__name__)
CGROUP_GRACE_MS = 3000  # cgroups outlive the sandbox directory briefly, as with a real shim


class _KataMonitor(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, render: Callable[[], str]) -> None:
        self.render = render
        super().__init__(("127.0.0.1", 0), _Handler)

    def handle_error(self, request: Any, _client_address: Any) -> None:
        pass  # a collector that timed out and hung up: nothing to report


class _Handler(BaseHTTPRequestHandler):
    server: _KataMonitor

    def do_GET(self) -> None:
        if self.path.split("?")[0] != "/metrics":
            self.send_error(404)
            return
        body = self.server.render().encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *_args: Any) -> None:
        pass


class Simulator:
    def __init__(
        self,
        root: Path,
        spec: FleetSpec,
        tick_s: float = 0.2,
        clock_ms: Callable[[], int] = wall_ms,
    ) -> None:
        self.root, self.tick_s, self.clock_ms = root, tick_s, clock_ms
        self._lock = threading.Lock()
        self.fleet = Fleet(spec, clock_ms())
        self.trees = {n: NodeTree(root / n) for n in self.fleet.node_ids}
        self._rng = random.Random(spec.seed + 1)
        self._pending_rm: list[tuple[int, SimSandbox]] = []
        self._servers = {n: _KataMonitor(self._renderer(n)) for n in self.fleet.node_ids}
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        for sb in self.fleet.live():
            self.trees[sb.node].create(sb)
        self._write_all(self.fleet.now_ms)
        self.describe()

    def _renderer(self, node: str) -> Callable[[], str]:
        def render() -> str:
            with self._lock:
                return exposition(self.fleet.live(node), self._rng, self.fleet.spec.kata_detail)

        return render

    def url(self, node: str) -> str:
        host, port = self._servers[node].server_address[:2]
        return f"http://{host!s}:{port}"

    def describe(self) -> dict[str, Any]:
        desc = {
            "nodes": [
                {
                    "node_id": n,
                    "cgroup_root": str(t.cgroup),
                    "proc_root": str(t.proc),
                    "sandbox_dir": str(t.sbs),
                    "bundle_dir": str(t.bundles),
                    "kata_monitor_url": self.url(n),
                }
                for n, t in self.trees.items()
            ]
        }
        write_atomic(self.root / "fleet.json", json.dumps(desc, indent=2))
        return desc

    def start(self) -> None:
        for srv in self._servers.values():
            t = threading.Thread(target=srv.serve_forever, name="sim-kata-monitor", daemon=True)
            t.start()
            self._threads.append(t)
        t = threading.Thread(target=self._loop, name="sim-fleet", daemon=True)
        t.start()
        self._threads.append(t)

    def _loop(self) -> None:
        while not self._stop.wait(self.tick_s):
            self.tick()

    def set_cpu_load(self, fraction: float, tenant: str | None = None) -> None:
        """From now on every live sandbox (of `tenant`) uses `fraction` of its vCPUs."""
        with self._lock:
            now = max(self.clock_ms(), self.fleet.now_ms)
            for sb in self.fleet.live():
                if tenant is None or sb.tenant == tenant:
                    sb.advance(now)  # usage so far at the old rate
                    sb.cpu_rate_us_per_ms = int(fraction * sb.vcpu_milli)

    def tick(self) -> None:
        now = self.clock_ms()
        with self._lock:
            dt = now - self.fleet.now_ms
            self.fleet.now_ms = now
            started, stopped = self.fleet.step(now, dt)
            for sb in stopped:
                self._stop_files(sb, now)
            for sb in started:
                self.trees[sb.node].create(sb)
            self._write_all(now)
            self._gc(now)

    def _stop_files(self, sb: SimSandbox, now: int) -> None:
        tree = self.trees[sb.node]
        # the VM stops here, not at the start of a tick that first rewrites every other
        # sandbox's files; its teardown (writing its final counters) ends when its directory goes
        self.fleet.stop_sandbox(sb, max(now, self.clock_ms()))
        tree.update(sb)  # final counters stay readable for the collector's last sample
        sb.torn_down(self.clock_ms())
        tree.remove_sandbox_dir(sb)
        tree.remove_proc(sb)
        self._pending_rm.append((now + CGROUP_GRACE_MS, sb))

    def _write_all(self, now: int) -> None:
        for node, tree in self.trees.items():
            live = self.fleet.live(node)
            for sb in live:
                tree.update(sb)
            tree.write_host(now, live)

    def _gc(self, now: int) -> None:
        due = [p for p in self._pending_rm if p[0] <= now]
        self._pending_rm = [p for p in self._pending_rm if p[0] > now]
        for _, sb in due:
            self.trees[sb.node].remove_cgroups(sb)

    def drain(self) -> None:
        """Stops every sandbox now, as at the end of a billing test."""
        now = self.clock_ms()
        with self._lock:
            for sb in self.fleet.live():
                sb.advance(now)
            self.fleet.now_ms = now
            for sb in self.fleet.live():
                self._stop_files(sb, now)

    def truth(self) -> dict[str, Any]:
        with self._lock:
            return self.fleet.truth()

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        for t in self._threads:
            if t.name == "sim-fleet":
                t.join(timeout=10)  # no tick may write into a tree being torn down
        for srv in self._servers.values():
            srv.shutdown()
            srv.server_close()
        truth = self.truth()
        write_atomic(self.root / "ground-truth.json", json.dumps(truth, indent=1))
        return truth
