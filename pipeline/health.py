"""Health detection: per-sandbox qemu-hang and IO-stall incidents, per-disk host IO stalls.

Each incident kind is a state machine with hysteresis on sample time (not wall time, so a
replay decides the same): a condition must hold for `open_after` to open an incident and
be clear for `close_after` to close it, so a signal hovering at a threshold cannot flap.
Signals (docs/metering.md, "Health"), per scrape:

- qemu hang: a QEMU or virtiofsd thread in D state; or the sandbox alive with its
  kata_hypervisor_* series missing for 2+ scrapes while QEMU's CPU time and voluntary
  context switches stand still; or the agent's CheckRequest heartbeat not advancing for
  `heartbeat_ms`. Opens after 30 s.
- IO stall: the sandbox's `io.pressure` full avg10 above 10 (clear below 5), or the
  guest disk with IOs in progress and no reads or writes completing. Opens after 60 s.
- host disk stall (`disk` set, sandbox and tenant ""): IOs in flight and no completions.
  Opens after 60 s.

Extraction is per batch and per sandbox (numpy masks over the batch), never per sample.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from contracts import names as n
from contracts.names import HOST_DISK_STALL, IO_STALL, QEMU_HANG
from contracts.wire import EventKind, SampleBatch, sub_label

log = logging.getLogger(__name__)
# disk statistics items (kata_guest_diskstat, host_diskstat) whose sums the detectors compare
IN_PROGRESS, READS, WRITES = sub_label(item="in_progress"), sub_label(item="reads"), sub_label(item="writes")
Who = tuple[str, str, str, str]  # (node, sandbox_id, tenant, disk) an incident is about


@dataclass(frozen=True)
class HealthEvent:
    kind: str
    event: str  # open | close
    node: str
    sandbox_id: str
    tenant: str
    ts_ms: int
    opened_ms: int
    evidence: dict[str, object]
    disk: str = ""  # a host disk's name; "" for a sandbox's incident

    @property
    def incident_id(self) -> str:
        """kind/node/sandbox/opened for a sandbox, kind/node/disk/opened for a host disk."""
        return f"{self.kind}/{self.node}/{self.disk or self.sandbox_id}/{self.opened_ms}"

    def to_json(self) -> str:
        return json.dumps({**self.__dict__, "incident_id": self.incident_id}, sort_keys=True, default=str)


@dataclass
class Hysteresis:
    open_after_ms: int
    close_after_ms: int
    bad_since: int | None = None
    good_since: int | None = None
    opened_ms: int | None = None  # the open incident's start (when its condition began)
    last_opened_ms: int | None = None  # the start of the incident closed last

    def update(self, ts: int, bad: bool, good: bool) -> str | None:
        """Feeds one observation; returns "open" or "close" when the incident changes."""
        if bad:
            self.good_since = None
            self.bad_since = ts if self.bad_since is None else self.bad_since
            if self.opened_ms is None and ts - self.bad_since >= self.open_after_ms:
                self.opened_ms = self.bad_since
                return "open"
        else:
            self.bad_since = None
        if good:
            self.good_since = ts if self.good_since is None else self.good_since
            if self.opened_ms is not None and ts - self.good_since >= self.close_after_ms:
                self.last_opened_ms, self.opened_ms = self.opened_ms, None
                return "close"
        elif not bad:
            self.good_since = None  # between the thresholds: neither opens nor closes
        return None


@dataclass
class Obs:
    """One sandbox's health signals in one scrape."""

    ts: int
    d_threads: int = 0
    blocked: list[str] = field(default_factory=list)
    kata_present: bool = False
    heartbeat: float | None = None
    qemu_progress: float | None = None  # CPU ticks + voluntary context switches
    io_full_avg10: float | None = None
    guest_in_progress: float | None = None
    guest_done: float | None = None  # reads + writes completed


@dataclass
class SandboxHealth:
    node: str
    sandbox_id: str
    tenant: str
    hang: Hysteresis
    stall: Hysteresis
    missing_scrapes: int = 0
    last_progress: float | None = None
    last_heartbeat: float | None = None
    heartbeat_since: int | None = None  # when the heartbeat last changed
    last_done: float | None = None
    last_seen_ms: int = 0
    evidence: dict[str, dict[str, object]] = field(default_factory=dict)

    @property
    def who(self) -> Who:
        return self.node, self.sandbox_id, self.tenant, ""


