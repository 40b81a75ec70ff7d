"""`sandmeter simulate`: a fleet of simulated Kata nodes on loopback, on the real clock.

Each node gets a directory with `sys/fs/cgroup`, `proc` and `run/vc/sbs`, and a
kata-monitor-compatible HTTP server on 127.0.0.1; the host side of each pod's network (veth
counters in `proc/net/dev`, libcni's cached results under `var/lib/cni`) as a bridge CNI
plugin leaves it. `fleet.json` in the root says where each node's roots and URL are;
`ground-truth.json` (every lifetime, and per-tenant totals) is written on stop.
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

from collectors.settings import CollectorSettings
from collectors.sim.katamon import exposition
from collectors.sim.model import Fleet, Happening, SimSandbox
from collectors.sim.render import NodeTree, write_atomic
from collectors.sim.spec import FleetSpec
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
    """Runs the fleet on the real clock: each happening (a start, a stop, a restart) when it is
    due, and every `tick_s` the files of every live sandbox, so scrapes see counters move."""

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
        self._later: list[tuple[int, str, SimSandbox]] = []  # (due ms, "net" | "cgroups", sandbox)
        self._servers = {n: _KataMonitor(self._renderer(n)) for n in self.fleet.node_ids}
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self._drained = False
        self._next_tick = self.fleet.now_ms
        for tree in self.trees.values():  # the host's files; sandboxes appear in start()
            tree.write_host(self.fleet.now_ms, [])
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
                    "cni_cache_dir": str(t.cni),
                    "sys_class_net": str(t.sysnet),
                    "kata_monitor_url": self.url(n),
                }
                for n, t in self.trees.items()
            ]
        }
        write_atomic(self.root / "fleet.json", json.dumps(desc, indent=2))
        return desc

    def start(self) -> None:
        """Creates the initial sandboxes (collectors started before see each one appear) and runs."""
        with self._lock:
            for sb in self.fleet.live():
                tree = self.trees[sb.node]
                tree.prepare(sb)
                sb.begin(*tree.publish(sb, self.clock_ms))  # the truth starts when its directory appears
            self._write_all(self.clock_ms())
        for srv in self._servers.values():
            t = threading.Thread(target=srv.serve_forever, name="sim-kata-monitor", daemon=True)
            t.start()
            self._threads.append(t)
        t = threading.Thread(target=self._loop, name="sim-fleet", daemon=True)
        t.start()
        self._threads.append(t)

    def _wake_at(self) -> int:
        times = [self._next_tick, *(due for due, _, _ in self._later)]
        nxt = self.fleet.next_at_ms()
        return min(times) if nxt is None else min(nxt, *times)

    def _loop(self) -> None:
        while not self._stop.wait(max(0.0, (self._wake_at() - self.clock_ms()) / 1000)):
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
        """Applies what is due, each at the clock when it is applied; rewrites files when a
        tick is due; runs CNI DELs and cgroup removals that are due."""
        with self._lock:
            for h in self.fleet.due(self.clock_ms()):
                if not self._drained:  # after a drain nothing starts, stops or restarts any more
                    self._apply(h)
            now = self.clock_ms()
            if now >= self._next_tick:
                self.fleet.advance(now)
                self._write_all(now)
                self._next_tick = now + int(self.tick_s * 1000)
            self._gc(now)

    def _apply(self, h: Happening) -> None:
        f = self.fleet
        if h.kind == "short":
            self._start(f.new_sandbox(f.rng.choice(f.node_ids), short=True))
        elif h.kind == "stop" and h.sandbox is not None and h.sandbox.stop_ms is None:
            self._stop_files(h.sandbox)
        elif h.kind == "churn" and (sb := f.pick_churn()) is not None:
            self._stop_files(sb)
            self._start(f.new_sandbox(sb.node))
        elif h.kind == "restart" and (sb := f.pick_restart(self.clock_ms())) is not None:
            sb.restart(self.clock_ms(), f.spec.restart_ms)
            self.trees[sb.node].update(sb)  # its last values before the reset stay readable
        else:
            f.apply(h, self.clock_ms(), [], [])  # faults: no files of their own

    def _start(self, sb: SimSandbox) -> None:
        tree = self.trees[sb.node]
        tree.prepare(sb)
        # the truth starts when the directory appears, as the collector sees it
        self.fleet.start_sandbox(sb, *tree.publish(sb, self.clock_ms))

    def _stop_files(self, sb: SimSandbox) -> None:
        tree = self.trees[sb.node]
        # the VM stops here; its teardown (writing its final counters) ends when its directory goes
        self.fleet.stop_sandbox(sb, max(self.fleet.now_ms, self.clock_ms()))
        tree.update(sb)  # final counters stay readable for the collector's last sample
        tree.write_netdev()
        sb.torn_down(*tree.remove_sandbox_dir(sb, self.clock_ms))
        tree.remove_proc(sb)
        assert sb.stop_ms is not None
        self._later.append((sb.stop_ms + self.fleet.spec.net_teardown_ms, "net", sb))
        self._later.append((sb.stop_ms + CGROUP_GRACE_MS, "cgroups", sb))

    def _write_all(self, now: int) -> None:
        for node, tree in self.trees.items():
            live = self.fleet.live(node)
            for sb in live:
                tree.update(sb)
            tree.write_host(now, live)

    def _gc(self, now: int) -> None:
        due = [p for p in self._later if p[0] <= now]
        self._later = [p for p in self._later if p[0] > now]
        for _, what, sb in due:
            if what == "net":
                self.trees[sb.node].detach_net(sb)
            else:
                self.trees[sb.node].remove_cgroups(sb)

    def drain(self) -> None:
        """Stops every sandbox now, one after the other, as at the end of a billing test."""
        with self._lock:
            self._drained = True
            self.fleet.advance(self.clock_ms())
            for sb in self.fleet.live():
                self._stop_files(sb)

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


def collector_settings(node: dict[str, Any], **overrides: Any) -> CollectorSettings:
    """Settings for a real collector of one simulated node (an entry of `describe()["nodes"]`)."""
    return CollectorSettings(
        node_id=node["node_id"],
        cgroup_root=Path(node["cgroup_root"]),
        proc_root=Path(node["proc_root"]),
        sandbox_dirs=(Path(node["sandbox_dir"]),),
        bundle_dirs=(Path(node["bundle_dir"]),),
        cni_cache_dir=Path(node["cni_cache_dir"]),
        sys_class_net=Path(node["sys_class_net"]),
        kata_monitor_url=node["kata_monitor_url"],
        **overrides,
    )
