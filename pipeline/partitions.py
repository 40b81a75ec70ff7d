"""Assigned partitions wait, paused, until their checkpoints are loaded.

On assignment a partition is paused at once (kafka-python calls back before fetching for it);
its newest checkpoint is read on the maintenance worker (never on the main loop), its state
handed to the account step and its position set to the checkpoint's offset (to the partition's
beginning when it has none); only then is it resumed. With ClickHouse away the read is retried
every few seconds and the partition stays paused, so nothing is ever accounted without the
state its rows must be computed from.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from pipeline.account import AccountStep
from pipeline.checkpoint import Checkpoint
from pipeline.kafka import Consumer
from pipeline.steps import TP
from pipeline.worker import Job, Worker
from pipeline.writer import ClickHouseWriter

log = logging.getLogger(__name__)
RETRY_S = 2.0


class PartitionLoader:
    def __init__(
        self, consumer: Consumer, reader: ClickHouseWriter, worker: Worker, account: AccountStep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:  # fmt: skip
        self.consumer, self.reader, self.worker, self.account, self.clock = consumer, reader, worker, account, clock
        self.loading: set[TP] = set()
        self._job: Job[list[Checkpoint]] | None = None
        self._asked: set[TP] = set()  # what the running job reads
        self._retry_at = 0.0

    def assign(self, tps: list[TP]) -> None:
        self.loading |= set(tps)
        self.consumer.pause(tps)

    def close(self) -> None:
        self.worker.close()
        self.reader.close()

    def forget(self, tps: set[TP]) -> None:
        self.loading -= tps

    def _read(self, tps: set[TP]) -> list[Checkpoint]:
        by_topic: dict[str, list[int]] = {}
        for t, p in tps:
            by_topic.setdefault(t, []).append(p)
        return [cp for t, ps in by_topic.items() for cp in self.reader.load_checkpoints(t, ps).values()]

    def poll(self) -> set[TP]:
        """The partitions loaded since the last call, ready to be resumed."""
        job = self._job
        if job is None:
            if self.loading and self.worker.idle and self.clock() >= self._retry_at:
                asked = self._asked = set(self.loading)
                self._job = self.worker.run(lambda: self._read(asked))
            return set()
        if not job.done:
            return set()
        self._job = None
        if job.error is not None:
            log.error(
                "loading checkpoints of %s failed, retrying in %.0f s: %s", sorted(self._asked), RETRY_S, job.error
            )
            self._retry_at = self.clock() + RETRY_S
            return set()
        ready = self._asked & self.loading  # a partition revoked meanwhile is not ours to load
        found = set()
        for cp in job.result or []:
            if (cp.topic, cp.partition) in ready:
                self.account.load(cp)
                self.consumer.seek((cp.topic, cp.partition), cp.offset)
                found.add((cp.topic, cp.partition))
        for tp in ready - found:
            # Kafka's committed offset is only ever behind a checkpoint (commits follow them); one
            # without a checkpoint visible (a replica that has not got it yet, docs/architecture.md)
            # has no state to continue from: read the partition again
            self.consumer.seek_to_beginning(tp)
        self.loading -= ready
        series = sum(len(cp.state.series) for cp in job.result or [])
        log.info(
            "assigned partitions %s; %d resumed from checkpoints (%d series)",
            sorted(ready),
            len(job.result or []),
            series,
        )
        return ready
