"""`sandmeter scale`: each tick, every known function's decision; changes go to Kafka."""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

from prometheus_client import CollectorRegistry, Gauge

from contracts import names as n
from contracts.metrics import counter
from scaling.kpa import KpaConfig
from scaling.recommendations import Stale, active_functions, decide, fresh_newest

log = logging.getLogger(__name__)


class Publisher:
    """`sandmeter scale`: every tick, each known function's decision; changes go to Kafka."""

    def __init__(
        self, ch: Any, producer: Any, topic: str, stale_s: float, clock_ms: Any, cfg: KpaConfig,
        registry: CollectorRegistry,
    ) -> None:  # fmt: skip
        self.ch, self.producer, self.topic, self.stale_s, self.clock_ms, self.cfg = (
            ch, producer, topic, stale_s, clock_ms, cfg,
        )  # fmt: skip
        self.last: dict[tuple[str, str], tuple[int, bool]] = {}
        self.published = self.evaluations = self.stale_ticks = 0
        self.m_published = counter(n.SCALE_PUBLISHED, "Changed decisions sent to the scale-decisions topic", registry)
        self.m_evaluations = counter(n.SCALE_EVALUATIONS, "Function decisions computed", registry)
        self.m_stale = counter(n.SCALE_STALE, "Ticks without decisions because the load data was stale", registry)
        self.m_failures = counter(n.SCALE_TICK_FAILURES, "Ticks that failed (ClickHouse or Kafka away)", registry)
        self.m_last_success = Gauge(
            n.SCALE_LAST_SUCCESS, "When a tick last decided from fresh data or had nothing to decide (Unix s)",
            registry=registry,
        )  # fmt: skip
        # from the start: a publisher that never succeeds is stale one alert threshold after it started
        self.m_last_success.set(clock_ms() / 1000)

    def tick(self) -> int:
        """One round; returns how many changed decisions were published."""
        now = self.clock_ms()
        sent = 0
        functions = active_functions(self.ch, now)  # each with load in the last hour: known
        if not functions:
            self.m_last_success.set(now / 1000)  # nothing to decide is a success, not staleness
            return 0
        try:
            newest = fresh_newest(self.ch, now, self.stale_s)  # once per tick, not per function
        except Stale as exc:
            self.stale_ticks += 1
            self.m_stale.inc()
            log.warning("no decisions: %s", exc)
            return 0
        changed: dict[tuple[str, str], tuple[int, bool]] = {}
        acks = []
        for tenant, function in functions:
            rec = decide(self.ch, tenant, function, newest, self.cfg)
            self.evaluations += 1
            self.m_evaluations.inc()
            key = (tenant, function)
            state = (rec["desired_replicas"], rec["panic"])
            if self.last.get(key) != state:
                value = json.dumps(rec).encode()
                acks.append(self.producer.send(self.topic, key=f"{tenant}/{function}".encode(), value=value))
                changed[key] = state
        if changed:
            self.producer.flush(timeout=10)
            for ack in acks:
                ack.get(timeout=1)  # a record Kafka refused raises here: the tick failed
            # only now are they sent: a failed tick sends the same changes again next time
            self.last.update(changed)
            sent = len(changed)
            self.published += sent
            self.m_published.inc(sent)
        self.m_last_success.set(now / 1000)
        return sent

    def step(self) -> None:
        """One tick that never raises: a failure is counted and logged, and the next tick tries again.
        Failing and stale ticks leave the last-success time behind, which is what alerts."""
        try:
            self.tick()
        except Exception as exc:  # ClickHouse or Kafka away
            self.m_failures.inc()
            log.error("scale tick failed: %s", exc)

    def run(self, stop: threading.Event, status_every_s: float = 30.0) -> None:
        last_status = time.monotonic()
        while not stop.wait(self.cfg.tick_s):
            self.step()
            if time.monotonic() - last_status >= status_every_s:
                last_status = time.monotonic()
                log.info(
                    "scale: functions=%d evaluations=%d published=%d stale_ticks=%d",
                    len(self.last), self.evaluations, self.published, self.stale_ticks,
                )  # fmt: skip
