"""The Kafka consumer and producer the processor needs, as typed protocols, and their
kafka-python implementations (constructed in `build.py`, the one place clients are made).

Partitions are plain (topic, partition) tuples and records are `Record`s, so the chain and its
tests never touch kafka-python's untyped objects. Every call here returns within a bounded
time (seconds), so a stop request is never stuck behind the broker.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence
from typing import Any, Protocol

from pipeline.steps import TP, Record

log = logging.getLogger(__name__)
LAG_TIMEOUT_MS = 1000


class ProduceError(RuntimeError):
    """The record was not acknowledged. `retriable`: the broker may take it later (it is away or
    slow); otherwise the client or the broker refuses this record as it is (too large, say)."""

    def __init__(self, message: str, retriable: bool) -> None:
        super().__init__(message)
        self.retriable = retriable


class Rebalance(Protocol):
    def on_assigned(self, tps: list[TP]) -> None: ...

    def on_revoked(self, tps: list[TP]) -> None: ...


class Consumer(Protocol):
    def subscribe(self, topic: str, rebalance: Rebalance) -> None: ...

    def poll(self, timeout_ms: int) -> list[Record]: ...

    def pause(self, tps: Collection[TP]) -> None: ...

    def resume(self, tps: Collection[TP]) -> None: ...

    def assignment(self) -> set[TP]: ...

    def seek(self, tp: TP, offset: int) -> None: ...

    def seek_to_beginning(self, tp: TP) -> None: ...

    def lag(self) -> dict[TP, int]:
        """Per assigned partition, the messages between its fetch position and its end."""
        ...

    def commit(self, offsets: Mapping[TP, int]) -> None:
        """Starts committing `offsets` (next offsets to read); failures are only logged."""
        ...

    def close(self) -> None: ...


class Producer(Protocol):
    def send(
        self, topic: str, key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes | None]],
        wait_s: float | None,
    ) -> None:  # fmt: skip
        """Sends one record; with `wait_s` waits that long for its acknowledgement or raises
        ProduceError; with None returns at once (a notification that may be lost)."""
        ...

    def close(self, timeout_s: float) -> None: ...


class KafkaConsumerAdapter:
    """`Consumer` over kafka-python's KafkaConsumer."""

    def __init__(self, consumer: Any) -> None:
        self._c = consumer

    def subscribe(self, topic: str, rebalance: Rebalance) -> None:
        from kafka import ConsumerRebalanceListener

        class Listener(ConsumerRebalanceListener):  # type: ignore[misc]
            def on_partitions_revoked(self, revoked: Any) -> None:
                rebalance.on_revoked([(tp.topic, tp.partition) for tp in revoked])

            def on_partitions_assigned(self, assigned: Any) -> None:
                rebalance.on_assigned([(tp.topic, tp.partition) for tp in assigned])

        self._c.subscribe([topic], listener=Listener())

    def poll(self, timeout_ms: int) -> list[Record]:
        batches = self._c.poll(timeout_ms=timeout_ms, max_records=500)
        return [
            Record(m.topic, m.partition, m.offset, m.key, m.value, tuple(m.headers or ()))
            for msgs in batches.values()
            for m in msgs
        ]

    @staticmethod
    def _tps(tps: Collection[TP]) -> list[Any]:
        from kafka import TopicPartition

        return [TopicPartition(t, p) for t, p in tps]

    def pause(self, tps: Collection[TP]) -> None:
        self._c.pause(*self._tps(tps))

    def resume(self, tps: Collection[TP]) -> None:
        self._c.resume(*self._tps(tps))

    def assignment(self) -> set[TP]:
        return {(tp.topic, tp.partition) for tp in self._c.assignment()}

    def seek(self, tp: TP, offset: int) -> None:
        self._c.seek(self._tps([tp])[0], offset)

    def seek_to_beginning(self, tp: TP) -> None:
        self._c.seek_to_beginning(self._tps([tp])[0])

    def lag(self) -> dict[TP, int]:
        parts = list(self._c.assignment())
        if not parts:
            return {}
        ends = self._c.end_offsets(parts, timeout_ms=LAG_TIMEOUT_MS)
        out = {}
        for tp in parts:
            pos = self._c.position(tp, timeout_ms=LAG_TIMEOUT_MS)
            if pos is not None and tp in ends:
                out[(tp.topic, tp.partition)] = max(0, ends[tp] - pos)
        return out

    def commit(self, offsets: Mapping[TP, int]) -> None:
        from kafka.structs import OffsetAndMetadata

        def done(_offsets: Any, response: Any) -> None:
            if isinstance(response, Exception):  # e.g. a rebalance in progress: the checkpoint has them
                log.warning("offset commit failed (the checkpoint has them): %s", response)

        tps = self._tps(list(offsets))
        self._c.commit_async({tp: OffsetAndMetadata(offsets[(tp.topic, tp.partition)], "", -1) for tp in tps}, done)

    def close(self) -> None:
        """Leaves the group at once, so its partitions move without a session timeout."""
        self._c.close(autocommit=False, timeout_ms=2000)


class KafkaProducerAdapter:
    """`Producer` over kafka-python's KafkaProducer (built with a short `max_block_ms`)."""

    def __init__(self, producer: Any) -> None:
        self._p = producer

    def send(
        self, topic: str, key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes | None]],
        wait_s: float | None,
    ) -> None:  # fmt: skip
        from kafka.errors import KafkaError

        try:
            fut = self._p.send(topic, key=key, value=value, headers=list(headers))
            if wait_s is not None:
                fut.get(timeout=wait_s)
        except KafkaError as exc:
            raise ProduceError(f"{topic}: {type(exc).__name__}: {exc}", bool(exc.retriable)) from exc
        except Exception as exc:  # the client's own checks (a null header value, neither key nor value)
            raise ProduceError(f"{topic}: {type(exc).__name__}: {exc}", False) from exc

    def close(self, timeout_s: float) -> None:
        self._p.close(timeout=timeout_s)