def _event(kind: str, change: str, who: Who, ts: int, hy: Hysteresis, evidence: dict[str, object]) -> HealthEvent:
    """An open or close; `who` is (node, sandbox, tenant, disk): a sandbox's with disk "", a
    host disk's with sandbox and tenant "" (a disk is nobody's tenant, whatever its name)."""
    node, sandbox, tenant, disk = who
    opened = hy.opened_ms if change == "open" else hy.last_opened_ms
    return HealthEvent(
        kind, change, node, sandbox, tenant, ts, opened if opened is not None else ts, dict(evidence), disk
    )


@dataclass
class DiskHealth:
    stall: Hysteresis
    last_done: float | None = None


def _sum_where(b: SampleBatch, mask: np.ndarray, n_entities: int) -> np.ndarray:
    out: np.ndarray = np.bincount(b.entity[mask], weights=b.value[mask], minlength=n_entities)
    return out


def observe_batch(b: SampleBatch) -> tuple[dict[int, Obs], dict[str, tuple[float, float]]]:
    """Per sandbox entity its Obs; per host disk (in_progress, reads + writes)."""
    ents = len(b.entities)
    metric_ix = {m: i for i, m in enumerate(b.metrics)}
    sub_ix = {s: i for i, s in enumerate(b.subs)}
    met = b.metric

    def mask(metric: str, subs: Sequence[str] | None = None) -> np.ndarray:
        i = metric_ix.get(metric)
        if i is None:
            return np.zeros(met.shape[0], bool)
        m: np.ndarray = met == i
        if subs is not None:
            wanted = [sub_ix[s] for s in subs if s in sub_ix]
            m &= np.isin(b.sub, wanted)
        return m

    def has(m: np.ndarray) -> np.ndarray:
        return np.bincount(b.entity[m], minlength=ents) > 0

    procs = ("qemu", "virtiofsd")
    d_mask = mask(n.M_PROC_THREADS, [sub_label(proc=p, state="D") for p in procs])
    d = _sum_where(b, d_mask, ents)
    prog_mask = mask(n.M_PROC_CPU_TICKS, [sub_label(item=i, proc="qemu") for i in ("utime", "stime")]) | mask(
        n.M_PROC_CTXT, [sub_label(item="voluntary", proc="qemu")]
    )
    prog, prog_has = _sum_where(b, prog_mask, ents), has(prog_mask)
    hb_mask = mask(n.M_KATA_AGENT_RPC_COUNT, [sub_label(action="grpc.CheckRequest")])
    hb, hb_has = _sum_where(b, hb_mask, ents), has(hb_mask)
    io_mask = mask(n.M_CG_PRESSURE, [sub_label(item="avg10", kind="full", resource="io")])
    io, io_has = _sum_where(b, io_mask, ents), has(io_mask)
    gi_mask = mask(n.M_KATA_GUEST_DISKSTAT, [s for s in b.subs if IN_PROGRESS in s])
    gi, gi_has = _sum_where(b, gi_mask, ents), has(gi_mask)
    gd_mask = mask(n.M_KATA_GUEST_DISKSTAT, [s for s in b.subs if READS in s or WRITES in s])
    gd = _sum_where(b, gd_mask, ents)
    kata_ix = [i for i, m in enumerate(b.metrics) if m.startswith(n.KATA_HYPERVISOR_PREFIX)]
    kata = has(np.isin(met, kata_ix)) if kata_ix else np.zeros(ents, bool)
    blocked: dict[int, list[str]] = {}
    bl_mask = mask(n.M_PROC_THREAD_BLOCKED)
    for e, s in zip(b.entity[bl_mask].tolist(), b.sub[bl_mask].tolist(), strict=True):
        blocked.setdefault(e, []).append(b.subs[s])
    ts = b.scrape_ts_ms
    out: dict[int, Obs] = {}
    for e, ent in enumerate(b.entities):
        if not ent.id:
            continue
        out[e] = Obs(
            ts=ts,
            d_threads=int(d[e]),
            blocked=blocked.get(e, [])[:8],
            kata_present=bool(kata[e]),
            heartbeat=float(hb[e]) if hb_has[e] else None,
            qemu_progress=float(prog[e]) if prog_has[e] else None,
            io_full_avg10=float(io[e]) if io_has[e] else None,
            guest_in_progress=float(gi[e]) if gi_has[e] else None,
            guest_done=float(gd[e]) if gi_has[e] else None,
        )
    disks: dict[str, tuple[float, float]] = {}
    dm = mask(n.M_HOST_DISK)
    for s_ix, v in zip(b.sub[dm].tolist(), b.value[dm].tolist(), strict=True):
        sub = b.subs[s_ix]
        disk = sub.split('disk="', 1)[1].split('"', 1)[0] if 'disk="' in sub else "?"
        infl, done = disks.get(disk, (0.0, 0.0))
        if IN_PROGRESS in sub:
            infl += v
        elif READS in sub or WRITES in sub:
            done += v
        disks[disk] = (infl, done)
    return out, disks


