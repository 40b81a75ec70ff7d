"""The simulated fleet's state: sandboxes with exact counters, their schedule and the ground truth.

All quantities are integers and advance by whole milliseconds, so the ground truth is
exact: a sandbox's CPU counter at any instant is the integral of its rate, and the truth
totals are the sums of the counters' final values (plus their values before each reset).

Everything that happens to the fleet (a short-lived sandbox arriving, a stop, a long-lived
sandbox replaced, a VM restart, a fault) is scheduled at its own millisecond; the runner
wakes for each, so a sandbox can live 20 ms and a restart falls anywhere in a scrape interval.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field
from typing import Any, Literal

from collectors.sim.spec import FaultKind, FaultSpec, FleetSpec

GIB = 1 << 30
RESTART_AFTER_MS = 10_000  # a VM restarts only after this long running (docs/metering.md: resets)


@dataclass
class SimSandbox:
    id: str
    node: str
    tenant: str
    pod_uid: str
    pod_name: str
    vcpu_milli: int
    mem_max: int
    cpu_rate_us_per_ms: int  # CPU microseconds used per wall millisecond (<= vcpu_milli)
    mem_bytes: int
    overhead_layout: bool  # sandbox_cgroup_only=false: part of the usage under kata_overhead
    start_ms: int
    short: bool = False  # one of the short-lived arrivals (its stop is scheduled at its start)
    stop_ms: int | None = None
    cpu_us: int = 0  # current counter (pod/sandbox cgroup + overhead)
    io_read: int = 0
    io_write: int = 0
    net_rx: int = 0  # QEMU's view (kata-monitor's netdev): starts again from 0 on a VM restart
    net_tx: int = 0
    check_count: int = 0  # the agent's CheckRequest heartbeats (about one per 5 s)
    alive_ms: int = 0  # time the VM made progress: drives heartbeats and guest idle time
    qemu_pid: int = 0
    vctx: int = 0  # QEMU's voluntary context switches
    hung: bool = False  # injected: QEMU wedged, its threads in D state
    stalled: bool = False  # injected: the sandbox's disk IO makes no progress
    last_ms: int = 0
    # truth accumulators (exact); the host side of the pod network counts them too, never reset
    truth_cpu_us: int = 0
    truth_mem_byte_ms: int = 0
    truth_io_read: int = 0
    truth_io_write: int = 0
    truth_net_rx: int = 0
    truth_net_tx: int = 0
    resets: int = 0
    restarted_at: list[int] = field(default_factory=list)  # when each VM restart began (ms)
    restart_until_ms: int | None = None  # a VM restart in progress: nothing runs until then
    up_since_ms: int = 0  # when the VM last began running (its start, or the end of a restart)
    # how long the clock read of the start (stop) and its file operation took together: the truth
    # is exact to within this (a busy machine can preempt between the two)
    start_window_us: int = 0
    stop_window_us: int = 0

    @property
    def cpu_overhead_us(self) -> int:
        # 1/8 of usage is QEMU's own threads, in /kata_overhead/<id> for that layout
        return self.cpu_us // 8 if self.overhead_layout else 0

    @property
    def veth(self) -> str:
        """The host side of the pod's veth pair, as a bridge CNI plugin names it."""
        return f"veth{self.id[:8]}"

    def begin(self, now_ms: int, window_us: int = 0) -> None:
        """The sandbox starts existing at `now_ms` (its directory appears then, within `window_us`)."""
        self.start_ms = self.last_ms = self.up_since_ms = now_ms
        self.start_window_us = window_us

    def advance(self, now_ms: int) -> None:
        if self.restart_until_ms is not None and now_ms >= self.restart_until_ms:
            self._advance(self.restart_until_ms)  # the VM was down until here, then starts from zero
            self.cpu_us = self.io_read = self.io_write = self.net_rx = self.net_tx = 0
            self.up_since_ms = self.restart_until_ms
            self.restart_until_ms = None
        self._advance(now_ms)

    def _advance(self, now_ms: int) -> None:
        dt = now_ms - self.last_ms
        if dt <= 0 or self.stop_ms is not None:
            return
        self.truth_mem_byte_ms += self.mem_bytes * dt  # memory stays allocated and used through a fault
        self.last_ms = now_ms
        if self.hung or self.restart_until_ms is not None:  # nothing progresses: counters, heartbeats
            return
        cpu = self.cpu_rate_us_per_ms * dt
        rd, wr = 4096 * dt, 2048 * dt
        if self.stalled:  # the guest waits on its disk: no IO, little CPU
            cpu //= 10
            rd = wr = 0
        rx, tx = 1500 * dt, 700 * dt
        self.alive_ms += dt
        self.vctx += dt // 2 + cpu // 1000
        self.cpu_us += cpu
        self.io_read += rd
        self.io_write += wr
        self.net_rx += rx
        self.net_tx += tx
        self.truth_cpu_us += cpu
        self.truth_io_read += rd
        self.truth_io_write += wr
        self.truth_net_rx += rx
        self.truth_net_tx += tx
        self.check_count = self.alive_ms // 5000

    def restart(self, now_ms: int, downtime_ms: int) -> None:
        """A VM restart: nothing runs for `downtime_ms`, then every counter starts again from 0.

        The counters stand still while the VM is down, so a collector scraping more often
        than `downtime_ms` sees their last value before the reset: the truth stays observable.
        """
        self.advance(now_ms)
        self.restart_until_ms = now_ms + downtime_ms
        self.resets += 1
        self.restarted_at.append(now_ms)

    def halt(self, now_ms: int) -> None:
        """The VM stops: counters are final; memory and allocation run on until `torn_down`."""
        self.advance(now_ms)
        self.stop_ms = now_ms

    def torn_down(self, now_ms: int, window_us: int = 0) -> None:
        """The end of a stop's teardown: nothing ran since the stop, but the VM held its memory
        and its allocation until now, when its sandbox directory goes."""
        end = self.stop_ms if self.stop_ms is not None else self.last_ms
        self.truth_mem_byte_ms += self.mem_bytes * max(0, now_ms - max(self.last_ms, end))
        self.last_ms = max(self.last_ms, now_ms)
        self.stop_ms = max(end, now_ms)
        self.stop_window_us = window_us

    def truth(self) -> dict[str, Any]:
        end = self.stop_ms if self.stop_ms is not None else self.last_ms
        life = end - self.start_ms
        return {
            "sandbox_id": self.id,
            "node": self.node,
            "tenant": self.tenant,
            "short": self.short,
            "start_ms": self.start_ms,
            "stop_ms": self.stop_ms,
            "start_window_us": self.start_window_us,
            "stop_window_us": self.stop_window_us,
            "vcpu_millicores": self.vcpu_milli,
            "memory_bytes": self.mem_max,
            "cpu_used_us": self.truth_cpu_us,
            "vcpu_alloc_mcpu_ms": self.vcpu_milli * life,
            "mem_alloc_byte_ms": self.mem_max * life,
            "mem_used_byte_ms": self.truth_mem_byte_ms,
            "io_read_bytes": self.truth_io_read,
            "io_write_bytes": self.truth_io_write,
            "net_rx_bytes": self.truth_net_rx,
            "net_tx_bytes": self.truth_net_tx,
            "counter_resets": self.resets,
            "restarted_at": list(self.restarted_at),
        }


