"""Batch: items gather into a flush, closed by size (samples) or by age.

A flush is closed when it holds `max_samples` samples, or `max_age_s` after its first item,
or when the processor joins the chain (a revocation, a shutdown). Dead-lettered items ride
along with no samples, so their offsets move with the flush. While the account step has not
taken the last closed flush, new items are refused (MessageRejected): at most one closed and
one open flush are ever held.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from pipeline.steps import TP, Flush, Item, Outbox, Step, offsets_of


class BatchStep:
    def __init__(
        self, next_step: Step[Flush], max_samples: int, max_age_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.out = Outbox(next_step)
        self.max_samples = max_samples
        self.max_age_s = max_age_s
        self.clock = clock
        self._items: list[Item] = []
        self._samples = 0
        self._first_at = 0.0

    def submit(self, item: Item) -> None:
        if self.out.held:
            self.out.ready()  # MessageRejected: the item waits with the processor
        if not self._items:
            self._first_at = self.clock()
        self._items.append(item)
        self._samples += len(item.batch) if item.batch is not None else 0
        if self._samples >= self.max_samples:
            self._close()

    def _close(self) -> None:
        if self._items:
            flush = Flush(self._items, offsets_of(self._items))
            self._items, self._samples = [], 0
            self.out.put(flush)

    def poll(self) -> None:
        self.out.poll()
        if self._items and not self.out.held and self.clock() - self._first_at >= self.max_age_s:
            self._close()

    def due_in_s(self) -> float | None:
        """Seconds until the open flush closes by age (0 when a closed one waits); None when empty."""
        if self.out.held:
            return 0.0
        if not self._items:
            return None
        return max(0.0, self.max_age_s - (self.clock() - self._first_at))

    def join(self) -> None:
        self.out.poll()
        if not self.out.held:
            self._close()

    def close(self) -> None:
        pass

    def pending(self) -> bool:
        return bool(self._items or self.out.held)

    def drop(self, gone: set[TP]) -> None:
        """Forgets the items of partitions this processor lost (their next owner reads them again)."""
        self._items = [it for it in self._items if it.record.tp not in gone]
        self._samples = sum(len(it.batch) for it in self._items if it.batch is not None)
        for flush in self.out.held:
            flush.items = [it for it in flush.items if it.record.tp not in gone]
            flush.offsets = {tp: o for tp, o in flush.offsets.items() if tp not in gone}