class HealthDetector:
    def __init__(
        self,
        hang_after_ms: int = 30_000,
        stall_after_ms: int = 60_000,
        close_after_ms: int = 30_000,
        heartbeat_ms: int = 120_000,
        forget_after_ms: int = 600_000,
    ) -> None:
        self.hang_after_ms, self.stall_after_ms, self.close_after_ms = hang_after_ms, stall_after_ms, close_after_ms
        self.heartbeat_ms = heartbeat_ms
        self.forget_after_ms = forget_after_ms
        self.sandboxes: dict[tuple[str, str], SandboxHealth] = {}
        self.disks: dict[tuple[str, str], DiskHealth] = {}

    def open_incidents(self) -> Iterator[tuple[str, str, str, str, str]]:
        """(kind, node, sandbox_id, tenant, disk) of every open incident: a sandbox's with disk "",
        a host disk's with sandbox_id and tenant ""."""
        for h in self.sandboxes.values():
            for kind, hy in ((QEMU_HANG, h.hang), (IO_STALL, h.stall)):
                if hy.opened_ms is not None:
                    yield kind, *h.who
        for (node, disk), dh in self.disks.items():
            if dh.stall.opened_ms is not None:
                yield HOST_DISK_STALL, node, "", "", disk

    def export(self, nodes: frozenset[str]) -> str:
        """The state of `nodes` as JSON, for a checkpoint."""
        # dataclasses.asdict deep-copies every field: plain dicts of the fields serialise the same, faster
        return json.dumps(
            {
                "sandboxes": [
                    {**h.__dict__, "hang": h.hang.__dict__, "stall": h.stall.__dict__}
                    for h in self.sandboxes.values()
                    if h.node in nodes
                ],
                "disks": [
                    {"node": nd, "disk": dk, "stall": dh.stall.__dict__, "last_done": dh.last_done}
                    for (nd, dk), dh in self.disks.items()
                    if nd in nodes
                ],
            },
            default=str,
        )

    def import_(self, text: str) -> None:
        """Adds the state `export` wrote (replacing what is held for the same sandboxes and disks)."""
        if not text:
            return
        d = json.loads(text)
        for h in d["sandboxes"]:
            h["hang"], h["stall"] = Hysteresis(**h["hang"]), Hysteresis(**h["stall"])
            sh = SandboxHealth(**h)
            self.sandboxes[sh.node, sh.sandbox_id] = sh
        for x in d["disks"]:
            self.disks[x["node"], x["disk"]] = DiskHealth(Hysteresis(**x["stall"]), x["last_done"])

    def drop_nodes(self, nodes: frozenset[str]) -> None:
        for k in [k for k in self.sandboxes if k[0] in nodes]:
            del self.sandboxes[k]
        for k in [k for k in self.disks if k[0] in nodes]:
            del self.disks[k]

    def observe(self, batches: Sequence[SampleBatch]) -> list[HealthEvent]:
        """Feeds the batches in order; a batch the detector fails on is logged and skipped
        (what it changed before the fault stays), so a fault never reaches the other batches."""
        events: list[HealthEvent] = []
        newest: dict[str, int] = {}
        for b in batches:
            try:
                events += self._observe(b)
            except Exception as exc:  # a detector fault must not stop metering
                log.error("health detection failed on batch %s: %s: %s", b.batch_id, type(exc).__name__, exc)
            newest[b.node] = max(newest.get(b.node, 0), b.scrape_ts_ms)
        return events + self._forget_gone(newest)

    def _observe(self, b: SampleBatch) -> list[HealthEvent]:
        events: list[HealthEvent] = []
        obs, disks = observe_batch(b)
        for e, o in obs.items():
            ent = b.entities[e]
            key = (b.node, ent.id)
            h = self.sandboxes.get(key)
            if h is None:
                h = self.sandboxes[key] = SandboxHealth(
                    b.node,
                    ent.id,
                    ent.labels.get("tenant", n.UNATTRIBUTED),
                    Hysteresis(self.hang_after_ms, self.close_after_ms),
                    Hysteresis(self.stall_after_ms, self.close_after_ms),
                )
            events += self._sandbox(h, o)
        for e, k, t in zip(b.ev_entity.tolist(), b.ev_kind.tolist(), b.ev_ts_ms.tolist(), strict=True):
            if k == EventKind.STOP:
                events += self._stopped(b.node, b.entities[e].id, t)
        for disk, (infl, done) in disks.items():
            dh = self.disks.setdefault((b.node, disk), DiskHealth(Hysteresis(self.stall_after_ms, self.close_after_ms)))
            stuck = infl > 0 and dh.last_done is not None and done == dh.last_done
            progressing = dh.last_done is not None and done != dh.last_done
            dh.last_done = done
            change = dh.stall.update(b.scrape_ts_ms, stuck, progressing or infl == 0)
            if change:
                ev = {"disk": disk, "in_progress": infl, "completed": done}
                who = (b.node, "", "", disk)
                events.append(_event(HOST_DISK_STALL, change, who, b.scrape_ts_ms, dh.stall, ev))
        return events

    def _forget_gone(self, newest: dict[str, int]) -> list[HealthEvent]:
        """Sandboxes their node has not reported for `forget_after_ms` (gone without a stop event,
        e.g. across a collector restart): their incidents close and their state goes."""
        gone = [
            h
            for h in self.sandboxes.values()
            if h.node in newest and newest[h.node] - h.last_seen_ms >= self.forget_after_ms
        ]
        out: list[HealthEvent] = []
        for h in gone:
            out += self._stopped(h.node, h.sandbox_id, newest[h.node], "sandbox no longer reported")
        return out

    def _sandbox(self, h: SandboxHealth, o: Obs) -> list[HealthEvent]:
        out: list[HealthEvent] = []
        h.last_seen_ms = o.ts
        # -- hang
        h.missing_scrapes = 0 if o.kata_present else h.missing_scrapes + 1
        flat = o.qemu_progress is not None and h.last_progress is not None and o.qemu_progress == h.last_progress
        if o.qemu_progress is not None:
            h.last_progress = o.qemu_progress
        if o.heartbeat is not None and o.heartbeat != h.last_heartbeat:
            h.last_heartbeat, h.heartbeat_since = o.heartbeat, o.ts
        elif h.heartbeat_since is None:
            h.heartbeat_since = o.ts
        hb_stale = o.ts - h.heartbeat_since >= self.heartbeat_ms
        silent = h.missing_scrapes >= 2 and flat
        hang_bad = o.d_threads > 0 or silent or hb_stale
        hang_good = o.d_threads == 0 and o.kata_present and not hb_stale
        if hang_bad:
            h.evidence[QEMU_HANG] = {
                "threads_in_d_state": o.d_threads,
                "blocked_threads": o.blocked,
                "kata_series_missing_scrapes": h.missing_scrapes,
                "qemu_cpu_and_ctxt_flat": flat,
                "heartbeat_unchanged_ms": o.ts - h.heartbeat_since,
            }
        change = h.hang.update(o.ts, hang_bad, hang_good)
        if change:
            out.append(_event(QEMU_HANG, change, h.who, o.ts, h.hang, h.evidence.get(QEMU_HANG, {})))
        # -- IO stall
        guest_stuck = (
            o.guest_in_progress is not None
            and o.guest_in_progress > 0
            and h.last_done is not None
            and o.guest_done == h.last_done
        )
        if o.guest_done is not None:
            h.last_done = o.guest_done
        psi = o.io_full_avg10
        stall_bad = (psi is not None and psi > 10) or guest_stuck
        stall_good = (psi is None or psi < 5) and not guest_stuck
        if stall_bad:
            h.evidence[IO_STALL] = {
                "io_pressure_full_avg10": psi,
                "guest_in_progress": o.guest_in_progress,
                "guest_disk_stuck": guest_stuck,
            }
        change = h.stall.update(o.ts, stall_bad, stall_good)
        if change:
            out.append(_event(IO_STALL, change, h.who, o.ts, h.stall, h.evidence.get(IO_STALL, {})))
        return out

    def _stopped(self, node: str, sandbox: str, ts: int, why: str = "sandbox stopped") -> list[HealthEvent]:
        """A stopped sandbox's open incidents close with it; its state goes."""
        h = self.sandboxes.pop((node, sandbox), None)
        if h is None:
            return []
        out = []
        for kind, hy in ((QEMU_HANG, h.hang), (IO_STALL, h.stall)):
            if hy.opened_ms is not None:
                hy.last_opened_ms, hy.opened_ms = hy.opened_ms, None
                ev = {**h.evidence.get(kind, {}), "closed_by": why}
                out.append(_event(kind, "close", h.who, ts, hy, ev))
        return out
