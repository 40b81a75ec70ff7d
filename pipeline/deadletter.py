"""Dead letters: a record the processor cannot account, sent on exactly as it arrived.

The dead-letter record has the original key, value and headers (a null value stays null),
plus `sandmeter-source` (topic/partition/offset it came from), `sandmeter-dlq-reason` (one of
`contracts.names.DLQ_REASONS`) and `sandmeter-dlq-detail` (up to 500 bytes). It is never made
from decoded state, so what an operator replays is byte for byte what the producer sent.
Sending waits for the broker's acknowledgement (a few seconds at most); when the broker does
not answer, the step that asked raises MessageRejected and the record is tried again later,
so a record is never skipped without its dead letter (it may be sent twice: harmless).
"""

from __future__ import annotations

import logging

from prometheus_client import Counter

from contracts import names as n
from pipeline.kafka import ProduceError, Producer
from pipeline.steps import MessageRejected, Record

log = logging.getLogger(__name__)
SOURCE, REASON, DETAIL = "sandmeter-source", "sandmeter-dlq-reason", "sandmeter-dlq-detail"
ACK_TIMEOUT_S = 3.0


class DeadLetters:
    def __init__(self, producer: Producer, topic: str, counter: Counter) -> None:
        self.producer = producer
        self.topic = topic
        self.counter = counter
        self.total = 0
        for reason in n.DLQ_REASONS:
            counter.labels(reason)

    def send(self, rec: Record, reason: str, detail: str) -> None:
        """Dead-letters `rec`; raises MessageRejected when the broker did not take it."""
        if reason not in n.DLQ_REASONS:
            raise ValueError(f"not a dead-letter reason: {reason}")
        headers = [
            *rec.headers,
            (SOURCE, rec.source.encode()),
            (REASON, reason.encode()),
            (DETAIL, detail.encode("utf-8", "replace")[:500]),
        ]
        try:
            self.producer.send(self.topic, rec.key, rec.value, headers, ACK_TIMEOUT_S)
        except ProduceError as exc:
            log.error("dead-letter topic %s unavailable, %s waits: %s", self.topic, rec.source, exc)
            raise MessageRejected from exc
        log.warning("dead-letter %s (%s): %s", rec.source, reason, detail[:200])
        self.counter.labels(reason).inc()
        self.total += 1
