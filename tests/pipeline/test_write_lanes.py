"""The write step with a planner: plans (rollups, checkpoints) on a connection of their own.

Rows after a plan are written while it runs, yet a checkpoint is only saved after every row
before it is written and rolled up, checkpoints are saved in order, and failures on either
connection are retried without writing anything twice (issue 19, freshness).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Sequence
from typing import Any

from fakes import NOW, FakeConsumer, FakeProducer, FakeWriter, batch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from contracts import names as n
from contracts.wire import decode
from pipeline.accounting import Accountant
from pipeline.checkpoint import Checkpoint
from pipeline.commit import CommitStep
from pipeline.metrics import ProcessorMetrics
from pipeline.steps import MessageRejected, Plan, Rows
from pipeline.worker import Worker
from pipeline.write import WriteStep

T0 = NOW - 3_600_000
TP = ("t", 0)


class LoggedWriter(FakeWriter):
    """A FakeWriter noting each successful call in a log shared by both connections."""

    def __init__(self, name: str, log: list[tuple[str, str, Any]]) -> None:
        super().__init__()
        self.name, self.log = name, log
        self.flush_of: dict[int, int] = {}  # id of a flush's Pending -> its index
        self.hold = threading.Event()
        self.hold.set()  # cleared: a rollup waits until it is set again

    def write(self, p: Any) -> None:
        super().write(p)
        self.log.append((self.name, "write", self.flush_of[id(p)]))

    def roll(self, dirty: dict[str, tuple[int, int]]) -> None:
        self.hold.wait(5)
        super().roll(dirty)
        self.log.append((self.name, "roll", dict(dirty)))

    def save_checkpoints(self, cps: Sequence[Checkpoint]) -> None:
        super().save_checkpoints(cps)
        self.log.append((self.name, "checkpoint", cps[0].offset))


def flushes(count: int, w: LoggedWriter) -> tuple[list[Rows], Accountant]:
    """Rows of `count` flushes of one node, batch i at offset i, a minute apart, framed by `w`."""
    acct = Accountant()
    out = []
    for i in range(count):
        accounted = acct.account([decode(batch("n1", i, T0 + 60_000 * (i + 1), 100.0 * (i + 1)))], NOW)
        r = Rows(accounted, (), [], {TP: i + 1})
        r.pending = w.prepare(r.accounted)
        w.flush_of[id(r.pending)] = i
        out.append(r)
    return out, acct


def minutes(r: Rows) -> set[int]:
    """The rollup minutes a flush's usage rows fall in."""
    return set(((r.accounted.usage["end_ms"].astype("int64") - 1) // 60_000 * 60_000).tolist())


def step_with_planner(log: list[tuple[str, str, Any]]) -> tuple[WriteStep, LoggedWriter, LoggedWriter, FakeConsumer]:
    rows_w, plan_w = LoggedWriter("rows", log), LoggedWriter("plans", log)
    cons = FakeConsumer()
    ticks = itertools.count(0.0, 100.0)  # every look at the clock is past any backoff
    step = WriteStep(
        CommitStep(cons), rows_w, Worker("w"), FakeProducer(), "alerts", ProcessorMetrics(CollectorRegistry()),
        clock=lambda: next(ticks), planner=(plan_w, Worker("p")),
    )  # fmt: skip
    return step, rows_w, plan_w, cons


def put(step: WriteStep, msg: Rows | Plan, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            step.submit(msg)
            return
        except MessageRejected:
            assert time.monotonic() < deadline, "the write step never took the message"
            step.poll()
            time.sleep(0.001)


def settle(step: WriteStep, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while step.pending() and time.monotonic() < deadline:
        step.poll()
        time.sleep(0.001)
    assert not step.pending()


def test_rows_after_a_plan_are_written_while_its_rollup_runs() -> None:
    log: list[tuple[str, str, Any]] = []
    step, rows_w, plan_w, cons = step_with_planner(log)
    (r0, r1, r2), acct = flushes(3, rows_w)
    put(step, r0)
    plan = Plan([Checkpoint("t", 0, 1, NOW, acct.export_state())], {TP: 1})
    plan_w.hold.clear()  # the rollup hangs
    put(step, plan)
    put(step, r1)
    put(step, r2)
    deadline = time.monotonic() + 5
    while [e for e in log if e[1] == "write"] != [("rows", "write", 0), ("rows", "write", 1), ("rows", "write", 2)]:
        assert time.monotonic() < deadline, log
        step.poll()
        time.sleep(0.001)
    assert not plan_w.saved and not cons.commits  # the plan is still rolling up
    plan_w.hold.set()
    settle(step)
    assert [e[1] for e in log if e[0] == "plans"] == ["roll", "checkpoint"] and cons.commits == [{TP: 1}]
    assert not rows_w.saved and not plan_w.tables  # each connection did its own part only


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    plan_after=st.lists(st.booleans(), min_size=1, max_size=8),
    rows_fail=st.integers(0, 3),
    plans_fail=st.integers(0, 3),
)
def test_a_checkpoint_follows_every_row_before_it_written_and_rolled_up(
    plan_after: list[bool], rows_fail: int, plans_fail: int
) -> None:
    log: list[tuple[str, str, Any]] = []
    step, rows_w, plan_w, cons = step_with_planner(log)
    rows, acct = flushes(len(plan_after), rows_w)
    rows_w.fail, plan_w.fail = rows_fail, plans_fail
    planned = []
    for i, (r, then_plan) in enumerate(zip(rows, plan_after, strict=True)):
        put(step, r)
        if then_plan:
            put(step, Plan([Checkpoint("t", 0, i + 1, NOW, acct.export_state())], {TP: i + 1}))
            planned.append(i + 1)
    settle(step)
    writes = [e[2] for e in log if e[1] == "write"]
    assert writes == list(range(len(rows)))  # each flush once, in order, whatever failed
    assert [e[2] for e in log if e[1] == "checkpoint"] == planned and cons.commits == [{TP: o} for o in planned]
    for offset in planned:
        at = next(k for k, e in enumerate(log) if e[1] == "checkpoint" and e[2] == offset)
        for i in range(offset):  # every row before it written, then its minutes rolled up, before it
            wrote = next(k for k, e in enumerate(log) if e[1] == "write" and e[2] == i)
            assert wrote < at
            for m in minutes(rows[i]):
                rolls = [e[2] for e in log[wrote + 1 : at] if e[1] == "roll"]
                assert any(lo <= m <= hi for d in rolls for lo, hi in d.values()), (i, offset, m, log)
    assert len(rows_w.rows(n.T_USAGE)) == len(rows)
