"""`sandmeter process`: consume batches, account, write ClickHouse, then commit offsets."""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from prometheus_client import CollectorRegistry, Gauge, Histogram

from contracts import names as n
from contracts.clock import wall_ms
from contracts.metrics import counter
from contracts.wire import SampleBatch, WireError, decode, encode, kafka_headers
from pipeline.accounting import Accountant, Result, export_state, import_state, rebuilt
from pipeline.checkpoint import Checkpoint
from pipeline.functions import Functions
from pipeline.health import HealthDetector, HealthEvent
from pipeline.rollup import DirtyBuckets
from pipeline.settings import ProcessorSettings
from pipeline.writer import ClickHouseWriter, WriteError

log = logging.getLogger(__name__)

TP = tuple[str, int]  # (topic, partition)
FUNCTION_LOAD_DAYS = 2  # scale recommendations look back minutes; keep two days for inspection


class ProcessorMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.samples = counter(n.PROCESSOR_SAMPLES, "Samples accounted and written", registry)
        self.batches = counter(n.PROCESSOR_BATCHES, "Batches accounted and written", registry)
        self.dlq = counter(n.PROCESSOR_DLQ, "Messages sent to the dead-letter topic", registry, ["reason"])
        self.late = counter(n.PROCESSOR_LATE, "Samples older than their series' state, kept in late_samples", registry)
        self.duplicates = counter(n.PROCESSOR_DUPLICATES, "Samples seen before (replays), counted once", registry)
        self.clamped = counter(n.PROCESSOR_CLAMPED, "Counter deltas above the sanity rate, not billed", registry)
        self.label_conflicts = counter(
            n.PROCESSOR_LABEL_CONFLICTS,
            "Sandbox labels contradicting the ones fixed at first attribution (not applied)",
            registry,
        )
        self.write_failures = counter(
            n.PROCESSOR_WRITE_FAILURES, "ClickHouse writes that failed and were retried", registry
        )
        self.insert_seconds = Histogram(
            n.PROCESSOR_INSERT_SECONDS, "ClickHouse write time per flush", registry=registry
        )
        self.flush_seconds = Histogram(n.PROCESSOR_FLUSH_SECONDS, "Decode-to-commit time per flush", registry=registry)
        self.freshness = Gauge(n.PROCESSOR_FRESHNESS, "Now minus the newest sample written", registry=registry)
        self.lag = Gauge(n.PROCESSOR_LAG, "Messages behind the partition end", ["partition"], registry=registry)
        self.series = Gauge(n.PROCESSOR_SERIES, "Series with accounting state", registry=registry)
        self.state_bytes = Gauge(n.PROCESSOR_STATE_BYTES, "Memory held by the series state arrays", registry=registry)
        self.checkpoints = counter(n.PROCESSOR_CHECKPOINTS, "Partition checkpoints written to ClickHouse", registry)
        self.checkpoint_seconds = Histogram(
            n.PROCESSOR_CHECKPOINT_SECONDS, "Time to write one checkpoint", registry=registry
        )
        self.evicted = counter(
            n.PROCESSOR_EVICTED, "Stopped sandboxes whose state was dropped after the lateness window", registry
        )
        self.open_incidents = Gauge(n.HEALTH_INCIDENTS_OPEN, "Open health incidents", ["kind"], registry=registry)
        self.incident = Gauge(
            n.HEALTH_INCIDENT, "1 while this incident is open (for Alertmanager)",
            ["kind", "node", "sandbox_id", "tenant"], registry=registry,
        )  # fmt: skip
        self.health_events = counter(n.HEALTH_EVENTS, "Incident opens and closes", registry, ["kind", "event"])
        self.partitions_dropped = counter(
            n.PROCESSOR_PARTITIONS_DROPPED, "Day partitions dropped by retention (raw samples, function load)", registry
        )
        self.rollup_seconds = Histogram(
            n.PROCESSOR_ROLLUP_SECONDS, "Time to recompute the rollups touched", registry=registry
        )
        for reason in ("unknown_version", "truncated", "corrupt", "processing_error"):
            self.dlq.labels(reason)


