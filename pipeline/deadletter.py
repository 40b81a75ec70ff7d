"""Dead letters: a record the processor cannot account, sent on exactly as it arrived.

The dead-letter record has the original key, value and headers (a null value stays null),
plus `sandmeter-source` (topic/partition/offset it came from), `sandmeter-dlq-reason` (one of
`contracts.names.DLQ_REASONS`) and `sandmeter-dlq-detail` (up to 500 bytes). It is never made
from decoded state, so what an operator replays is byte for byte what the producer sent.

Sending waits for the broker's acknowledgement (a few seconds at most). When the broker is
away, the step that asked raises MessageRejected and the record is tried again later, so no
record is skipped without its dead letter (one may be sent twice: harmless). When the client
or the broker refuses the record itself, which retrying cannot change, it goes as near to its
original as they take: kafka-python sends no null header value and no record without both key
and value (those go empty, named in `sandmeter-dlq-null`); a record too large for the topic goes
without its value, its size and SHA-256 in `sandmeter-dlq-original`.
"""

from __future__ import annotations

import hashlib
import logging

from prometheus_client import Counter

from contracts import names as n
from pipeline.kafka import ProduceError, Producer
from pipeline.steps import MessageRejected, Record

log = logging.getLogger(__name__)
SOURCE, REASON, DETAIL = "sandmeter-source", "sandmeter-dlq-reason", "sandmeter-dlq-detail"
NULL, ORIGINAL = "sandmeter-dlq-null", "sandmeter-dlq-original"
ACK_TIMEOUT_S = 3.0
Headers = list[tuple[str, bytes | None]]


class DeadLetters:
    def __init__(self, producer: Producer, topic: str, counter: Counter) -> None:
        self.producer = producer
        self.topic = topic
        self.counter = counter
        self.total = 0
        for reason in n.DLQ_REASONS:
            counter.labels(reason)

    def send(self, rec: Record, reason: str, detail: str) -> None:
        """Dead-letters `rec`; raises MessageRejected when the broker did not take it (yet)."""
        if reason not in n.DLQ_REASONS:
            raise ValueError(f"not a dead-letter reason: {reason}")
        ours: Headers = [
            (SOURCE, rec.source.encode()),
            (REASON, reason.encode()),
            (DETAIL, detail.encode("utf-8", "replace")[:500]),
        ]
        try:
            self._send(rec.key, rec.value, [*rec.headers, *ours])
        except ProduceError as exc:
            if exc.retriable:
                log.error("dead-letter topic %s unavailable, %s waits: %s", self.topic, rec.source, exc)
                raise MessageRejected from exc
            self._as_near_as_taken(rec, ours, exc)
        log.warning("dead-letter %s (%s): %s", rec.source, reason, detail[:200])
        self.counter.labels(reason).inc()
        self.total += 1

    def _send(self, key: bytes | None, value: bytes | None, headers: Headers) -> None:
        self.producer.send(self.topic, key, value, headers, ACK_TIMEOUT_S)

    def _as_near_as_taken(self, rec: Record, ours: Headers, exc: ProduceError) -> None:
        nulls = [k for k, v in rec.headers if v is None] + (["key"] if rec.key is None and rec.value is None else [])
        headers: Headers = [(k, b"" if v is None else v) for k, v in rec.headers]
        key = b"" if rec.key is None and rec.value is None else rec.key
        near = [*headers, *ours, (NULL, ",".join(nulls).encode())]
        try:
            self._send(key, rec.value, near)
            return
        except ProduceError as again:
            if again.retriable:
                raise MessageRejected from again
        digest = hashlib.sha256(rec.value or b"").hexdigest()
        original = f"{len(rec.value or b'')} bytes, sha256 {digest}, not kept: {exc}".encode()[:500]
        log.error("dead-letter of %s refused as it is (%s); sent without its value", rec.source, exc)
        try:
            self._send(key, b"", [*near, (ORIGINAL, original)])
        except ProduceError as last:
            if last.retriable:
                raise MessageRejected from last
            log.critical("%s could not be dead-lettered at all (%s); skipped, see this log", rec.source, last)
