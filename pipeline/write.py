"""Write: rows and checkpoints go to ClickHouse on worker threads, never on the main loop.

Two lanes, each holding one message at a time: a flush's `Rows` on the write worker, a `Plan`
(rollups of every bucket written since the last one, then the checkpoints) on a planner of its
own when one is given (its own connection: the maintenance worker). A plan is only taken once
the rows before it are written, so a checkpoint never promises a row ClickHouse does not have,
and its rollups come before its checkpoints: a checkpoint promises everything before it is
rolled up. The rows after it are not held back by it: they are written while it runs (issue
19: a plan's rollups cost a 0.25 s flush tens of ms, and queued every flush behind it). A row
written before the checkpoint it follows is what a crash between a flush and its checkpoint
leaves anyway: the replay writes it again, identical. Without a planner (one connection) plans
take the write worker in turn, as rows do.

A step refuses the next message of a lane (MessageRejected) until the one in hand is written,
so the processor pauses consumption instead of piling flushes up. A failed write is retried
with the identical rows after a backoff (0.5 s doubling to 10 s), from `poll`, never in a
blocking loop: a stop request ends the processor between two attempts, and whatever was not
written was not checkpointed either, so it is read again after a restart. Each written
message's `Written` goes on to the commit step (plans in order: one at a time).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pipeline.kafka import ProduceError, Producer
from pipeline.metrics import ProcessorMetrics
from pipeline.rollup import DirtyBuckets
from pipeline.steps import MessageRejected, Plan, Rows, Step, Written
from pipeline.worker import Job, Worker
from pipeline.writer import ClickHouseWriter

log = logging.getLogger(__name__)
BACKOFF_S, BACKOFF_MAX_S = 0.5, 10.0


@dataclass
class _Lane:
    """One message in hand on a worker, and the attempts at it."""

    writer: ClickHouseWriter
    worker: Worker
    msg: Rows | Plan | None = None
    job: Job[None] | None = None
    retry_at: float = 0.0
    backoff: float = BACKOFF_S
    failing_since: float | None = None
    started: float = 0.0
    dirty: dict[str, tuple[int, int]] = field(default_factory=dict)  # a plan's buckets, kept for its retries

    def startable(self, now: float) -> bool:
        return self.job is None and self.msg is not None and now >= self.retry_at and self.worker.idle


def _union(a: dict[str, tuple[int, int]], b: dict[str, tuple[int, int]]) -> dict[str, tuple[int, int]]:
    """Per tenant, the minute range covering both (a retried plan also rolls what was written since)."""
    out = dict(a)
    for tenant, (lo, hi) in b.items():
        old = out.get(tenant)
        out[tenant] = (lo, hi) if old is None else (min(old[0], lo), max(old[1], hi))
    return out


class WriteStep:
    def __init__(
        self, next_step: Step[Written], writer: ClickHouseWriter, worker: Worker, producer: Producer,
        alerts_topic: str, metrics: ProcessorMetrics, clock: Callable[[], float] = time.monotonic,
        planner: tuple[ClickHouseWriter, Worker] | None = None,
    ) -> None:  # fmt: skip
        self.next, self.writer, self.worker, self.producer = next_step, writer, worker, producer
        self.alerts_topic, self.m, self.clock = alerts_topic, metrics, clock
        self._rows = _Lane(writer, worker)
        self._plan = _Lane(*(planner or (writer, worker)))
        self._dirty = DirtyBuckets()  # rollup buckets written since the last plan took them
        self.failed_attempts = 0  # every failed write so far (a stop gives up when this moves)
        self.newest_written_ms: int | None = None
        self.total_samples = self.total_batches = 0

    def submit(self, msg: Rows | Plan) -> None:
        rows, plan = self._rows, self._plan
        if rows.msg is not None or not rows.worker.idle:
            raise MessageRejected  # a plan also waits for the rows before it
        if isinstance(msg, Plan) and plan.msg is not None:
            raise MessageRejected  # one plan at a time: checkpoints are saved in order
        lane = rows if isinstance(msg, Rows) else plan
        lane.msg, lane.retry_at = msg, 0.0
        if lane.worker.idle:  # else `poll` starts it once the worker is free (a checkpoint load on it)
            self._start(lane)

    def _start(self, lane: _Lane) -> None:
        msg = lane.msg
        lane.started = time.perf_counter()
        if isinstance(msg, Rows):
            lane.job = lane.worker.run(lambda: self._write_rows(lane.writer, msg))
        elif isinstance(msg, Plan):
            dirty = lane.dirty = _union(lane.dirty, self._dirty.take())
            lane.job = lane.worker.run(lambda: self._write_plan(lane.writer, msg, dirty))

    def _write_rows(self, writer: ClickHouseWriter, rows: Rows) -> None:
        if rows.pending is None:  # framed by the frame step, on the main loop; never here twice
            rows.pending = writer.prepare(rows.accounted, rows.raw, rows.events)
        writer.write(rows.pending)

    def _write_plan(self, writer: ClickHouseWriter, plan: Plan, dirty: dict[str, tuple[int, int]]) -> None:
        # rollups first: a checkpoint promises everything before it is rolled up
        if dirty:
            t0 = time.perf_counter()
            writer.roll(dirty)
            self.m.rollup_seconds.observe(time.perf_counter() - t0)
        if plan.checkpoints:
            writer.save_checkpoints(plan.checkpoints)

    def poll(self) -> None:
        for lane in (self._rows, self._plan):
            job = lane.job
            if job is not None and job.done:
                lane.job = None
                if job.error is None:
                    self._finished(lane)
                else:
                    self._failed(lane, job.error)
        for lane in (self._rows, self._plan):
            if lane.startable(self.clock()):
                self._start(lane)
        since = [t for t in (self._rows.failing_since, self._plan.failing_since) if t is not None]
        self.m.write_outage.set(self.clock() - min(since) if since else 0.0)

    def _finished(self, lane: _Lane) -> None:
        msg, lane.msg = lane.msg, None
        lane.failing_since, lane.backoff = None, BACKOFF_S
        elapsed = time.perf_counter() - lane.started
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
            lane.dirty = {}
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

    def _failed(self, lane: _Lane, exc: BaseException) -> None:
        self.m.write_failures.inc()
        self.failed_attempts += 1
        now = self.clock()
        if lane.failing_since is None:
            lane.failing_since = now
        what = "checkpoint" if isinstance(lane.msg, Plan) else "write"
        log.error("ClickHouse %s failed, retrying in %.1f s: %s: %s", what, lane.backoff, type(exc).__name__, exc)
        lane.retry_at = now + lane.backoff
        lane.backoff = min(lane.backoff * 2, BACKOFF_MAX_S)

    def join(self) -> None:
        self.poll()

    def retry_now(self) -> None:
        """The next attempt at a failing write goes at once, not after its backoff (a stop)."""
        self._rows.retry_at = self._plan.retry_at = 0.0

    def close(self) -> None:
        """Ends the write worker (the planner's worker belongs to its owner, the partition loader)."""
        self.worker.close()
        self.writer.close()

    def pending(self) -> bool:
        return self._rows.msg is not None or self._plan.msg is not None
