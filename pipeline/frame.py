"""Frame: a flush's rows become the ClickHouse blocks to insert, on a thread of their own.

Raw samples get their series ids here, sorted in the table's order (ClickHouse takes a sorted
block ~3x faster), and series new to this process their names: the writer's `prepare`. It is
mostly numpy, which runs beside the main loop's accounting (numpy lets go of the GIL) while
the write step inserts the flush before: three flushes in flight, one per stage. A `Plan`
passes through in order. A flush whose raw samples cannot be framed (a bug) is written
without them, logged, rather than never.
"""

from __future__ import annotations

import dataclasses
import logging

from pipeline.steps import MessageRejected, Outbox, Plan, Rows, Step
from pipeline.worker import Job, Worker
from pipeline.writer import ClickHouseWriter, Pending

log = logging.getLogger(__name__)


class FrameStep:
    def __init__(self, next_step: Step[Rows | Plan], writer: ClickHouseWriter, worker: Worker) -> None:
        self.out: Outbox[Rows | Plan] = Outbox(next_step)
        self.writer, self.worker = writer, worker
        self._job: Job[Pending] | None = None
        self._rows: Rows | None = None

    def submit(self, msg: Rows | Plan) -> None:
        self.poll()
        if self._job is not None or self.out.held:
            raise MessageRejected
        if isinstance(msg, Plan):
            self.out.put(msg)
            return
        self._rows = msg
        self._job = self.worker.run(lambda: self.writer.prepare(msg.accounted, msg.raw, msg.events))

    def poll(self) -> None:
        job, rows = self._job, self._rows
        if job is not None and rows is not None and job.done:
            self._job = self._rows = None
            if job.error is not None:
                log.error("framing the raw samples of a flush failed, writing it without them: %r", job.error)
                pending = self.writer.prepare(rows.accounted, (), rows.events)
            else:
                assert job.result is not None
                pending = job.result
            self.out.put(dataclasses.replace(rows, pending=pending))
        self.out.poll()

    def join(self) -> None:
        self.poll()

    def close(self) -> None:
        self.worker.close()

    def pending(self) -> bool:
        return self._job is not None or bool(self.out.held)