class Processor:
    """Polls, decodes (bad messages go to the DLQ), flushes by size or age, checkpoints.

    A flush writes usage rows; a failed write is retried with the identical rows until it
    succeeds or the processor stops. Every `checkpoint_interval_s` (and on revocation and
    shutdown) the state of each partition's nodes and the offset after the last flush go to
    ClickHouse, and only then are those offsets committed to Kafka. On assignment the
    processor loads each partition's checkpoint and seeks to its offset, so after a crash
    it replays exactly the batches whose rows may already be stored, from the state they
    were computed from: identical rows, deduplicated by the table key.
    """

    def __init__(
        self,
        settings: ProcessorSettings,
        consumer: Any,
        producer: Any,
        writer: ClickHouseWriter,
        registry: CollectorRegistry,
        clock_ms: Callable[[], int] = wall_ms,
    ) -> None:
        self.s = settings
        self.consumer = consumer
        self.producer = producer
        self.writer = writer
        self.clock_ms = clock_ms
        self.acct = Accountant(settings.max_counter_rate_per_s)
        self.health = HealthDetector(forget_after_ms=int(settings.lateness_s * 1000))
        self.m = ProcessorMetrics(registry)
        self._pending: list[SampleBatch] = []
        self._pending_samples = 0
        self._offsets: dict[TP, int] = {}  # read, not yet flushed
        self._flushed: dict[TP, int] = {}  # covered by the accounting state, not yet checkpointed
        self._node_part: dict[str, TP] = {}  # node -> its partition (the node id is the Kafka key)
        self._dirty = DirtyBuckets()  # rollup buckets written since the last checkpoint
        self.functions = Functions.from_file(settings.functions_file)
        self._last_checkpoint = time.monotonic()
        self._first_at = 0.0
        self.total_samples = 0
        self.total_batches = 0
        self.total_dlq = 0

    def handle(self, msg: Any) -> None:
        try:
            batch = decode(msg.value)
        except WireError as exc:
            self._deadletter(msg, exc.reason, str(exc))
        else:
            if not self._pending:
                self._first_at = time.monotonic()
            self._pending.append(batch)
            self._pending_samples += len(batch)
            self._node_part[batch.node] = (msg.topic, msg.partition)
        self._offsets[(msg.topic, msg.partition)] = msg.offset + 1

    def _deadletter(self, msg: Any, reason: str, detail: str) -> None:
        source = f"{msg.topic}/{msg.partition}/{msg.offset}"
        self._send_dlq(msg.key, msg.value, reason, detail, [("sandmeter-source", source.encode())])

    def _send_dlq(
        self, key: bytes | None, value: bytes, reason: str, detail: str, headers: list[tuple[str, bytes]]
    ) -> None:
        """One dead-letter record: the payload as it was, why, and where it came from."""
        log.warning("dead-letter (%s): %s", reason, detail)
        headers = [*headers, ("sandmeter-dlq-reason", reason.encode()), ("sandmeter-dlq-detail", detail[:500].encode())]
        self.producer.send(self.s.deadletter_topic, key=key, value=value, headers=headers).get(timeout=15)
        self.m.dlq.labels(reason).inc()
        self.total_dlq += 1

    def due(self) -> bool:
        if not self._offsets:
            return False
        return (
            self._pending_samples >= self.s.flush_max_samples
            or time.monotonic() - self._first_at >= self.s.flush_interval_s
            or not self._pending
        )

    def flush(self, stop: threading.Event | None = None) -> None:
        t0 = time.perf_counter()
        batches = self._pending
        result = None
        if batches:
            snap = self.acct.snapshot()
            try:
                result = self.acct.process(batches)
            except Exception:
                log.exception("accounting failed on a flush of %d batches; isolating the bad one", len(batches))
                self.acct.restore(snap)
                batches = self._accountable(batches)
                result = self.acct.process(batches) if batches else None
        if result is not None:
            now = self.clock_ms()
            late = self.acct.late_frame(result.late, now) if result.late is not None and len(result.late) else None
            t1 = time.perf_counter()
            res = result
            fl = self._function_load(result, batches)
            # stopping mid-retry leaves the offsets uncheckpointed: the batches are read again
            self._retry("ClickHouse write", lambda: self.writer.write(batches, res, now, late, fl), stop)
            self.m.insert_seconds.observe(time.perf_counter() - t1)
            self._dirty.note(result.usage)
            self._health(batches, stop)
            self.m.samples.inc(result.samples)
            self.m.batches.inc(len(batches))
            self.m.duplicates.inc(result.duplicates)
            self.m.clamped.inc(result.clamped)
            if result.label_conflicts:
                self.m.label_conflicts.inc(result.label_conflicts)
                log.warning(
                    "%d label(s) contradict a sandbox's tenant or labels fixed at first attribution, not applied "
                    "(check the collectors' label sources), e.g. %s",
                    result.label_conflicts,
                    "; ".join(result.conflict_notes[:2]),
                )
            self.m.late.inc(0 if late is None else len(late))
            self.m.series.set(len(self.acct.series))
            self.m.state_bytes.set(self.acct.series.nbytes())
            newest = max((int(b.ts_ms.max()) for b in batches if len(b)), default=now)
            self.m.freshness.set(max(0.0, (self.clock_ms() - newest) / 1000))
            self.total_samples += result.samples
            self.total_batches += len(batches)
        self._flushed.update(self._offsets)
        self._offsets = {}
        self._pending, self._pending_samples = [], 0
        self.m.flush_seconds.observe(time.perf_counter() - t0)
        if time.monotonic() - self._last_checkpoint >= self.s.checkpoint_interval_s:
            self.checkpoint(stop=stop)

    def _function_load(self, result: Result, batches: list[SampleBatch]) -> pd.DataFrame | None:
        """The usage rows with each sandbox's function and vCPU spec as of the row's batch, and
        the in-flight requests gauge of that batch (-1 where the sandbox exports none)."""
        usage, attrs = result.usage, result.attrs
        if usage.empty or attrs is None:
            return None
        inflight: dict[tuple[str, str], float] = {}
        for b in batches:  # per batch and sandbox: the gauge is one series per sandbox
            if n.M_INFLIGHT in b.metrics:
                sel = b.metric == b.metrics.index(n.M_INFLIGHT)
                for e, v in zip(b.entity[sel].tolist(), b.value[sel].tolist(), strict=True):
                    inflight[(b.batch_id, b.entities[e].id)] = float(v)
        sandboxes = usage["sandbox_id"].tolist()
        df = usage[["tenant", "sandbox_id", "node", "start_ms", "end_ms", "cpu_used_us"]].copy()
        df.insert(1, "function", [self.functions.of(lb, sb) for lb, sb in zip(attrs["labels"], sandboxes, strict=True)])
        df["vcpu_milli"] = attrs["vcpu_milli"].to_numpy(np.uint32)
        df["inflight"] = np.array(
            [inflight.get(k, -1.0) for k in zip(usage["batch_id"].tolist(), sandboxes, strict=True)], np.float64
        )
        df["batch_id"] = usage["batch_id"]
        for c in ("start_ms", "end_ms", "cpu_used_us"):
            df[c] = df[c].astype(np.uint64)
        return df[df["end_ms"] > df["start_ms"]]

    def _accountable(self, batches: list[SampleBatch]) -> list[SampleBatch]:
        """Drops (to the n.PROCESSOR_DLQ) the batches that the accounting itself rejects.

        Each batch is tried once, in order, on the live state; a failure is rolled back to
        the snapshot before it. The state is then rolled back whole, for the caller to
        process the good batches together, so a poisoned message never stops the stream.
        """
        base = self.acct.snapshot()
        good: list[SampleBatch] = []
        for b in batches:
            before = self.acct.snapshot()
            try:
                self.acct.process([b])
            except Exception as exc:
                self.acct.restore(before)
                reason = f"{b.batch_id}: {exc}"
                self._send_dlq(b.node.encode(), encode(b), "processing_error", reason, kafka_headers(b.batch_id))
                continue
            good.append(b)
        self.acct.restore(base)
        return good

    def _health(self, batches: list[SampleBatch], stop: threading.Event | None) -> None:
        """Runs the incident state machines; writes, publishes and exports what changed."""
        events = self.health.observe(batches)
        if events:
            self._retry("health events write", lambda: self.writer.write_health(events), stop)
            for ev in events:
                self._publish_alert(ev)
                self.m.health_events.labels(ev.kind, ev.event).inc()
                log.warning("incident %s %s: %s", ev.event, ev.incident_id, ev.evidence)
        self._export_incidents()

    def _publish_alert(self, ev: HealthEvent) -> None:
        try:
            self.producer.send(self.s.alerts_topic, key=ev.node.encode(), value=ev.to_json().encode())
        except Exception as exc:  # the table has it; the topic is a notification
            log.error("could not publish %s to %s: %s", ev.incident_id, self.s.alerts_topic, exc)

    def _export_incidents(self) -> None:
        self.m.incident.clear()
        counts = dict.fromkeys(n.INCIDENT_KINDS, 0)
        for kind, node, sandbox, tenant in self.health.open_incidents():
            self.m.incident.labels(kind, node, sandbox, tenant).set(1)
            counts[kind] += 1
        for kind, c in counts.items():
            self.m.open_incidents.labels(kind).set(c)

    def _nodes(self, tp: TP) -> frozenset[str]:
        return frozenset(nd for nd, p in self._node_part.items() if p == tp)

    def _retry(self, what: str, fn: Callable[[], Any], stop: threading.Event | None) -> Any:
        backoff = 0.5
        while True:
            try:
                return fn()
            except WriteError as exc:
                self.m.write_failures.inc()
                log.error("%s failed, retrying in %.1f s: %s", what, backoff, exc)
                if (stop or threading.Event()).wait(backoff):
                    raise
                backoff = min(backoff * 2, 10.0)

    def checkpoint(self, parts: list[TP] | None = None, stop: threading.Event | None = None) -> None:
        """Saves the state and offsets of flushed partitions, then commits those offsets."""
        self._last_checkpoint = time.monotonic()
        todo = {tp: off for tp, off in self._flushed.items() if parts is None or tp in parts}
        if not todo:
            return
        t0 = time.perf_counter()
        now = self.clock_ms()
        self._evict(now)
        self._retry("raw samples write", self.writer.settle, stop)  # all written before any checkpoint
        if self._dirty:  # rollups first: a checkpoint promises everything before it is rolled up
            dirty = self._dirty.take()
            t1 = time.perf_counter()
            self._retry("rollups", lambda: self.writer.roll(dirty), stop)
            self.m.rollup_seconds.observe(time.perf_counter() - t1)
        cps = []
        for (t, p), off in todo.items():
            nodes = self._nodes((t, p))
            cps.append(Checkpoint(t, p, off, now, export_state(self.acct, nodes), self.health.export(nodes)))
        self._retry("checkpoint", lambda: self.writer.save_checkpoints(cps), stop)
        for tp in todo:
            self._flushed.pop(tp, None)
        self.m.checkpoints.inc(len(cps))
        self.m.checkpoint_seconds.observe(time.perf_counter() - t0)
        self._commit(todo)

    def _evict(self, now_ms: int) -> None:
        cutoff = now_ms - int(self.s.lateness_s * 1000)
        # a stopped sandbox's allocation cursor is its stop time: rebuild only when one is old enough
        if not any(s.stopped and (s.alloc_cursor or 0) < cutoff for s in self.acct.sandboxes.values()):
            return
        before = len(self.acct.sandboxes)
        self.acct = rebuilt(self.acct, evict_before_ms=cutoff)
        gone = before - len(self.acct.sandboxes)
        if gone:
            self.m.evicted.inc(gone)
            log.debug("evicted %d stopped sandboxes; %d keep state", gone, len(self.acct.sandboxes))

    def _commit(self, offsets: dict[TP, int]) -> None:
        """Kafka's committed offsets follow the checkpoints; the checkpoint is what counts."""
        from kafka import TopicPartition
        from kafka.structs import OffsetAndMetadata

        try:
            self.consumer.commit({TopicPartition(t, p): OffsetAndMetadata(o, "", -1) for (t, p), o in offsets.items()})
        except Exception as exc:  # e.g. a rebalance in progress: the checkpoint holds the position
            log.warning("offset commit failed (the checkpoint has them): %s", exc)

    def on_assigned(self, tps: list[Any]) -> None:
        """Loads each new partition's checkpoint: its nodes' state, and where to read from."""
        by_topic: dict[str, list[int]] = {}
        for tp in tps:
            by_topic.setdefault(tp.topic, []).append(tp.partition)
        for topic, parts in by_topic.items():
            cps = self._retry(
                "loading checkpoints", functools.partial(self.writer.load_checkpoints, topic, parts), None
            )
            for cp in cps.values():
                nodes = frozenset(cp.state.sandboxes["node"].tolist())
                self._drop_nodes(nodes)
                import_state(self.acct, cp.state)
                self.health.import_(cp.health)
                for nd in nodes:
                    self._node_part[nd] = (cp.topic, cp.partition)
                self._seek(cp)
            for p in set(parts) - set(cps):
                # Kafka's committed offset is only ever behind a checkpoint (commits follow them);
                # one without a checkpoint visible (a replica that has not got it yet, docs/
                # architecture.md) has no state to continue from: read the partition again
                self._seek_to_beginning(topic, p)
            log.info(
                "assigned %s partitions %s; resumed %d from checkpoints (%d series)",
                topic,
                sorted(parts),
                len(cps),
                sum(len(c.state.series) for c in cps.values()),
            )

    def _seek(self, cp: Checkpoint) -> None:
        from kafka import TopicPartition

        self.consumer.seek(TopicPartition(cp.topic, cp.partition), cp.offset)

    def _seek_to_beginning(self, topic: str, partition: int) -> None:
        from kafka import TopicPartition

        self.consumer.seek_to_beginning(TopicPartition(topic, partition))

    def on_revoked(self, tps: list[Any]) -> None:
        """Flushes and checkpoints what was read, then forgets the partitions' nodes."""
        if self._pending or self._offsets:
            self.flush()
        gone = [(tp.topic, tp.partition) for tp in tps]
        self.checkpoint(parts=gone)
        for tp in gone:
            nodes = self._nodes(tp)
            self._drop_nodes(nodes)
            for nd in nodes:
                del self._node_part[nd]
        if gone:
            log.info("revoked partitions %s", sorted(p for _, p in gone))

    def _drop_nodes(self, nodes: frozenset[str]) -> None:
        """Forgets these nodes' accounting and health state (they moved, or are about to be loaded)."""
        self.health.drop_nodes(nodes)
        held = {s.node for s in self.acct.sandboxes.values()}
        if held & nodes:
            self.acct = rebuilt(self.acct, nodes=frozenset(held - nodes))

    def retention(self) -> None:
        """Drops raw-sample days older than `raw_retention_days` (0: never) and function-load days
        older than two; a failure waits for the next hour."""
        if self.s.keep_raw_samples and self.s.raw_retention_days:
            self._drop_old(n.T_SAMPLES, self.s.raw_retention_days)
        self._drop_old(n.T_FUNCTION_LOAD, FUNCTION_LOAD_DAYS)

    def _drop_old(self, table: str, days: int) -> None:
        cutoff = time.gmtime(self.clock_ms() / 1000 - days * 86400)
        try:
            dropped = self.writer.drop_days_before(table, int(time.strftime("%Y%m%d", cutoff)))
        except WriteError as exc:
            log.error("retention failed, next try in an hour: %s", exc)
            return
        if dropped:
            self.m.partitions_dropped.inc(len(dropped))
            log.info("retention: dropped %s days %s", table, ", ".join(dropped))

    def update_lag(self) -> None:
        try:
            parts = list(self.consumer.assignment())
            if not parts:
                return
            ends = self.consumer.end_offsets(parts)
            for tp in parts:
                self.m.lag.labels(str(tp.partition)).set(max(0, ends[tp] - self.consumer.position(tp)))
        except Exception as exc:  # lag is best-effort telemetry
            log.debug("lag update failed: %s", exc)

    def run(self, stop: threading.Event) -> None:
        last_status = last_lag = time.monotonic()
        last_retention = -3600.0
        while not stop.is_set():
            records = self.consumer.poll(timeout_ms=200, max_records=2000)
            for msgs in records.values():
                for msg in msgs:
                    self.handle(msg)
            if self.due():
                self.flush(stop)
            now = time.monotonic()
            if self._flushed and now - self._last_checkpoint >= self.s.checkpoint_interval_s:
                self.checkpoint(stop=stop)  # the stream went quiet after the last flush
            if now - last_retention >= 3600:
                last_retention = now
                self.retention()
            if now - last_lag >= 5:
                last_lag = now
                self.update_lag()
            if now - last_status >= self.s.status_every_s:
                last_status = now
                log.info(
                    "processor: samples=%d series=%d sandboxes=%d dlq=%d",
                    self.total_samples,
                    len(self.acct.series),
                    len(self.acct.sandboxes),
                    self.total_dlq,
                )
        if self._pending or self._offsets:
            self.flush()
        self.checkpoint()

    def close(self) -> None:
        """Leaves the consumer group at once, so its partitions move without a session timeout."""
        self.consumer.close(autocommit=False)
        self.producer.close(timeout=5)
        self.writer.close()  # a raw insert still in flight finishes (unacknowledged, it is replayed anyway)


def build_processor(s: ProcessorSettings, registry: CollectorRegistry) -> Processor:
    from kafka import KafkaConsumer, KafkaProducer

    from pipeline.writer import open_writer

    consumer = KafkaConsumer(
        **s.kafka_kwargs(),
        group_id=s.group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=s.session_timeout_ms,
        heartbeat_interval_ms=max(500, s.session_timeout_ms // 3),
        max_poll_interval_ms=s.max_poll_interval_ms,
        max_partition_fetch_bytes=8 << 20,
    )
    producer = KafkaProducer(**s.kafka_kwargs(), acks="all")
    writer = open_writer(s, s.keep_raw_samples)
    proc = Processor(s, consumer, producer, writer, registry)
    consumer.subscribe([s.topic], listener=_listener(proc))
    return proc


def _listener(proc: Processor) -> Any:
    """kafka-python's ConsumerRebalanceListener, calling into the processor."""
    from kafka import ConsumerRebalanceListener

    class Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
        def on_partitions_revoked(self, revoked: Any) -> None:
            proc.on_revoked(list(revoked))

        def on_partitions_assigned(self, assigned: Any) -> None:
            proc.on_assigned(list(assigned))

    return Rebalance()
