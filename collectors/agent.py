"""`sandmeter collect`: the per-node agent's scrape loop."""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from prometheus_client import CollectorRegistry, Histogram

from collectors.base import Block, Reading, Rows, Source, SourceError
from collectors.bundle import bundle_labels
from collectors.cgroup import CgroupSource
from collectors.host import HostSource
from collectors.katamonitor import KataMonitorSource
from collectors.lifecycle import LifecycleEvent, SandboxWatcher
from collectors.podnet import PodNetSource
from collectors.procfs import ProcSource
from collectors.settings import CollectorSettings
from collectors.sink import BatchSink, KafkaSink
from collectors.tenancy import TenantRule
from contracts import names as n
from contracts.builder import HOST, BatchBuilder
from contracts.clock import wall_ms
from contracts.metrics import counter
from contracts.wire import EncodeError, EventKind, SampleBatch

log = logging.getLogger(__name__)

LABELS_KEPT_SCRAPES = 2  # labels of a sandbox nothing reports any more are kept this many scrapes


class CollectorAgent:
    def __init__(
        self,
        node: str,
        sources: Sequence[Source],
        watcher: SandboxWatcher,
        sink: BatchSink,
        tenants: TenantRule,
        registry: CollectorRegistry,
        bundle_dirs: Sequence[Path] = (),
        source_timeout_s: float = 2.0,
        clock_ms: Callable[[], int] = wall_ms,
    ) -> None:
        self.node = node
        self.sources = list(sources)
        self.watcher = watcher
        self.sink = sink
        self.tenants = tenants
        self.bundle_dirs = list(bundle_dirs)
        self.source_timeout_s = source_timeout_s
        self.clock_ms = clock_ms
        self.boot_epoch_ms = clock_ms()
        self._seq = 0
        self._seq_lock = threading.Lock()
        # sandbox -> cri labels, fixed once they name a tenant; kept while anything reports it
        self._labels: dict[str, dict[str, str]] = {}
        self._fixed: set[str] = set()
        self._seen_at: dict[str, int] = {}  # sandbox -> the last scrape that had it alive or reported
        self._labels_lock = threading.Lock()
        # a lane per scrape for the sources that read local files, one for each remote one, and
        # room for every source to be stuck in a lane of its own
        self._pool = cf.ThreadPoolExecutor(max_workers=len(self.sources) + 2, thread_name_prefix="src")
        self._pending: dict[str, cf.Future[Reading]] = {}
        self._began: dict[cf.Future[Reading], float] = {}  # sources running: when each began
        self.scrape_seconds = Histogram(
            n.COLLECTOR_SCRAPE_SECONDS,
            "Time to read one source",
            ["source"],
            registry=registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self.registry = registry
        self.scrape_errors = counter(
            n.COLLECTOR_SCRAPE_ERRORS, "Source failures and bad input, per source", registry, ["source"]
        )
        self.samples = counter(n.COLLECTOR_SAMPLES, "Samples put into batches", registry)
        self.label_conflicts = counter(
            n.COLLECTOR_LABEL_CONFLICTS,
            "Labels that contradict a sandbox's fixed ones (first attribution kept)",
            registry,
        )
        for s in self.sources:
            self.scrape_errors.labels(s.name)
        self.scrapes = 0

    @property
    def batches_made(self) -> int:
        """Batches handed to the sink so far: their sequence numbers are 0 .. batches_made - 1."""
        return self._seq

    def pod_uids(self) -> dict[str, str]:
        with self._labels_lock:
            return {sb: lb["cri_uid"] for sb, lb in self._labels.items() if "cri_uid" in lb}

    def labels(self, sandbox: str) -> dict[str, str]:
        with self._labels_lock:
            return dict(self._labels.get(sandbox, {}))

    def learn(self, sandbox: str, labels: dict[str, str], source: str) -> None:
        """Adds what a source knows of a sandbox's labels. Once they name a tenant they are
        fixed: later labels that differ are counted and logged, never applied, so no source
        (a lagging kata-monitor, a bundle rewritten) can move a sandbox to another tenant."""
        if not labels:
            return
        with self._labels_lock:
            self._seen_at[sandbox] = self.scrapes
            cur = self._labels.get(sandbox, {})
            if sandbox not in self._fixed:
                merged = {**cur, **labels}
                self._labels[sandbox] = merged
                if self.tenants.tenant(merged) != n.UNATTRIBUTED:
                    self._fixed.add(sandbox)
                return
            clash = sorted(k for k, v in labels.items() if k in cur and cur[k] != v)
        if clash:
            self.label_conflicts.inc()
            k = clash[0]
            log.warning("sandbox %s: %s says %s=%r, fixed at %r: kept", sandbox, source, k, labels[k], cur[k])

    def _forget_labels(self, keep: set[str]) -> None:
        """Drops labels of sandboxes nothing has reported for LABELS_KEPT_SCRAPES scrapes (their
        stops are handled: this runs while the watcher is held)."""
        with self._labels_lock:
            for sb in keep:
                self._seen_at[sb] = self.scrapes
            for sb in [s for s, at in self._seen_at.items() if self.scrapes - at > LABELS_KEPT_SCRAPES]:
                del self._seen_at[sb]
                self._labels.pop(sb, None)
                self._fixed.discard(sb)

    def _read(self, src: Source, alive: frozenset[str]) -> Reading:
        t0 = time.perf_counter()
        try:
            return src.read(alive)
        finally:
            self.scrape_seconds.labels(src.name).observe(time.perf_counter() - t0)

    def _start_lanes(self, alive: frozenset[str]) -> None:
        """Starts this scrape's reads: each remote source (`remote = True`: kata-monitor, the
        likeliest to hang) in a thread of its own, the sources that read local files one after
        another in one thread. Five threads contending for the GIL at every file read cost
        ~1.2 ms of CPU per scrape of 50 sandboxes (4%) over one; and the files sources read
        are of one kernel, so in turn they lose no time. A source still running from an
        earlier scrape (stuck) is not asked again until it returns; one that an earlier
        scrape's lane never reached (stuck behind another) is taken back and read in this
        scrape's lane. So a hung local source costs the sources after it one scrape at most."""
        local: list[tuple[Source, cf.Future[Reading]]] = []
        for src in self.sources:
            old = self._pending.get(src.name)
            if old is not None and not old.done() and not old.cancel():
                continue  # running since an earlier scrape
            fut: cf.Future[Reading] = cf.Future()
            self._pending[src.name] = fut
            if getattr(src, "remote", False):
                self._pool.submit(self._lane, [(src, fut)], alive)
            else:
                local.append((src, fut))
        if local:
            self._pool.submit(self._lane, local, alive)

    def _lane(self, lane: list[tuple[Source, cf.Future[Reading]]], alive: frozenset[str]) -> None:
        for src, fut in lane:
            if not fut.set_running_or_notify_cancel():
                continue  # taken back by a later scrape while this lane was stuck
            self._began[fut] = time.monotonic()  # its timeout runs from here, not from the scrape
            try:
                fut.set_result(self._read(src, alive))
            except BaseException as exc:  # handed to the scrape waiting for it, as a pool would
                fut.set_exception(exc)
            finally:
                self._began.pop(fut, None)  # done: nothing to time; a stuck one keeps its start

    def _result(self, fut: cf.Future[Reading], behind: bool, give_up: float) -> Reading:
        """A source's reading once it has run `source_timeout_s` at most from the start of its
        own turn (local sources take turns, so a deadline from the scrape's start would cut off
        the last of several slow but healthy ones every time); cf.TimeoutError when it ran
        longer, or has not started and waits `behind` a source that timed out in its lane."""
        while True:
            began = self._began.get(fut)
            if began is not None or fut.done():
                left = (began or 0.0) + self.source_timeout_s - time.monotonic()
                return fut.result(timeout=max(0.0, min(left, give_up - time.monotonic())))
            if behind or time.monotonic() >= give_up:
                raise cf.TimeoutError
            with contextlib.suppress(cf.TimeoutError):  # not started yet: the lane is on its way
                return fut.result(timeout=0.01)

    def scrape(self) -> SampleBatch:
        """Reads every source (each within its timeout) and queues one batch.

        The batch is stamped before a scan of the sandbox directories, so every sandbox it
        holds as alive existed at its stamp (allocation runs to the stamp). After the reads the
        watcher is scanned again and held until the batch is queued: a sandbox that stopped
        meanwhile has its stop batch (with its start and final sample) queued first, and its
        samples and events leave this batch, so nothing of it comes after its stop.
        """
        scrape_ts = self.clock_ms()
        self.watcher.scan()
        events = self.watcher.events()
        alive = self.watcher.alive()
        readings: list[Reading] = []
        self._start_lanes(alive)
        # a bound on the whole wait whatever happens to the lanes (every state has an exit)
        give_up = time.monotonic() + self.source_timeout_s * (1 + len(self.sources))
        stuck = False  # a local source timed out: the ones after it in its lane will not start
        for src in self.sources:
            fut = self._pending[src.name]
            behind = stuck and not getattr(src, "remote", False)
            try:
                r = self._result(fut, behind, give_up)
            except cf.TimeoutError:
                stuck = stuck or not getattr(src, "remote", False)
                self.scrape_errors.labels(src.name).inc()
                log.warning("%s: no answer within %.1f s", src.name, self.source_timeout_s)
                continue
            except SourceError as exc:
                self.scrape_errors.labels(src.name).inc()
                log.warning("%s", exc)
                continue
            except Exception:
                self.scrape_errors.labels(src.name).inc()
                log.exception("%s failed", src.name)
                continue
            if r.errors:
                self.scrape_errors.labels(src.name).inc(r.errors)
                log.warning("%s: %d bad inputs, e.g. %s", src.name, r.errors, r.error_samples[:2])
            readings.append(r)
        for r in readings:
            for sb, lb in r.labels.items():
                self.learn(sb, lb, r.source)
        with self.watcher.hold() as still:
            gone = alive - still
            reported = {sb for r in readings for sb in r.labels} - gone
            self._forget_labels(set(still) | reported)
            batch = self._build(readings, [e for e in events if e.sandbox not in gone], still & alive, scrape_ts, gone)
        self.scrapes += 1
        return batch

    def _build(
        self,
        readings: Sequence[Reading],
        events: Sequence[LifecycleEvent],
        alive: frozenset[str],
        ts: int,
        gone: frozenset[str] = frozenset(),
    ) -> SampleBatch:
        """One batch from the readings, in columns: Python runs per distinct sandbox and name."""
        b = BatchBuilder(self.node)
        for sb in sorted(alive):
            self._entity(b, sb)
        for r in readings:
            for blk in (*r.blocks, _block(r.rows)):
                used = np.flatnonzero(np.bincount(blk.sandbox, minlength=len(blk.sandboxes)))
                ent = np.full(len(blk.sandboxes), -1, np.int64)
                for i in used.tolist():
                    sb = blk.sandboxes[i]
                    if sb in gone:  # its stop batch, queued before this one, holds its final sample
                        continue
                    ix = HOST if not sb else b.entity_index(sb)
                    # kata-monitor may know a sandbox the directory scan has not seen (yet)
                    ent[i] = self._entity(b, sb) if ix is None else ix
                e = ent[blk.sandbox]
                keep = e >= 0
                b.add_columns(e[keep], blk.metrics, blk.metric[keep], blk.subs, blk.sub[keep], r.ts_ms,
                              blk.value[keep])  # fmt: skip
        for ev in events:
            b.event(self._entity(b, ev.sandbox), ev.kind, ev.ts_ms)
        return self._queue(b, ts)

    def _entity(self, b: BatchBuilder, sb: str) -> int:
        labels = self.labels(sb)
        labels["tenant"] = self.tenants.tenant(labels)
        return b.entity(sb, labels)

    def _queue(self, b: BatchBuilder, ts: int) -> SampleBatch:
        with self._seq_lock:
            batch = b.build(self.boot_epoch_ms, self._seq, ts)
            try:
                self.sink.put(batch)
            except EncodeError as exc:  # input no batch can carry: counted, never a crash
                self.scrape_errors.labels("encode").inc()
                log.error("batch %s dropped, it cannot be encoded: %s", batch.batch_id, exc)
                return batch
            self._seq += 1
        self.samples.inc(len(batch))
        return batch

    def on_start(self, ev: LifecycleEvent) -> None:
        """Learns a new sandbox's CRI labels from its OCI bundle (kata-monitor's come later) and
        lets sources note it while its files are certainly there (the pod's CNI result)."""
        with self._labels_lock:
            self._seen_at[ev.sandbox] = self.scrapes
        self.learn(ev.sandbox, bundle_labels(self.bundle_dirs, ev.sandbox), "bundle")
        for src in self.sources:
            hook = getattr(src, "on_start", None)
            if hook is not None:
                hook(ev.sandbox)

    def on_stop(self, ev: LifecycleEvent) -> None:
        """Sends the stopped sandbox's final readings (sources with `read_final`: its cgroups,
        the host side of its network) and its stop event at once, with its start again: a
        sandbox that lived less than a scrape interval may stop before any scrape batch has
        carried its start (the processor keeps the first start it sees)."""
        b = BatchBuilder(self.node)
        ix = self._entity(b, ev.sandbox)
        if ev.started_ms is not None:
            b.event(ix, EventKind.START, ev.started_ms)
        for src in self.sources:
            final = getattr(src, "read_final", None)
            if final is None:
                continue
            r: Reading = final(ev.sandbox, ev.snapshot or {})
            if r.errors:
                self.scrape_errors.labels(src.name).inc(r.errors)
                log.warning("%s: final reading of %s: %s", src.name, ev.sandbox, r.error_samples[0])
            for metric, sub, value in zip(r.rows.metric, r.rows.sub, r.rows.value, strict=True):
                b.add(ix, metric, sub, r.ts_ms, value)
        b.event(ix, EventKind.STOP, ev.ts_ms)
        self._queue(b, ev.ts_ms)

    def close(self) -> None:
        self.watcher.close()
        self._pool.shutdown(wait=False, cancel_futures=True)


def _block(rows: Rows) -> Block:
    """Per-sample lists as a Block: each distinct string interned once, by C-level passes over
    each column (distinct values in first-seen order, then a map through their indexes)."""
    sbs, metrics, subs = (list(dict.fromkeys(col)) for col in (rows.sandbox, rows.metric, rows.sub))
    cols = [
        np.fromiter(map({x: i for i, x in enumerate(t)}.__getitem__, col), np.int64, len(col))
        for t, col in zip((sbs, metrics, subs), (rows.sandbox, rows.metric, rows.sub), strict=True)
    ]
    return Block(sbs, metrics, subs, cols[0], cols[1], cols[2], np.array(rows.value, np.float64))


def build_agent(s: CollectorSettings, registry: CollectorRegistry, sink: BatchSink | None = None) -> CollectorAgent:
    holder: list[CollectorAgent] = []
    sources: list[Source] = [
        KataMonitorSource(s.kata_monitor_url, s.source_timeout_s, wall_ms),
        CgroupSource(s.cgroup_root, wall_ms, lambda: holder[0].pod_uids() if holder else {}),
        HostSource(s.proc_root, wall_ms),
        ProcSource(s.proc_root, s.cgroup_root, wall_ms, lambda: holder[0].pod_uids() if holder else {}),
        PodNetSource(s.proc_root, s.cni_cache_dir, s.sys_class_net, wall_ms),
    ]
    agent = CollectorAgent(
        node=s.node_id,
        sources=sources,
        # the host's /proc/net/dev is read the moment a stop is seen, before CNI DEL can come
        watcher=SandboxWatcher(s.sandbox_dirs, wall_ms, snapshot=(s.proc_root / "net" / "dev",)),
        sink=sink
        or KafkaSink(
            s.kafka_bootstrap,
            s.topic,
            registry,
            s.spool_dir / s.node_id,
            max_bytes=s.spool_max_bytes,
            max_batches=s.spool_max_batches,
            fsync=s.spool_fsync,
            client_kwargs=s.kafka_kwargs(),
        ),
        tenants=TenantRule.from_file(s.tenant_label, s.tenant_map_file),
        registry=registry,
        source_timeout_s=s.source_timeout_s,
        bundle_dirs=s.bundle_dirs,
    )
    holder.append(agent)
    return agent


def wait_for_stops(agents: list[CollectorAgent], timeout_s: float) -> bool:
    """Waits until no agent's watcher holds a live sandbox (every stop seen and its final batch
    queued), e.g. after a simulator drained its fleet; False if `timeout_s` passed first."""
    deadline = time.monotonic() + timeout_s
    while any(a.watcher.busy() for a in agents):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def run_agent(agent: CollectorAgent, interval_s: float, stop: threading.Event, status_every_s: float = 30.0) -> None:
    """Scrapes on a monotonic schedule until `stop` is set; logs a one-line status."""
    agent.watcher.start(on_start=agent.on_start, on_stop=agent.on_stop)
    next_at = time.monotonic()
    last_status = time.monotonic()
    while not stop.is_set():
        agent.scrape()
        now = time.monotonic()
        if now - last_status >= status_every_s:
            last_status = now
            log.info(
                "collector %s: scrapes=%d sandboxes=%d samples=%d",
                agent.node,
                agent.scrapes,
                len(agent.watcher.alive()),
                int(agent.registry.get_sample_value(n.COLLECTOR_SAMPLES) or 0),
            )
        next_at += interval_s
        if next_at < now:  # fell behind (a slow scrape): skip, never burst
            next_at = now + interval_s
        stop.wait(max(0.0, next_at - time.monotonic()))
