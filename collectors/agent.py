"""`sandmeter collect`: the per-node agent's scrape loop."""

from __future__ import annotations

import concurrent.futures as cf
import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from prometheus_client import CollectorRegistry, Histogram

from collectors.base import Reading, Source, SourceError
from collectors.bundle import bundle_labels
from collectors.cgroup import CgroupSource
from collectors.host import HostSource
from collectors.katamonitor import KataMonitorSource
from collectors.lifecycle import LifecycleEvent, SandboxWatcher
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
        self._labels: dict[str, dict[str, str]] = {}  # sandbox -> cri labels, kept between scrapes
        self._gone_last: set[str] = set()
        self._pool = cf.ThreadPoolExecutor(max_workers=max(1, len(self.sources)), thread_name_prefix="src")
        self._pending: dict[str, cf.Future[Reading]] = {}
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
        for s in self.sources:
            self.scrape_errors.labels(s.name)
        self.scrapes = 0

    @property
    def batches_made(self) -> int:
        """Batches handed to the sink so far: their sequence numbers are 0 .. batches_made - 1."""
        return self._seq

    def pod_uids(self) -> dict[str, str]:
        return {sb: lb["cri_uid"] for sb, lb in list(self._labels.items()) if "cri_uid" in lb}

    def _read(self, src: Source, alive: frozenset[str]) -> Reading:
        t0 = time.perf_counter()
        try:
            return src.read(alive)
        finally:
            self.scrape_seconds.labels(src.name).observe(time.perf_counter() - t0)

    def scrape(self) -> SampleBatch:
        """Reads every source (each within its timeout) and queues one batch.

        The batch is stamped before a scan of the sandbox directories, so every sandbox it
        holds as alive existed at its stamp (allocation runs to the stamp), and the stop batch
        of any sandbox gone before it is queued ahead of it (the scan runs the stop handler).
        """
        scrape_ts = self.clock_ms()
        self.watcher.scan()
        events = self.watcher.events()
        alive = self.watcher.alive()
        readings: list[Reading] = []
        for src in self.sources:
            # a source still stuck from an earlier scrape is not asked again until it returns
            fut = self._pending.get(src.name)
            if fut is None or fut.done():
                fut = self._pending[src.name] = self._pool.submit(self._read, src, alive)
        deadline = time.monotonic() + self.source_timeout_s
        for src in self.sources:
            fut = self._pending[src.name]
            try:
                r = fut.result(timeout=max(0.0, deadline - time.monotonic()))
            except cf.TimeoutError:
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
                self._labels[sb] = {**self._labels.get(sb, {}), **lb}
        # labels outlive a stop by one scrape: the stop handler still needs them for the final batch
        gone = {s for s in self._labels if s not in alive}
        for sb in gone & self._gone_last:
            del self._labels[sb]
        self._gone_last = gone
        batch = self._build(readings, events, alive, scrape_ts)
        self.scrapes += 1
        return batch

    def _build(
        self, readings: Sequence[Reading], events: Sequence[LifecycleEvent], alive: frozenset[str], ts: int
    ) -> SampleBatch:
        b = BatchBuilder(self.node)
        for sb in sorted(alive):
            self._entity(b, sb)
        for r in readings:
            rows = r.rows
            for sb, metric, sub, value in zip(rows.sandbox, rows.metric, rows.sub, rows.value, strict=True):
                ix = HOST if not sb else b.entity_index(sb)
                if ix is None:  # kata-monitor knows a sandbox the directory scan has not seen yet
                    ix = self._entity(b, sb)
                b.add(ix, metric, sub, r.ts_ms, value)
        for ev in events:
            b.event(self._entity(b, ev.sandbox), ev.kind, ev.ts_ms)
        return self._queue(b, ts)

    def _entity(self, b: BatchBuilder, sb: str) -> int:
        labels = dict(self._labels.get(sb, {}))
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
        """Learns a new sandbox's CRI labels from its OCI bundle; kata-monitor's override them later."""
        labels = bundle_labels(self.bundle_dirs, ev.sandbox)
        if labels:
            self._labels[ev.sandbox] = {**labels, **self._labels.get(ev.sandbox, {})}

    def on_stop(self, ev: LifecycleEvent) -> None:
        """Sends the stopped sandbox's final sample and its stop event at once, with its start
        again: a sandbox that lived less than a scrape interval may stop before any scrape
        batch has carried its start (the processor keeps the first start it sees)."""
        b = BatchBuilder(self.node)
        ix = self._entity(b, ev.sandbox)
        if ev.started_ms is not None:
            b.event(ix, EventKind.START, ev.started_ms)
        for src in self.sources:
            if isinstance(src, CgroupSource):
                r = src.read_final(ev.sandbox)
                for metric, sub, value in zip(r.rows.metric, r.rows.sub, r.rows.value, strict=True):
                    b.add(ix, metric, sub, r.ts_ms, value)
        b.event(ix, EventKind.STOP, ev.ts_ms)
        self._queue(b, ev.ts_ms)

    def close(self) -> None:
        self.watcher.close()
        self._pool.shutdown(wait=False, cancel_futures=True)


def build_agent(s: CollectorSettings, registry: CollectorRegistry, sink: BatchSink | None = None) -> CollectorAgent:
    holder: list[CollectorAgent] = []
    sources: list[Source] = [
        KataMonitorSource(s.kata_monitor_url, s.source_timeout_s, wall_ms),
        CgroupSource(s.cgroup_root, wall_ms, lambda: holder[0].pod_uids() if holder else {}),
        HostSource(s.proc_root, wall_ms),
        ProcSource(s.proc_root, s.cgroup_root, wall_ms, lambda: holder[0].pod_uids() if holder else {}),
    ]
    agent = CollectorAgent(
        node=s.node_id,
        sources=sources,
        watcher=SandboxWatcher(s.sandbox_dirs, wall_ms),
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
    while any(a.watcher.alive() for a in agents):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    time.sleep(0.2)  # the stop handler runs just after the watcher forgets the sandbox
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
