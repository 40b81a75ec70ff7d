"""Decode: a Kafka record becomes a SampleBatch, or a dead letter with the reason why.

In order: a null value (a tombstone) or no bytes is `empty`; more than `max_bytes` is
`too_large` (before any decompression); what `contracts.wire.decode` refuses keeps its reason
(`truncated`, `corrupt`, `unknown_version`), and anything else it raises is `corrupt`; a batch
whose node id is empty, or is not the record's key, is `bad_key` (the key decides the
partition, and a node's state must live on exactly one). Headers are never trusted or
required: the payload describes itself, and headers travel on to a dead letter as they came.
"""

from __future__ import annotations

from contracts import names as n
from contracts.wire import SampleBatch, WireError, decode
from pipeline.deadletter import DeadLetters
from pipeline.steps import Item, Outbox, Record, Relay, Step


class Refused(Exception):  # a verdict on a record, not a failure
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def decoded(rec: Record, max_bytes: int) -> SampleBatch:
    """The batch in `rec`, or Refused with a dead-letter reason."""
    if not rec.value:
        raise Refused(n.DLQ_EMPTY, "null value (tombstone)" if rec.value is None else "no bytes")
    if len(rec.value) > max_bytes:
        raise Refused(n.DLQ_TOO_LARGE, f"{len(rec.value)} bytes, more than {max_bytes}")
    try:
        batch = decode(rec.value)
    except WireError as exc:
        raise Refused(exc.reason, str(exc)) from exc
    except Exception as exc:  # decode promises WireError only; a record must not be able to prove it wrong
        raise Refused(n.DLQ_CORRUPT, f"{type(exc).__name__}: {exc}") from exc
    if not batch.node or rec.key != batch.node.encode():
        raise Refused(n.DLQ_BAD_KEY, f"key {rec.key!r:.80} for a batch of node {batch.node!r:.80}")
    return batch


class DecodeStep(Relay[Item]):
    def __init__(self, next_step: Step[Item], deadletters: DeadLetters, max_bytes: int) -> None:
        self.out = Outbox(next_step)
        self.dlq = deadletters
        self.max_bytes = max_bytes

    def submit(self, rec: Record) -> None:
        self.out.ready()
        item = Item(rec)
        try:
            item.batch = decoded(rec, self.max_bytes)
        except Refused as r:
            self.dlq.send(rec, r.reason, r.detail)  # MessageRejected when the broker is away: tried again
        self.out.put(item)
