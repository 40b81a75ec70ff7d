"""Delivers encoded batches to Kafka in order, holding them while the broker is away."""

from __future__ import annotations

import collections
import logging
import threading
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Gauge

from sandmeter.metrics import counter
from sandmeter.wire import Encoder, SampleBatch, kafka_headers

log = logging.getLogger(__name__)

BATCHES_SENT = "sandmeter_collector_batches_sent_total"
SPOOL_DEPTH = "sandmeter_collector_spool_batches"
SPOOL_BYTES = "sandmeter_collector_spool_bytes"
SPOOL_DROPPED = "sandmeter_collector_spool_dropped_total"
WIRE_BYTES = "sandmeter_collector_wire_bytes_total"


class BatchSink(Protocol):
    def put(self, batch: SampleBatch) -> None: ...
    def close(self, timeout_s: float) -> None: ...


class KafkaSink:
    """One sender thread sends queued batches oldest first; a failed send is retried.

    The queue is bounded by `max_batches`: when full the oldest batch is dropped and
    counted, never silently.
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        registry: CollectorRegistry,
        max_batches: int = 10_000,
        producer: Any = None,
    ) -> None:
        self.topic = topic
        self.max_batches = max_batches
        self._producer = producer
        self._bootstrap = bootstrap
        self._q: collections.deque[tuple[str, bytes, list[tuple[str, bytes]]]] = collections.deque()
        self._bytes = 0
        self._cv = threading.Condition()
        self._closing = False
        self._enc = Encoder()
        self.sent = counter(BATCHES_SENT, "Batches acknowledged by Kafka", registry)
        self.wire_bytes = counter(WIRE_BYTES, "Encoded batch bytes sent", registry)
        self.dropped = counter(SPOOL_DROPPED, "Batches dropped because the spool was full", registry)
        self.depth = Gauge(SPOOL_DEPTH, "Batches waiting to be sent", registry=registry)
        self.depth_bytes = Gauge(SPOOL_BYTES, "Bytes waiting to be sent", registry=registry)
        self._thread = threading.Thread(target=self._run, name="kafka-sink", daemon=True)
        self._thread.start()

    def put(self, batch: SampleBatch) -> None:
        payload = self._enc.encode(batch)
        with self._cv:
            while len(self._q) >= self.max_batches:
                _, old, _ = self._q.popleft()
                self._bytes -= len(old)
                self.dropped.inc()
                log.error("spool full (%d batches): dropped the oldest batch", self.max_batches)
            self._q.append((batch.node, payload, kafka_headers(batch)))
            self._bytes += len(payload)
            self._gauges()
            self._cv.notify()

    def _gauges(self) -> None:
        self.depth.set(len(self._q))
        self.depth_bytes.set(self._bytes)

    def _connect(self) -> Any:
        from kafka import KafkaProducer

        return KafkaProducer(
            bootstrap_servers=self._bootstrap,
            acks="all",
            linger_ms=5,
            max_in_flight_requests_per_connection=1,
            request_timeout_ms=10_000,
        )

    def _run(self) -> None:
        backoff = 0.2
        while True:
            with self._cv:
                while not self._q and not self._closing:
                    self._cv.wait()
                if not self._q:
                    return
                node, payload, headers = self._q[0]
            try:
                if self._producer is None:
                    self._producer = self._connect()
                self._producer.send(self.topic, key=node.encode(), value=payload, headers=headers).get(timeout=15)
            except Exception as exc:
                log.warning("send failed, will retry in %.1f s: %s", backoff, exc)
                if self._closing and backoff > 2:
                    return
                threading.Event().wait(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = 0.2
            with self._cv:
                self._q.popleft()
                self._bytes -= len(payload)
                self._gauges()
            self.sent.inc()
            self.wire_bytes.inc(len(payload))

    def pending(self) -> int:
        with self._cv:
            return len(self._q)

    def close(self, timeout_s: float = 10.0) -> None:
        with self._cv:
            self._closing = True
            self._cv.notify()
        self._thread.join(timeout=timeout_s)
        if self._producer is not None:
            self._producer.close(timeout=2)
