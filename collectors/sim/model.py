"""The simulated fleet's state: sandboxes with exact counters and the ground truth.

All quantities are integers and advance by whole milliseconds, so the ground truth is
exact: a sandbox's CPU counter at any instant is the integral of its rate, and the truth
totals are the sums of the counters' final values (plus their values before each reset).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Literal

GIB = 1 << 30


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
    stop_ms: int | None = None
    cpu_us: int = 0  # current counter (pod/sandbox cgroup + overhead)
    io_read: int = 0
    io_write: int = 0
    net_rx: int = 0
    net_tx: int = 0
    check_count: int = 0  # the agent's CheckRequest heartbeats (about one per 5 s)
    alive_ms: int = 0  # time the VM made progress: drives heartbeats and guest idle time
    qemu_pid: int = 0
    vctx: int = 0  # QEMU's voluntary context switches
    hung: bool = False  # injected: QEMU wedged, its threads in D state
    stalled: bool = False  # injected: the sandbox's disk IO makes no progress
    last_ms: int = 0
    # truth accumulators (exact)
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

    @property
    def cpu_overhead_us(self) -> int:
        # 1/8 of usage is QEMU's own threads, in /kata_overhead/<id> for that layout
        return self.cpu_us // 8 if self.overhead_layout else 0

    def advance(self, now_ms: int) -> None:
        if self.restart_until_ms is not None and now_ms >= self.restart_until_ms:
            self._advance(self.restart_until_ms)  # the VM was down until here, then starts from zero
            self.cpu_us = self.io_read = self.io_write = self.net_rx = self.net_tx = 0
            self.up_since_ms = self.restart_until_ms
            self.restart_until_ms = None
        self._advance(now_ms)

    def _advance(self, now_ms: int) -> None:
        dt = now_ms - self.last_ms
        if dt <= 0:
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

    def torn_down(self, now_ms: int) -> None:
        """The end of a stop's teardown: nothing ran since the stop, but the VM held its memory
        and its allocation until now, when its sandbox directory goes."""
        self.truth_mem_byte_ms += self.mem_bytes * max(0, now_ms - self.last_ms)
        self.last_ms = max(self.last_ms, now_ms)
        self.stop_ms = max(self.stop_ms or now_ms, now_ms)

    def truth(self) -> dict[str, Any]:
        end = self.stop_ms if self.stop_ms is not None else self.last_ms
        life = end - self.start_ms
        return {
            "sandbox_id": self.id,
            "node": self.node,
            "tenant": self.tenant,
            "start_ms": self.start_ms,
            "stop_ms": self.stop_ms,
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


FaultKind = Literal["qemu_hang", "io_stall"]
FAULT_KINDS: tuple[FaultKind, ...] = ("qemu_hang", "io_stall")


@dataclass(frozen=True)
class FaultSpec:
    """A fault injected into one live sandbox of `node` (an index), `at_s` after the start."""

    kind: FaultKind
    at_s: float
    duration_s: float | None = None  # None: until the end of the run
    node: int = 0

    @classmethod
    def parse(cls, text: str) -> FaultSpec:
        """`KIND:AT_S[:DURATION_S[:NODE]]`, e.g. `qemu_hang:30:120:1`; an empty duration runs to the end."""
        parts = text.split(":")
        if not 2 <= len(parts) <= 4 or parts[0] not in FAULT_KINDS:
            raise ValueError(f"{text!r}: expected KIND:AT_S[:DURATION_S[:NODE]] with KIND one of {FAULT_KINDS}")
        kind: FaultKind = "qemu_hang" if parts[0] == "qemu_hang" else "io_stall"
        dur = float(parts[2]) if len(parts) > 2 and parts[2] else None
        return cls(kind, float(parts[1]), dur, int(parts[3]) if len(parts) > 3 else 0)


@dataclass
class Fault:
    kind: FaultKind
    sandbox: SimSandbox
    start_ms: int
    planned_end_ms: int | None = None
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


@dataclass
class FleetSpec:
    nodes: int = 3
    sandboxes: int = 20  # initial, spread over the nodes
    tenants: int = 3
    churn_per_min: float = 6.0  # sandbox stops (each replaced by a start) per minute
    reset_per_min: float = 1.0  # VM restarts (counter resets) per minute
    restart_ms: int = 3000  # a restart's downtime; longer than a scrape interval keeps the truth observable
    seed: int = 7
    faults: tuple[FaultSpec, ...] = ()
    kata_detail: bool = False  # kata-monitor exports every family (~300 series per sandbox), as a real one does


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
        self.start_ms = self.now_ms
        self._due = sorted(self.spec.faults, key=lambda f: f.at_s)
        self.node_ids = [f"node-{i:02d}" for i in range(self.spec.nodes)]
        self.tenant_ids = [f"tenant-{chr(ord('a') + i)}" for i in range(self.spec.tenants)]
        for i in range(self.spec.sandboxes):
            self.start_sandbox(self.node_ids[i % len(self.node_ids)], self.now_ms)

    def live(self, node: str | None = None) -> list[SimSandbox]:
        return [s for s in self.sandboxes.values() if s.stop_ms is None and (node is None or s.node == node)]

    def start_sandbox(self, node: str, now_ms: int) -> SimSandbox:
        r = self.rng
        self._next += 1
        vcpu = r.choice([500, 1000, 2000])
        sb = SimSandbox(
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
            start_ms=now_ms,
            last_ms=now_ms,
            up_since_ms=now_ms,
            qemu_pid=1000 + 10 * self._next,
        )
        self.sandboxes[sb.id] = sb
        return sb

    def stop_sandbox(self, sb: SimSandbox, now_ms: int) -> None:
        """Stops `sb` at `now_ms`; stopping it again later moves the stop (and its usage) on."""
        sb.advance(now_ms)
        for f in self.faults:
            if f.sandbox is sb and f.end_ms is None:  # a fault ends with its sandbox
                self.end_fault(f, now_ms)
        sb.stop_ms = now_ms

    def step(self, now_ms: int, dt_ms: int) -> tuple[list[SimSandbox], list[SimSandbox]]:
        """Advances to now_ms; returns (started, stopped) sandboxes."""
        for sb in self.live():
            sb.advance(now_ms)
        self._faults(now_ms)
        started: list[SimSandbox] = []
        stopped: list[SimSandbox] = []
        p_stop = self.spec.churn_per_min * dt_ms / 60_000
        p_reset = self.spec.reset_per_min * dt_ms / 60_000
        for sb in self.live():
            if sb.hung or sb.stalled or sb.restart_until_ms is not None:  # busy: no stop or restart until done
                continue
            if self.rng.random() < p_stop / max(1, len(self.live())):
                self.stop_sandbox(sb, now_ms)
                stopped.append(sb)
                started.append(self.start_sandbox(sb.node, now_ms))
            # only a VM that has run 10 s since it (re)started: its counters then stand far above
            # what they reach again by the first scrape after the reset, which is what makes a
            # reset visible (a counter that comes back above its old value looks like no reset)
            elif self.rng.random() < p_reset / max(1, len(self.live())) and now_ms - sb.up_since_ms > 10_000:
                sb.restart(now_ms, self.spec.restart_ms)
        return started, stopped

    def _faults(self, now_ms: int) -> None:
        for f in self.faults:
            if f.end_ms is None and f.planned_end_ms is not None and now_ms >= f.planned_end_ms:
                self.end_fault(f, now_ms)
        while self._due and now_ms >= self.start_ms + self._due[0].at_s * 1000:
            spec = self._due.pop(0)
            node = self.node_ids[spec.node % len(self.node_ids)]
            healthy = [s for s in self.live(node) if not (s.hung or s.stalled)]
            if not healthy:
                continue
            sb = self.rng.choice(healthy)
            if spec.kind == "qemu_hang":
                sb.hung = True
            else:
                sb.stalled = True
            end = None if spec.duration_s is None else now_ms + int(spec.duration_s * 1000)
            self.faults.append(Fault(spec.kind, sb, now_ms, planned_end_ms=end))

    def end_fault(self, f: Fault, now_ms: int) -> None:
        f.sandbox.advance(now_ms)
        f.sandbox.hung = f.sandbox.stalled = False
        f.end_ms = now_ms

    def truth(self) -> dict[str, Any]:
        per_sb = [s.truth() for s in self.sandboxes.values()]
        keys = (
            [k for k in per_sb[0] if k.endswith(("_us", "_ms", "_bytes")) and k not in ("start_ms", "stop_ms")]
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
            "tenants": tenants,
            "sandboxes": per_sb,
            "faults": [f.truth() for f in self.faults],
        }
