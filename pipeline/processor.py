"""`sandmeter process`: consume batches, account, write ClickHouse, then commit offsets."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, Histogram

from pipeline.accounting import Accountant
from pipeline.writer import ClickHouseWriter, WriteError
from sandmeter.clock import wall_ms
from sandmeter.metrics import counter
from sandmeter.settings import ProcessorSettings
from sandmeter.wire import SampleBatch, WireError, decode, encode, kafka_headers

log = logging.getLogger(__name__)

SAMPLES = "sandmeter_processor_samples_total"
BATCHES = "sandmeter_processor_batches_total"
DLQ = "sandmeter_processor_deadletter_total"
LATE = "sandmeter_processor_late_samples_total"
DUPLICATES = "sandmeter_processor_duplicate_samples_total"
CLAMPED = "sandmeter_processor_clamped_deltas_total"
INSERT_SECONDS = "sandmeter_processor_insert_duration_seconds"
FLUSH_SECONDS = "sandmeter_processor_flush_duration_seconds"
FRESHNESS = "sandmeter_processor_freshness_seconds"
LAG = "sandmeter_processor_consumer_lag"
SERIES = "sandmeter_processor_series"
WRITE_FAILURES = "sandmeter_processor_write_failures_total"


class ProcessorMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.samples = counter(SAMPLES, "Samples accounted and written", registry)
        self.batches = counter(BATCHES, "Batches accounted and written", registry)
        self.dlq = counter(DLQ, "Messages sent to the dead-letter topic", registry, ["reason"])
        self.late = counter(LATE, "Samples older than their series' state, kept in late_samples", registry)
        self.duplicates = counter(DUPLICATES, "Samples seen before (replays), counted once", registry)
        self.clamped = counter(CLAMPED, "Counter deltas above the sanity rate, not billed", registry)
        self.write_failures = counter(WRITE_FAILURES, "ClickHouse writes that failed and were retried", registry)
        self.insert_seconds = Histogram(INSERT_SECONDS, "ClickHouse write time per flush", registry=registry)
        self.flush_seconds = Histogram(FLUSH_SECONDS, "Decode-to-commit time per flush", registry=registry)
        self.freshness = Gauge(FRESHNESS, "Now minus the newest sample written", registry=registry)
        self.lag = Gauge(LAG, "Messages behind the partition end", ["partition"], registry=registry)
        self.series = Gauge(SERIES, "Series with accounting state", registry=registry)
        for reason in ("unknown_version", "truncated", "corrupt", "processing_error"):
            self.dlq.labels(reason)


class Processor:
    """Polls, decodes (bad messages go to the DLQ), flushes by size or age.

    Offsets are committed only after ClickHouse acknowledged the whole flush; a failed
    write is retried with the identical rows until it succeeds or the processor stops.
    """

    def __init__(
        self,
        settings: ProcessorSettings,
        consumer: Any,
        dlq_producer: Any,
        writer: ClickHouseWriter,
        registry: CollectorRegistry,
        clock_ms: Callable[[], int] = wall_ms,
    ) -> None:
        self.s = settings
        self.consumer = consumer
        self.dlq_producer = dlq_producer
        self.writer = writer
        self.clock_ms = clock_ms
        self.acct = Accountant(settings.max_counter_rate_per_s)
        self.m = ProcessorMetrics(registry)
        self._pending: list[SampleBatch] = []
        self._pending_samples = 0
        self._offsets: dict[Any, int] = {}
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
        self.dlq_producer.send(self.s.deadletter_topic, key=key, value=value, headers=headers).get(timeout=15)
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
            backoff = 0.5
            while True:
                t1 = time.perf_counter()
                try:
                    self.writer.write(batches, result, now, late)
                    break
                except WriteError as exc:
                    self.m.write_failures.inc()
                    log.error("ClickHouse write failed, retrying in %.1f s: %s", backoff, exc)
                    # stopping mid-retry leaves offsets uncommitted: the batches are re-read
                    if (stop or threading.Event()).wait(backoff):
                        raise
                    backoff = min(backoff * 2, 10.0)
            self.m.insert_seconds.observe(time.perf_counter() - t1)
            self.m.samples.inc(result.samples)
            self.m.batches.inc(len(batches))
            self.m.duplicates.inc(result.duplicates)
            self.m.clamped.inc(result.clamped)
            self.m.late.inc(0 if late is None else len(late))
            self.m.series.set(len(self.acct.series))
            newest = max((int(b.ts_ms.max()) for b in batches if len(b)), default=now)
            self.m.freshness.set(max(0.0, (self.clock_ms() - newest) / 1000))
            self.total_samples += result.samples
            self.total_batches += len(batches)
        self._commit()
        self._pending, self._pending_samples = [], 0
        self.m.flush_seconds.observe(time.perf_counter() - t0)

    def _accountable(self, batches: list[SampleBatch]) -> list[SampleBatch]:
        """Drops (to the DLQ) the batches that the accounting itself rejects.

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

    def _commit(self) -> None:
        from kafka import TopicPartition
        from kafka.structs import OffsetAndMetadata

        if not self._offsets:
            return
        offsets = {TopicPartition(t, p): OffsetAndMetadata(o, "", -1) for (t, p), o in self._offsets.items()}
        self.consumer.commit(offsets)
        self._offsets = {}

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
        while not stop.is_set():
            records = self.consumer.poll(timeout_ms=200, max_records=2000)
            for msgs in records.values():
                for msg in msgs:
                    self.handle(msg)
            if self.due():
                self.flush(stop)
            now = time.monotonic()
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

    def close(self) -> None:
        """Leaves the consumer group at once, so its partitions move without a session timeout."""
        self.consumer.close(autocommit=False)
        self.dlq_producer.close(timeout=5)


def build_processor(s: ProcessorSettings, registry: CollectorRegistry) -> Processor:
    from kafka import KafkaConsumer, KafkaProducer

    from pipeline.writer import client

    consumer = KafkaConsumer(
        s.topic,
        bootstrap_servers=s.kafka_bootstrap,
        group_id=s.group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=s.session_timeout_ms,
        heartbeat_interval_ms=max(500, s.session_timeout_ms // 3),
        max_partition_fetch_bytes=8 << 20,
    )
    producer = KafkaProducer(bootstrap_servers=s.kafka_bootstrap, acks="all")
    writer = ClickHouseWriter(client(s.clickhouse_host, s.clickhouse_port, s.clickhouse_database), s.keep_raw_samples)
    return Processor(s, consumer, producer, writer, registry)
