"""Work beside the hot path, on its own clocks: lag, freshness, the status line, retention.

None of it runs inside a flush or blocks on ClickHouse: the lag asks the broker with a
timeout of a second; retention runs on the maintenance worker and waits for the next hour
when it fails. The lag and freshness gauges keep moving while writes fail, so the lag and
freshness alerts see an outage (consumption is paused then: the lag grows).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from contracts import names as n
from pipeline.kafka import Consumer
from pipeline.metrics import ProcessorMetrics
from pipeline.settings import ProcessorSettings
from pipeline.worker import Worker
from pipeline.writer import ClickHouseWriter, WriteError

log = logging.getLogger(__name__)
FUNCTION_LOAD_DAYS = 2  # scale recommendations look back minutes; keep two days for inspection
LAG_EVERY_S, RETENTION_EVERY_S = 5.0, 3600.0


class Periodic:
    def __init__(
        self, s: ProcessorSettings, consumer: Consumer, reader: ClickHouseWriter, worker: Worker,
        metrics: ProcessorMetrics, newest_written_ms: Callable[[], int | None], status: Callable[[], str],
        clock_ms: Callable[[], int], clock: Callable[[], float] = time.monotonic,
    ) -> None:  # fmt: skip
        self.s, self.consumer, self.reader, self.worker, self.m = s, consumer, reader, worker, metrics
        self.newest_written_ms, self.status, self.clock_ms, self.clock = newest_written_ms, status, clock_ms, clock
        now = clock()
        self._last_lag = self._last_status = now
        self._last_retention = now - RETENTION_EVERY_S  # the first tick drops what is already old

    def tick(self) -> None:
        now = self.clock()
        newest = self.newest_written_ms()
        if newest is not None:
            self.m.freshness.set(max(0.0, (self.clock_ms() - newest) / 1000))
        if now - self._last_lag >= LAG_EVERY_S:
            self._last_lag = now
            self._lag()
        if now - self._last_retention >= RETENTION_EVERY_S and self.worker.idle:
            self._last_retention = now
            self.worker.run(self.retention)
        if now - self._last_status >= self.s.status_every_s:
            self._last_status = now
            log.info("processor: %s", self.status())

    def _lag(self) -> None:
        try:
            for (_, p), lag in self.consumer.lag().items():
                self.m.lag.labels(str(p)).set(lag)
        except Exception as exc:  # lag is telemetry; the broker may be away
            log.debug("lag update failed: %s", exc)

    def retention(self) -> None:
        """Drops raw-sample days older than `raw_retention_days` (0: never) and function-load days
        older than two; a failure waits for the next hour. Runs on the maintenance worker."""
        if self.s.keep_raw_samples and self.s.raw_retention_days:
            self._drop_old(n.T_SAMPLES, self.s.raw_retention_days)
        self._drop_old(n.T_FUNCTION_LOAD, FUNCTION_LOAD_DAYS)

    def _drop_old(self, table: str, days: int) -> None:
        cutoff = time.gmtime(self.clock_ms() / 1000 - days * 86400)
        try:
            dropped = self.reader.drop_days_before(table, int(time.strftime("%Y%m%d", cutoff)))
        except WriteError as exc:
            log.error("retention failed, next try in an hour: %s", exc)
            return
        if dropped:
            self.m.partitions_dropped.inc(len(dropped))
            log.info("retention: dropped %s days %s", table, ", ".join(dropped))
