"""Work beside the hot path, on its own clocks: lag, freshness, the status line.

None of it runs inside a flush or blocks on ClickHouse: the lag asks the broker with a
timeout of a second. The lag and freshness gauges keep moving while writes fail, so the lag
and freshness alerts see an outage (consumption is paused then: the lag grows). Retention is
not the processor's: dropping a partition is DDL, which its ClickHouse user may not run
(`sandmeter retention`, pipeline/retention.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from pipeline.kafka import Consumer
from pipeline.metrics import ProcessorMetrics
from pipeline.settings import ProcessorSettings

log = logging.getLogger(__name__)
LAG_EVERY_S = 5.0


class Periodic:
    def __init__(
        self, s: ProcessorSettings, consumer: Consumer, metrics: ProcessorMetrics,
        newest_written_ms: Callable[[], int | None], status: Callable[[], str],
        clock_ms: Callable[[], int], clock: Callable[[], float] = time.monotonic,
    ) -> None:  # fmt: skip
        self.s, self.consumer, self.m = s, consumer, metrics
        self.newest_written_ms, self.status, self.clock_ms, self.clock = newest_written_ms, status, clock_ms, clock
        now = clock()
        self._last_lag = self._last_status = now

    def tick(self) -> None:
        now = self.clock()
        newest = self.newest_written_ms()
        if newest is not None:
            self.m.freshness.set(max(0.0, (self.clock_ms() - newest) / 1000))
        if now - self._last_lag >= LAG_EVERY_S:
            self._last_lag = now
            self._lag()
        if now - self._last_status >= self.s.status_every_s:
            self._last_status = now
            log.info("processor: %s", self.status())

    def _lag(self) -> None:
        try:
            for (_, p), lag in self.consumer.lag().items():
                self.m.lag.labels(str(p)).set(lag)
        except Exception as exc:  # lag is telemetry; the broker may be away
            log.debug("lag update failed: %s", exc)
