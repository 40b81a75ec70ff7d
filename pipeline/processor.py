"""`sandmeter process`: the loop that feeds Kafka records through the chain (steps.py).

Each turn polls the consumer (also while paused, so the processor stays in its group), submits
the records it holds to the first step, polls every step, resumes partitions whose checkpoints
are loaded and runs the periodic work. When a step refuses a record (MessageRejected: a write
is still in progress or failing), the processor keeps it, pauses its partitions and tries again
on the next turn; it resumes them once the chain takes records again.

A revocation pushes what was read through the chain and checkpoints the revoked partitions,
for at most `shutdown_timeout_s`; if ClickHouse does not take it in time, their unwritten work
is dropped (never checkpointed: the next owner reads it again). SIGTERM/SIGINT does the same
for every partition, then leaves the group: the processor exits within seconds in every state.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pipeline.account import AccountStep
from pipeline.batching import BatchStep
from pipeline.commit import CommitStep
from pipeline.deadletter import DeadLetters
from pipeline.decode import DecodeStep
from pipeline.frame import FrameStep
from pipeline.kafka import Consumer, Producer
from pipeline.metrics import ProcessorMetrics
from pipeline.partitions import PartitionLoader
from pipeline.periodic import Periodic
from pipeline.steps import TP, Item, MessageRejected, Record, Step, without_checkpoints
from pipeline.validate import ValidateStep
from pipeline.write import WriteStep

log = logging.getLogger(__name__)
BUSY_POLL_MS, IDLE_POLL_MS = 5, 200


@dataclass
class Chain:
    decode: DecodeStep
    validate: ValidateStep
    batch: BatchStep
    account: AccountStep
    frame: FrameStep
    write: WriteStep
    commit: CommitStep

    def steps(self) -> tuple[Step[Any], ...]:
        return self.decode, self.validate, self.batch, self.account, self.frame, self.write, self.commit

    def poll(self) -> None:
        for st in reversed(self.steps()):  # the end first: a finished write makes room upstream
            st.poll()

    def join(self) -> None:
        for st in self.steps():
            st.join()

    def pending(self) -> bool:
        return any(st.pending() for st in self.steps())


class Processor:
    def __init__(
        self, consumer: Consumer, producer: Producer, chain: Chain, loader: PartitionLoader, periodic: Periodic,
        deadletters: DeadLetters, metrics: ProcessorMetrics, shutdown_timeout_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:  # fmt: skip
        self.consumer, self.producer, self.chain, self.loader, self.periodic = (
            consumer,
            producer,
            chain,
            loader,
            periodic,
        )
        self.dlq, self.m, self.shutdown_timeout_s, self.clock = deadletters, metrics, shutdown_timeout_s, clock
        self._held: deque[Record] = deque()  # polled, not yet taken by the chain
        self._paused = False
        self._stop = threading.Event()

    @property
    def total_samples(self) -> int:
        return self.chain.write.total_samples

    @property
    def total_batches(self) -> int:
        return self.chain.write.total_batches

    @property
    def total_dlq(self) -> int:
        return self.dlq.total

    def status(self) -> str:
        series, sandboxes, _ = self.chain.account.sizes()
        return (
            f"samples={self.total_samples} series={series} sandboxes={sandboxes} dlq={self.total_dlq}"
            f"{' paused' if self._paused else ''}"
        )

    # -- the loop ---------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        self._stop = stop
        while not stop.is_set():
            self.turn()
        if not self.drain(None, self.shutdown_timeout_s):
            log.warning("stopping with work not written to ClickHouse: not checkpointed, it is read again on restart")

    def turn(self) -> None:
        """One pass: poll Kafka, feed the chain, poll the steps, resume loaded partitions, periodic work."""
        self._held.extend(self.consumer.poll(timeout_ms=self._poll_ms()))
        self.feed()
        self.chain.poll()
        ready = self.loader.poll()
        if ready and not self._paused:
            self.consumer.resume(ready)
        self.periodic.tick()

    def _poll_ms(self) -> int:
        """How long a poll may wait for records: briefly while the chain has work the loop must
        move on (a closed flush to account, a frame or write to hand on), else until the open
        flush closes by age, at most IDLE_POLL_MS. A long poll with work in flight delayed every
        hand-over by up to IDLE_POLL_MS once the topic's end was reached (issue 19's profile)."""
        c = self.chain
        if self._paused or c.account.pending() or c.frame.pending() or c.write.pending():
            return BUSY_POLL_MS
        due = c.batch.due_in_s()
        return IDLE_POLL_MS if due is None else max(BUSY_POLL_MS, min(IDLE_POLL_MS, int(due * 1000)))

    def feeding(self) -> bool:
        """True while records polled from Kafka wait for the chain to take them."""
        return bool(self._held)

    def feed(self) -> None:
        """Submits the held records in order; on MessageRejected pauses until the chain takes them."""
        while self._held:
            try:
                self.chain.decode.submit(self._held[0])
            except MessageRejected:
                if not self._paused:
                    self._paused = True
                    self.m.paused.set(1)
                    self.consumer.pause(self.consumer.assignment())
                return
            self._held.popleft()
        if self._paused:
            self._paused = False
            self.m.paused.set(0)
            self.consumer.resume(self.consumer.assignment() - self.loader.loading)

    def drain(self, parts: set[TP] | None, timeout_s: float, stop: threading.Event | None = None) -> bool:
        """Pushes everything taken through the chain, then checkpoints `parts` (None: all), for
        at most `timeout_s` (or until `stop`), giving up as soon as a write fails (a failing one
        is tried once more at once); True when it all got written."""
        deadline = self.clock() + timeout_s
        c = self.chain
        asked = False
        c.write.retry_now()
        failed_before = c.write.failed_attempts
        try:
            while True:
                c.join()
                c.poll()
                if not asked and not (c.decode.pending() or c.validate.pending() or c.batch.pending()):
                    c.account.ask_checkpoint(parts)  # once, behind the last flush: one plan
                    asked = True
                    c.poll()
                if asked and not c.pending():
                    return True
                if c.write.failed_attempts > failed_before:
                    return False  # ClickHouse refused once more: waiting out a backoff changes nothing
                if self.clock() >= deadline or (stop is not None and stop.is_set()):
                    return False
                time.sleep(0.002)
        finally:
            c.account.ask_checkpoint(set())

    # -- rebalances (called by the consumer from inside `poll`) -----------------------------
    def on_assigned(self, tps: list[TP]) -> None:
        self.loader.assign(tps)

    def on_revoked(self, tps: list[TP]) -> None:
        gone = set(tps)
        if not gone:
            return
        self._held = deque(r for r in self._held if r.tp not in gone)  # read again by their next owner
        if not self.drain(gone, self.shutdown_timeout_s, self._stop):
            log.warning("partitions %s revoked with work not written: their next owner reads it again", sorted(gone))

        def lost(it: Item) -> bool:
            return it.record.tp in gone

        self.chain.decode.out.drop(lost)
        self.chain.validate.out.drop(lost)
        self.chain.batch.drop(gone)
        self.chain.account.drop(gone)
        without_checkpoints(self.chain.frame.out, gone)
        self.loader.forget(gone)
        log.info("revoked partitions %s", sorted(gone))

    def close(self) -> None:
        """Leaves the consumer group at once, so its partitions move without a session timeout;
        ends the ClickHouse threads (one still blocked in a call is a daemon: it dies with us)."""
        self.consumer.close()
        self.producer.close(timeout_s=1.0)
        self.chain.frame.close()
        self.chain.write.close()
        self.loader.close()
