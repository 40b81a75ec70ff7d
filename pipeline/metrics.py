"""The processor's Prometheus metrics (names in contracts/names.py, documented in docs/operations.md)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Gauge, Histogram

from contracts import names as n
from contracts.metrics import counter


class ProcessorMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.samples = counter(n.PROCESSOR_SAMPLES, "Samples accounted and written", registry)
        self.batches = counter(n.PROCESSOR_BATCHES, "Batches accounted and written", registry)
        self.dlq = counter(n.PROCESSOR_DLQ, "Messages sent to the dead-letter topic", registry, ["reason"])
        self.rejected = counter(
            n.PROCESSOR_REJECTED, "Samples of accepted batches not billed, kept in late_samples", registry, ["reason"]
        )
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
        self.write_outage = Gauge(
            n.PROCESSOR_WRITE_OUTAGE, "Seconds the oldest failing ClickHouse write has been failing", registry=registry
        )
        self.paused = Gauge(n.PROCESSOR_PAUSED, "1 while consumption is paused by backpressure", registry=registry)
        self.insert_seconds = Histogram(
            n.PROCESSOR_INSERT_SECONDS, "ClickHouse write time per flush", registry=registry
        )
        self.flush_seconds = Histogram(n.PROCESSOR_FLUSH_SECONDS, "Accounting time per flush", registry=registry)
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
            ["kind", "node", "sandbox_id", "tenant", "disk"], registry=registry,
        )  # fmt: skip
        self.health_events = counter(n.HEALTH_EVENTS, "Incident opens and closes", registry, ["kind", "event"])
        self.rollup_seconds = Histogram(
            n.PROCESSOR_ROLLUP_SECONDS, "Time to recompute the rollups touched", registry=registry
        )
        for reason in n.REJECT_REASONS:
            self.rejected.labels(reason)
