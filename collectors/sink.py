"""Delivers encoded batches to Kafka in order, through the on-disk spool.

Every batch is spooled first and removed only when the broker has acknowledged it
(acks=all), so a broker outage or a collector restart loses nothing. One sender thread
sends the oldest batch, waits for its acknowledgement, then sends the next: a later batch
is never in flight while an earlier one may still fail, so per-node order holds. A send
that failed but reached the broker is sent again; consumers recognise the duplicate by
its batch id.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Gauge

from collectors.spool import DiskSpool, SpoolRecord
from contracts import names as n
from contracts.metrics import counter
from contracts.wire import Encoder, SampleBatch, kafka_headers

log = logging.getLogger(__name__)


class BatchSink(Protocol):
    def put(self, batch: SampleBatch) -> None: ...
    def close(self, timeout_s: float) -> None: ...


class KafkaSink:
    def __init__(
        self,
        bootstrap: str,
        topic: str,
        registry: CollectorRegistry,
        spool_dir: Path,
        max_bytes: int = 256 << 20,
        max_batches: int = 100_000,
        fsync: bool = True,
        producer: Any = None,
        client_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        self.topic = topic
        self._producer = producer
        self._owns_producer = producer is None
        # the settings' Kafka client arguments: TLS and SASL (KafkaPart.kafka_kwargs)
        self._client_kwargs = {"bootstrap_servers": bootstrap, **(client_kwargs or {})}
        self._spool = DiskSpool(spool_dir, max_bytes, max_batches, fsync)
        self._cv = threading.Condition()
        self._closing = False
        self._healthy = False  # the last send succeeded: closing waits (a while) for the rest
        self._enc = Encoder()
        self.sent = counter(n.COLLECTOR_BATCHES_SENT, "Batches acknowledged by Kafka", registry)
        self.send_errors = counter(n.COLLECTOR_SEND_ERRORS, "Failed sends to Kafka (the batch stays spooled)", registry)
        self.wire_bytes = counter(n.COLLECTOR_WIRE_BYTES, "Encoded batch bytes sent", registry)
        self.dropped = counter(
            n.COLLECTOR_SPOOL_DROPPED, "Spooled batches dropped: full spool, unreadable file", registry, ["reason"]
        )
        for reason in ("full", "corrupt"):
            self.dropped.labels(reason)
        self.depth = Gauge(n.COLLECTOR_SPOOL_DEPTH, "Batches waiting to be sent", registry=registry)
        self.depth_bytes = Gauge(n.COLLECTOR_SPOOL_BYTES, "Bytes waiting to be sent", registry=registry)
        limit = Gauge(n.COLLECTOR_SPOOL_LIMIT, "Spool size at which the oldest batches are dropped", registry=registry)
        limit.set(max_bytes)
        if len(self._spool):
            log.info("spool %s: %d batches from an earlier run to send first", spool_dir, len(self._spool))
        self._gauges()
        self._thread = threading.Thread(target=self._run, name="kafka-sink", daemon=True)
        self._thread.start()

    def put(self, batch: SampleBatch) -> None:
        rec = SpoolRecord(batch.node, batch.batch_id, self._enc.encode(batch))
        with self._cv:
            dropped = self._spool.append(rec)
            self._gauges()
            self._cv.notify()
        if dropped:
            self.dropped.labels("full").inc(dropped)
            log.error(
                "spool full (%d batches, %d bytes): dropped the %d oldest batches",
                self._spool.max_batches,
                self._spool.max_bytes,
                dropped,
            )

    def _gauges(self) -> None:
        self.depth.set(len(self._spool))
        self.depth_bytes.set(self._spool.bytes)

    def _connect(self) -> Any:
        from kafka import KafkaProducer

        return KafkaProducer(
            **self._client_kwargs,
            acks="all",
            linger_ms=0,
            max_in_flight_requests_per_connection=1,
            # no producer-id state on the broker to lose: one batch in flight at a time already
            # keeps order, and a re-sent batch is a duplicate consumers recognise by its id
            enable_idempotence=False,
            request_timeout_ms=5_000,
            # the client gives up on a record before `get` does, so no record is left pending
            # inside a client being replaced
            delivery_timeout_ms=10_000,
            max_block_ms=5_000,  # a send while the broker is away fails fast and is retried
            reconnect_backoff_max_ms=2_000,
        )

    def _next(self) -> tuple[int, SpoolRecord] | None:
        """The oldest spooled record; waits for one. None once closing with nothing left."""
        with self._cv:
            while True:
                while not len(self._spool) and not self._closing:
                    self._cv.wait()
                try:
                    head = self._spool.head()
                except ValueError as exc:
                    self.dropped.labels("corrupt").inc()
                    log.error("dropped an unreadable spool file: %s", exc)
                    self._gauges()
                    continue
                return head

    def _run(self) -> None:
        backoff = 0.2
        failing_since: float | None = None
        while True:
            head = self._next()
            if head is None:
                return
            seq, rec = head
            try:
                if self._producer is None:
                    self._producer = self._connect()
                fut = self._producer.send(
                    self.topic, key=rec.key.encode(), value=rec.payload, headers=kafka_headers(rec.batch_id)
                )
                fut.get(timeout=15)
            except Exception as exc:
                self.send_errors.inc()
                self._drop_producer()  # a fresh client after a failure: no stale metadata or fatal state
                now = time.monotonic()
                self._healthy = False
                if failing_since is None:
                    failing_since = now
                    log.warning("send failed, batches stay spooled and are retried: %s", exc)
                if self._closing:
                    return
                with self._cv:
                    self._cv.wait(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            if failing_since is not None:
                log.info("sending again after %.1f s; %d batches spooled", time.monotonic() - failing_since, len(self))
                failing_since = None
            backoff = 0.2
            self._healthy = True
            with self._cv:
                self._spool.pop(seq)
                self._gauges()
            self.sent.inc()
            self.wire_bytes.inc(len(rec.payload))

    def _drop_producer(self) -> None:
        if self._producer is not None and self._owns_producer:
            with contextlib.suppress(Exception):
                self._producer.close(timeout=1)
            self._producer = None

    def __len__(self) -> int:
        with self._cv:
            return len(self._spool)

    def close(self, timeout_s: float = 10.0) -> None:
        """Sends what it can within `timeout_s` while sends succeed; with the broker away (or
        not reached yet) it stops at once: the batches are spooled, the next start sends them."""
        deadline = time.monotonic() + timeout_s
        while len(self) and time.monotonic() < deadline and self._thread.is_alive() and self._healthy:
            time.sleep(0.05)
        if not self._healthy:  # the sender may sit in a client call that waits out its own timeout
            deadline = min(deadline, time.monotonic() + 0.5)
        with self._cv:
            self._closing = True
            self._cv.notify_all()
        self._thread.join(timeout=max(0.1, deadline - time.monotonic()))
        left = len(self)
        if left:
            log.warning("closing with %d batches spooled; the next start sends them", left)
        if self._producer is not None:
            try:
                self._producer.close(timeout=2 if self._healthy else 0.5)
            except Exception as exc:  # nothing is lost: unacknowledged batches are still spooled
                log.warning("producer did not close cleanly: %s", exc)
        self._spool.close()
