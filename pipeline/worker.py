"""A thread that runs ClickHouse jobs one at a time, so the caller never waits on the server.

The processor's main loop hands every ClickHouse call (writes, rollups, checkpoints,
loading checkpoints) to a `Worker` and polls the `Job` for its end. The thread is a
daemon: a stop request never waits for a socket that hangs (the process exits, and nothing
not acknowledged was checkpointed). A `Job` keeps what it raised for the caller to see.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

R = TypeVar("R")


class Job(Generic[R]):
    def __init__(self, fn: Callable[[], R]) -> None:
        self.fn = fn
        self.finished = threading.Event()
        self.result: R | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self.fn()
        except BaseException as exc:  # handed to the caller, never lost in the thread
            self.error = exc
        finally:
            self.finished.set()

    @property
    def done(self) -> bool:
        return self.finished.is_set()

    def wait(self, timeout_s: float | None = None) -> R | None:
        """The result once finished (raising what the job raised); None if still running."""
        if not self.finished.wait(timeout_s):
            return None
        if self.error is not None:
            raise self.error
        return self.result


class Worker:
    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue[Job[Any] | None] = queue.SimpleQueue()
        self._current: Job[Any] | None = None
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while (job := self._jobs.get()) is not None:
            job.run()

    def close(self) -> None:
        """Ends the thread after its current job (without waiting for it)."""
        self._jobs.put(None)

    @property
    def idle(self) -> bool:
        return self._current is None or self._current.done

    def run(self, fn: Callable[[], R]) -> Job[R]:
        """Starts `fn` on the thread; the worker must be idle (one job at a time)."""
        if not self.idle:
            raise RuntimeError("the worker is busy")
        job: Job[R] = Job(fn)
        self._current = job
        self._jobs.put(job)
        return job
