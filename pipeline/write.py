"""Write: rows and checkpoints go to ClickHouse, one at a time, on the worker thread.

The step takes one message at a time and refuses the next (MessageRejected) until it is
written, so the processor pauses consumption instead of piling flushes up. The write runs on
the ClickHouse worker while the main loop accounts the next flush. A failed write is retried
with the identical rows after a backoff (0.5 s doubling to 10 s), from `poll`, never in a
blocking loop: a stop request ends the processor between two attempts, and whatever was not
written was not checkpointed either, so it is read again after a restart.

A `Plan` is written the same way, in order: rollups of every bucket written since the last
one, then the checkpoints. Only then does its `Written` go on to the commit step.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from pipeline.kafka import ProduceError, Producer
from pipeline.metrics import ProcessorMetrics
from pipeline.rollup import DirtyBuckets
from pipeline.steps import MessageRejected, Plan, Rows, Step, Written
from pipeline.worker import Job, Worker
from pipeline.writer import ClickHouseWriter

log = logging.getLogger(__name__)
BACKOFF_S, BACKOFF_MAX_S = 0.5, 10.0


class WriteStep:
    def __init__(
        self, next_step: Step[Written], writer: ClickHouseWriter, worker: Worker, producer: Producer,
        alerts_topic: str, metrics: ProcessorMetrics, clock: Callable[[], float] = time.monotonic,
    ) -> None:  # fmt: skip
        self.next, self.writer, self.worker, self.producer = next_step, writer, worker, producer
        self.alerts_topic, self.m, self.clock = alerts_topic, metrics, clock
        self._msg: Rows | Plan | None = None
        self._job: Job[None] | None = None
        self._dirty = DirtyBuckets()  # rollup buckets written since the last plan
        self._taken: dict[str, tuple[int, int]] = {}  # the buckets the plan in progress rolls up
        self._retry_at = 0.0
        self._backoff = BACKOFF_S
        self._failing_since: float | None = None
        self._failures = 0
        self._started = 0.0
        self.newest_written_ms: int | None = None
        self.total_samples = self.total_batches = 0

    def submit(self, msg: Rows | Plan) -> None:
        if self._msg is not None or not self.worker.idle:
            raise MessageRejected
        self._msg = msg
        self._start()

    def _start(self) -> None:
        msg = self._msg
        self._started = time.perf_counter()
        if isinstance(msg, Rows):
            self._job = self.worker.run(lambda: self._write_rows(msg))
        elif isinstance(msg, Plan):
            dirty = self._taken = {**self._taken, **self._dirty.take()} if self._dirty else self._taken
            self._job = self.worker.run(lambda: self._write_plan(msg, dirty))

    def _write_rows(self, rows: Rows) -> None:
        if rows.pending is None:  # framed by the frame step, on the main loop; never here twice
            rows.pending = self.writer.prepare(rows.accounted, rows.raw, rows.events)
        self.writer.write(rows.pending)

    def _write_plan(self, plan: Plan, dirty: dict[str, tuple[int, int]]) -> None:
        # rollups first: a checkpoint promises everything before it is rolled up
        if dirty:
            t0 = time.perf_counter()
            self.writer.roll(dirty)
            self.m.rollup_seconds.observe(time.perf_counter() - t0)
        if plan.checkpoints:
            self.writer.save_checkpoints(plan.checkpoints)

    def poll(self) -> None:
        job = self._job
        if job is not None and job.done:
            self._job = None
            if job.error is None:
                self._finished()
            else:
                self._failed(job.error)
        elif job is None and self._msg is not None and self.clock() >= self._retry_at and self.worker.idle:
            self._start()
        since = self._failing_since
        self.m.write_outage.set(0.0 if since is None else self.clock() - since)

    def _finished(self) -> None:
        msg, self._msg = self._msg, None
        self._failing_since, self._backoff, self._failures = None, BACKOFF_S, 0
        elapsed = time.perf_counter() - self._started
        if isinstance(msg, Rows):
            a = msg.accounted
            self._dirty.note(a.usage)
            newest = a.newest_ms
            if newest is not None:
                self.newest_written_ms = max(newest, self.newest_written_ms or newest)
            self.total_samples += a.samples
            self.total_batches += len(a.health_input)
            self.m.samples.inc(a.samples)
            self.m.batches.inc(len(a.health_input))
            self.m.insert_seconds.observe(elapsed)
            self._publish(msg)
            self.next.submit(Written(msg.offsets))  # the commit step never refuses
        elif isinstance(msg, Plan):
            self._taken = {}
            self.m.checkpoints.inc(len(msg.checkpoints))
            self.m.checkpoint_seconds.observe(elapsed)
            self.next.submit(Written(msg.offsets, len(msg.checkpoints)))

    def _publish(self, rows: Rows) -> None:
        for ev in rows.events:
            self.m.health_events.labels(ev.kind, ev.event).inc()
            log.warning("incident %s %s: %s", ev.event, ev.incident_id, ev.evidence)
            try:  # the table has it; the topic is a notification
                self.producer.send(self.alerts_topic, ev.node.encode(), ev.to_json().encode(), (), None)
            except ProduceError as exc:
                log.error("could not publish %s to %s: %s", ev.incident_id, self.alerts_topic, exc)

    def _failed(self, exc: BaseException) -> None:
        self.m.write_failures.inc()
        self._failures += 1
        now = self.clock()
        if self._failing_since is None:
            self._failing_since = now
        what = "checkpoint" if isinstance(self._msg, Plan) else "write"
        log.error("ClickHouse %s failed, retrying in %.1f s: %s: %s", what, self._backoff, type(exc).__name__, exc)
        self._retry_at = now + self._backoff
        self._backoff = min(self._backoff * 2, BACKOFF_MAX_S)

    def join(self) -> None:
        self.poll()

    @property
    def failures(self) -> int:
        """Failed attempts at the message in hand (0 while none is failing)."""
        return self._failures

    def retry_now(self) -> None:
        """The next attempt at a failing write goes at once, not after its backoff (a stop)."""
        self._retry_at = 0.0

    def close(self) -> None:
        self.worker.close()
        self.writer.close()

    def pending(self) -> bool:
        return self._msg is not None
