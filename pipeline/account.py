"""Account: a flush becomes the rows to write, and every so often a checkpoint plan.

The step owns the accounting and health state. A flush is accounted whole; if that raises,
the state goes back to before the flush and each batch is tried alone, in order: the ones
that raise are dead-lettered (`processing_error`, their original records) and the others are
accounted, so an exception is confined to its batch and the stream moves on. The health
detector then observes what was accounted (its own failures are logged, never fatal).

After a flush, when `checkpoint_every_s` has passed or the processor asked (a revocation, a
shutdown), the step evicts long-stopped sandboxes and emits a `Plan`: each partition's state
and the offset after its last accounted record. Plans travel behind the flushes they follow,
so the write step saves one only once everything before it is written, and a checkpoint never
covers a row that is not in ClickHouse.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable

import pandas as pd

from contracts import names as n
from pipeline.accounted import Accounted, merged
from pipeline.accounting import Accountant
from pipeline.checkpoint import Checkpoint
from pipeline.deadletter import DeadLetters
from pipeline.health import HealthDetector, HealthEvent
from pipeline.metrics import ProcessorMetrics
from pipeline.steps import TP, Flush, Item, MessageRejected, Outbox, Plan, Rows, Step, without_checkpoints

log = logging.getLogger(__name__)


class AccountStep:
    def __init__(
        self, next_step: Step[Rows | Plan], acct: Accountant, health: HealthDetector, deadletters: DeadLetters,
        metrics: ProcessorMetrics, clock_ms: Callable[[], int], checkpoint_every_s: float, lateness_ms: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:  # fmt: skip
        self.out: Outbox[Rows | Plan] = Outbox(next_step)
        self.acct, self.health, self.dlq, self.m = acct, health, deadletters, metrics
        self.clock_ms, self.clock = clock_ms, clock
        self.every_s, self.lateness_ms = checkpoint_every_s, lateness_ms
        self._node_part: dict[str, TP] = {}  # node -> its partition (the node id is the Kafka key)
        self._uncheckpointed: dict[TP, int] = {}  # the next offset of each partition accounted since its plan
        self._asked: set[TP] | None = set()  # partitions to checkpoint at once; None: all
        self._last_plan = clock()

    # -- the chain --------------------------------------------------------------------------
    def submit(self, flush: Flush) -> None:
        self.out.ready()
        t0 = time.perf_counter()
        items = [it for it in flush.items if it.clean is not None]
        now = self.clock_ms()
        result = self._with_refused(self._accounted(items, now), items)
        for it in items:
            if it.clean is not None:
                self._node_part[it.clean.node] = it.record.tp
        events = self._observe(result)
        self._uncheckpointed.update(flush.offsets)
        raw = tuple(it.batch for it in items if it.batch is not None)
        self.out.put(Rows(result, raw, events, flush.offsets))
        self.m.flush_seconds.observe(time.perf_counter() - t0)
        self._count(result)
        self._maybe_plan()

    def poll(self) -> None:
        self.out.poll()
        self._maybe_plan()

    def join(self) -> None:
        self.poll()

    def close(self) -> None:
        pass

    def pending(self) -> bool:
        return bool(self.out.held) or self._wanted()

    # -- accounting, confined per batch -----------------------------------------------------
    def _accounted(self, items: list[Item], now: int) -> Accounted:
        snap = self.acct.snapshot()
        try:
            return self.acct.account([it.clean for it in items if it.clean is not None], now)
        except Exception:
            log.exception("accounting a flush of %d batches failed; trying each alone", len(items))
            self.acct.restore(snap)
            snap = self.acct.snapshot()  # a snapshot is restored once: its objects become the state
        parts, bad = [], []
        for it in items:
            assert it.clean is not None
            before = self.acct.snapshot()
            try:
                parts.append(self.acct.account([it.clean], now))
            except Exception as exc:
                self.acct.restore(before)
                bad.append((it, f"{it.clean.batch_id}: {type(exc).__name__}: {exc}"))
        try:
            for it, why in bad:
                self.dlq.send(it.record, n.DLQ_PROCESSING_ERROR, why)
                it.batch = it.clean = None  # sent: a resubmitted flush does not send it again
        except MessageRejected:
            self.acct.restore(snap)  # nothing of this flush happened; it comes again
            raise
        return merged(parts, self.acct.account([], now))

    def _with_refused(self, result: Accounted, items: list[Item]) -> Accounted:
        """`result` with the samples validation refused in its late rows (for batches accounted)."""
        refused = [it.rejected for it in items if it.rejected is not None and it.clean is not None]
        if not refused:
            return result
        for df in refused:
            for reason, count in df["reason"].value_counts().items():
                self.m.rejected.labels(str(reason)).inc(int(count))
        return dataclasses.replace(result, late=pd.concat([result.late, *refused], ignore_index=True))

    def _observe(self, result: Accounted) -> list[HealthEvent]:
        events = self.health.observe(result.health_input)  # a fault is confined to its batch in there
        self.m.incident.clear()
        counts = dict.fromkeys(n.INCIDENT_KINDS, 0)
        for kind, node, sandbox, tenant, disk in self.health.open_incidents():
            self.m.incident.labels(kind, node, sandbox, tenant, disk).set(1)
            counts[kind] += 1
        for kind, c in counts.items():
            self.m.open_incidents.labels(kind).set(c)
        return events

    def _count(self, r: Accounted) -> None:
        self.m.duplicates.inc(r.duplicates)
        self.m.clamped.inc(r.clamped)
        if r.label_conflicts:
            self.m.label_conflicts.inc(r.label_conflicts)
            log.warning(
                "%d label(s) contradict a sandbox's tenant or labels fixed at first attribution, not applied "
                "(check the collectors' label sources), e.g. %s",
                r.label_conflicts,
                "; ".join(r.conflict_notes[:2]),
            )
        self.m.late.inc(r.late_samples)
        for reason, count in r.rejected.items():
            self.m.rejected.labels(reason).inc(count)
        series, _, nbytes = self.acct.size()
        self.m.series.set(series)
        self.m.state_bytes.set(nbytes)

    # -- checkpoints ------------------------------------------------------------------------
    def ask_checkpoint(self, parts: set[TP] | None) -> None:
        """Until asked again, checkpoints `parts` (None: all) as soon as they have accounted
        anything not checkpointed; `set()` ends the request."""
        self._asked = parts

    def _wanted(self) -> bool:
        return bool(self._uncheckpointed) and (self._asked is None or bool(self._asked & self._uncheckpointed.keys()))

    def _maybe_plan(self) -> None:
        due = bool(self._uncheckpointed) and self.clock() - self._last_plan >= self.every_s
        if due or self._wanted():
            self.out.put(self._plan(None if due or self._asked is None else self._asked))

    def _plan(self, parts: set[TP] | None) -> Plan:
        now = self.clock_ms()
        self._last_plan = self.clock()
        self.acct, gone = self.acct.evicted(now - self.lateness_ms)
        if gone:
            self.m.evicted.inc(gone)
            log.debug("evicted %d stopped sandboxes", gone)
        offsets = {tp: o for tp, o in self._uncheckpointed.items() if parts is None or tp in parts}
        cps = []
        for tp, off in offsets.items():
            nodes = self._nodes(tp)
            cps.append(Checkpoint(tp[0], tp[1], off, now, self.acct.export_state(nodes), self.health.export(nodes)))
            del self._uncheckpointed[tp]
        return Plan(cps, offsets)

    # -- partitions moving ------------------------------------------------------------------
    def _nodes(self, tp: TP) -> frozenset[str]:
        return frozenset(nd for nd, p in self._node_part.items() if p == tp)

    def load(self, cp: Checkpoint) -> None:
        """Takes a partition's checkpointed state (replacing whatever is held for its nodes)."""
        nodes = frozenset(cp.state.sandboxes["node"].tolist())
        self._forget(nodes)
        self.acct.import_state(cp.state)
        self.health.import_(cp.health)
        for nd in nodes:
            self._node_part[nd] = (cp.topic, cp.partition)

    def drop(self, gone: set[TP]) -> None:
        """Forgets the state of partitions this processor no longer owns."""
        nodes = frozenset(nd for nd, p in self._node_part.items() if p in gone)
        self._forget(nodes)
        for nd in nodes:
            del self._node_part[nd]
        for tp in gone:
            self._uncheckpointed.pop(tp, None)
        without_checkpoints(self.out, gone)

    def _forget(self, nodes: frozenset[str]) -> None:
        self.health.drop_nodes(nodes)
        self.acct = self.acct.without(nodes)

    def sizes(self) -> tuple[int, int, int]:
        return self.acct.size()