@dataclass
class Fault:
    kind: FaultKind
    sandbox: SimSandbox
    start_ms: int
    end_ms: int | None = None

    def truth(self) -> dict[str, Any]:
        sb = self.sandbox
        return {
            "kind": self.kind,
            "node": sb.node,
            "sandbox_id": sb.id,
            "tenant": sb.tenant,
            "start_ms": self.start_ms,
            "end_ms": self.end_ms,
        }


HappeningKind = Literal["short", "stop", "churn", "restart", "fault", "fault_end"]


@dataclass(order=True)
class Happening:
    """Something the fleet does at `at_ms`; the runner applies it when its time comes."""

    at_ms: int
    seq: int
    kind: HappeningKind = field(compare=False)
    sandbox: SimSandbox | None = field(default=None, compare=False)
    fault: FaultSpec | Fault | None = field(default=None, compare=False)


@dataclass
class Fleet:
    spec: FleetSpec
    now_ms: int
    rng: random.Random = field(init=False)
    sandboxes: dict[str, SimSandbox] = field(default_factory=dict)
    faults: list[Fault] = field(default_factory=list)
    _next: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.spec.seed)
        self._sched_rng = random.Random(self.spec.seed + 2)  # arrival times: independent of the sandboxes drawn
        self.start_ms = self.now_ms
        self._heap: list[Happening] = []
        self._seq = 0
        self.node_ids = [f"node-{i:02d}" for i in range(self.spec.nodes)]
        self.tenant_ids = [f"tenant-{chr(ord('a') + i)}" for i in range(self.spec.tenants)]
        for i in range(self.spec.sandboxes):
            self.start_sandbox(self.new_sandbox(self.node_ids[i % len(self.node_ids)]), self.now_ms)
        for kind, rate in (("short", self.spec.short_per_min), ("churn", self.spec.churn_per_min),
                           ("restart", self.spec.reset_per_min)):  # fmt: skip
            self._recur(kind, rate, self.now_ms)  # type: ignore[arg-type]
        for f in self.spec.faults:
            self.schedule(Happening(self.now_ms + int(f.at_s * 1000), 0, "fault", fault=f))

    # -- schedule -------------------------------------------------------------------
    def schedule(self, h: Happening) -> None:
        self._seq += 1
        h.seq = self._seq
        heapq.heappush(self._heap, h)

    def _recur(self, kind: HappeningKind, per_min: float, after_ms: int) -> None:
        if per_min > 0:
            gap = self._sched_rng.expovariate(per_min / 60_000)
            self.schedule(Happening(after_ms + max(1, round(gap)), 0, kind))

    def next_at_ms(self) -> int | None:
        return self._heap[0].at_ms if self._heap else None

    def due(self, now_ms: int) -> list[Happening]:
        """Pops what is due by `now_ms`, in time order; recurring arrivals are re-scheduled."""
        out = []
        while self._heap and self._heap[0].at_ms <= now_ms:
            h = heapq.heappop(self._heap)
            out.append(h)
            rate = {"short": self.spec.short_per_min, "churn": self.spec.churn_per_min,
                    "restart": self.spec.reset_per_min}.get(h.kind)  # fmt: skip
            if rate is not None:
                self._recur(h.kind, rate, h.at_ms)
        return out

    # -- sandboxes --------------------------------------------------------------------
    def live(self, node: str | None = None) -> list[SimSandbox]:
        return [s for s in self.sandboxes.values() if s.stop_ms is None and (node is None or s.node == node)]

    def new_sandbox(self, node: str, short: bool = False) -> SimSandbox:
        """A sandbox drawn at random, not started yet (`start_sandbox`)."""
        r = self.rng
        self._next += 1
        vcpu = r.choice([500, 1000, 2000])
        return SimSandbox(
            id=f"{r.getrandbits(64):016x}{self._next:04d}",
            node=node,
            tenant=r.choice(self.tenant_ids),
            pod_uid=f"{r.getrandbits(32):08x}-{self._next:04d}-4000-8000-{r.getrandbits(48):012x}",
            pod_name=f"fn-{self._next}-0",
            vcpu_milli=vcpu,
            mem_max=r.choice([1, 2, 4]) * GIB // 2,
            cpu_rate_us_per_ms=r.randint(50, vcpu),
            mem_bytes=r.randint(64, 400) << 20,
            overhead_layout=bool(self._next % 2),
            start_ms=self.now_ms,
            short=short,
            qemu_pid=1000 + 10 * self._next,
        )

    def start_sandbox(self, sb: SimSandbox, now_ms: int, window_us: int = 0) -> SimSandbox:
        """`sb` exists from `now_ms`; a short-lived one's stop is scheduled after its lifetime."""
        sb.begin(now_ms, window_us)
        self.sandboxes[sb.id] = sb
        if sb.short:
            self.schedule(Happening(now_ms + self.spec.lifetime.sample(self.rng), 0, "stop", sandbox=sb))
        return sb

    def stop_sandbox(self, sb: SimSandbox, now_ms: int) -> None:
        """The VM of `sb` stops at `now_ms`; `torn_down` marks when its directory goes."""
        sb.halt(now_ms)
        for f in self.faults:
            if f.sandbox is sb and f.end_ms is None:  # a fault ends with its sandbox
                self.end_fault(f, now_ms)

    def busy(self, sb: SimSandbox) -> bool:
        return sb.hung or sb.stalled or sb.restart_until_ms is not None

    def pick_churn(self) -> SimSandbox | None:
        """A long-lived sandbox to replace (none in a fault or a restart)."""
        pool = [s for s in self.live() if not s.short and not self.busy(s)]
        return self.rng.choice(pool) if pool else None

    def pick_restart(self, now_ms: int) -> SimSandbox | None:
        # only a VM that has run 10 s since it (re)started: its counters then stand far above
        # what they reach again by the first scrape after the reset, which is what makes a
        # reset visible (a counter that comes back above its old value looks like no reset)
        pool = [
            s for s in self.live()
            if not s.short and not self.busy(s) and now_ms - s.up_since_ms > RESTART_AFTER_MS
        ]  # fmt: skip
        return self.rng.choice(pool) if pool else None

    def advance(self, now_ms: int) -> None:
        for sb in self.live():
            sb.advance(now_ms)
        self.now_ms = max(self.now_ms, now_ms)

    # -- faults -----------------------------------------------------------------------
    def inject(self, spec: FaultSpec, now_ms: int) -> Fault | None:
        node = self.node_ids[spec.node % len(self.node_ids)]
        healthy = [s for s in self.live(node) if not self.busy(s)]
        if not healthy:
            return None
        sb = self.rng.choice(healthy)
        sb.advance(now_ms)
        if spec.kind == "qemu_hang":
            sb.hung = True
        else:
            sb.stalled = True
        end = None if spec.duration_s is None else now_ms + int(spec.duration_s * 1000)
        f = Fault(spec.kind, sb, now_ms)
        self.faults.append(f)
        if end is not None:
            self.schedule(Happening(end, 0, "fault_end", fault=f))
        return f

    def end_fault(self, f: Fault, now_ms: int) -> None:
        if f.end_ms is not None:
            return
        f.sandbox.advance(now_ms)
        f.sandbox.hung = f.sandbox.stalled = False
        f.end_ms = now_ms

    def step(self, now_ms: int) -> tuple[list[SimSandbox], list[SimSandbox]]:
        """Applies everything due by `now_ms` at `now_ms`, without files (the runner does the
        same with files, each at its own time); returns (started, stopped) sandboxes."""
        started: list[SimSandbox] = []
        stopped: list[SimSandbox] = []
        for h in self.due(now_ms):
            self.apply(h, now_ms, started, stopped)
        self.advance(now_ms)
        return started, stopped

    def apply(self, h: Happening, now_ms: int, started: list[SimSandbox], stopped: list[SimSandbox]) -> None:
        if h.kind == "short":
            node = self.rng.choice(self.node_ids)
            started.append(self.start_sandbox(self.new_sandbox(node, short=True), now_ms))
        elif h.kind == "stop" and h.sandbox is not None and h.sandbox.stop_ms is None:
            self.stop_sandbox(h.sandbox, now_ms)
            h.sandbox.torn_down(now_ms)
            stopped.append(h.sandbox)
        elif h.kind == "churn" and (sb := self.pick_churn()) is not None:
            self.stop_sandbox(sb, now_ms)
            sb.torn_down(now_ms)
            stopped.append(sb)
            started.append(self.start_sandbox(self.new_sandbox(sb.node), now_ms))
        elif h.kind == "restart" and (sb := self.pick_restart(now_ms)) is not None:
            sb.restart(now_ms, self.spec.restart_ms)
        elif h.kind == "fault" and isinstance(h.fault, FaultSpec):
            self.inject(h.fault, now_ms)
        elif h.kind == "fault_end" and isinstance(h.fault, Fault):
            self.end_fault(h.fault, now_ms)

    def truth(self) -> dict[str, Any]:
        per_sb = [s.truth() for s in self.sandboxes.values()]
        keys = (
            [k for k in per_sb[0] if k.endswith(("_us", "_ms", "_bytes")) and k[:4] not in ("star", "stop")]
            if per_sb
            else []
        )
        tenants: dict[str, dict[str, int]] = {}
        for t in per_sb:
            acc = tenants.setdefault(t["tenant"], dict.fromkeys(keys, 0))
            for k in keys:
                acc[k] += t[k]
        return {
            "now_ms": self.now_ms,
            "spec": self.spec.describe(),
            "tenants": tenants,
            "sandboxes": per_sb,
            "faults": [f.truth() for f in self.faults],
        }
