"""The processor's flush logic with small fakes for Kafka and ClickHouse (no services)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd
import pytest
from prometheus_client import CollectorRegistry

from contracts import names as n
from contracts.builder import BatchBuilder
from contracts.wire import EventKind, SampleBatch, encode
from pipeline.accounting import Accountant, Result
from pipeline.checkpoint import Checkpoint
from pipeline.processor import Processor
from pipeline.settings import ProcessorSettings
from pipeline.writer import WriteError


@dataclass
class Msg:
    value: bytes
    offset: int
    key: bytes = b"node"
    topic: str = "t"
    partition: int = 0


class Sent:
    def get(self, timeout: float) -> None:
        return None


class FakeProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, dict[str, bytes]]] = []

    def close(self, timeout: float) -> None:
        self.closed = True

    def send(self, topic: str, key: bytes, value: bytes, headers: list[tuple[str, bytes]] | None = None) -> Sent:
        self.sent.append((topic, value, dict(headers or [])))
        return Sent()


class FakeConsumer:
    def __init__(self) -> None:
        self.commits: list[dict[Any, Any]] = []
        self.seeks: dict[tuple[str, int], int] = {}

    def seek(self, tp: Any, offset: int) -> None:
        self.seeks[tp.topic, tp.partition] = offset

    def seek_to_beginning(self, tp: Any) -> None:
        self.seeks[tp.topic, tp.partition] = 0

    def commit(self, offsets: dict[Any, Any]) -> None:
        self.commits.append(offsets)

    def close(self, autocommit: bool) -> None:
        self.closed_with_autocommit = autocommit


class FakeWriter:
    def __init__(self, fail_times: int = 0) -> None:
        self.fail_times = fail_times
        self.writes: list[Result] = []
        self.checkpoints: list[Checkpoint] = []
        self.health: list[Any] = []
        self.calls: list[str] = []
        self.function_loads: list[Any] = []
        self.rolled: list[dict[str, tuple[int, int]]] = []

    def write(
        self, batches: list[SampleBatch], result: Result, now_ms: int, late: Any = None, function_load: Any = None
    ) -> None:
        if self.fail_times:
            self.fail_times -= 1
            raise WriteError("clickhouse down")
        self.writes.append(result)
        self.function_loads.append(function_load)

    def write_health(self, events: list[Any]) -> None:
        self.health.extend(events)

    def settle(self) -> None:
        self.calls.append("settle")

    def close(self) -> None:
        self.calls.append("close")

    def roll(self, dirty: dict[str, tuple[int, int]]) -> None:
        self.calls.append("roll")
        self.rolled.append(dirty)

    def drop_days_before(self, table: str, day: int) -> list[str]:
        self.calls.append(f"retention {table} {day}")
        return ["20261101"]

    def save_checkpoints(self, cps: list[Checkpoint]) -> None:
        self.calls.append("checkpoint")
        self.checkpoints.extend(cps)

    def load_checkpoints(self, topic: str, partitions: list[int]) -> dict[int, Checkpoint]:
        out = {}
        for c in self.checkpoints:  # the newest offset wins, as in the table
            if c.topic == topic and c.partition in partitions and c.offset >= out.get(c.partition, c).offset:
                out[c.partition] = c
        return out


def batch(node: str, seq: int, ts: int, cpu: float) -> bytes:
    b = BatchBuilder(node)
    e = b.entity("sb1", {"tenant": "acme"})
    b.add(e, n.M_CG_CPU_USAGE_US, "", ts, cpu)
    b.add(e, n.M_SPEC_VCPU_MILLI, "", ts, 1000)
    if seq == 0:
        b.event(e, EventKind.START, ts - 1000)
    return encode(b.build(1, seq, ts))


REGISTRY: dict[int, CollectorRegistry] = {}


def make(writer: FakeWriter) -> tuple[Processor, FakeProducer, FakeConsumer]:
    prod, cons, reg = FakeProducer(), FakeConsumer(), CollectorRegistry()
    s = ProcessorSettings(checkpoint_interval_s=0)  # every flush checkpoints and commits
    p = Processor(s, cons, prod, writer, reg, clock_ms=lambda: 10_000)  # type: ignore[arg-type]
    REGISTRY[id(p)] = reg
    return p, prod, cons


def test_poisoned_batch_is_dead_lettered_and_the_rest_written(monkeypatch: pytest.MonkeyPatch) -> None:
    real = Accountant._columns

    def columns(self: Accountant, batches: Any, *rest: Any) -> Any:
        if any(b.node == "poison" for b in batches):
            raise ValueError("boom")
        return real(self, batches, *rest)

    monkeypatch.setattr(Accountant, "_columns", columns)
    w = FakeWriter()
    p, prod, cons = make(w)
    for i, raw in enumerate([batch("n1", 0, 1000, 100), batch("poison", 0, 1000, 5), batch("n1", 1, 2000, 300)]):
        p.handle(Msg(raw, i))
    p.flush()
    assert [h["sandmeter-dlq-reason"] for _, _, h in prod.sent] == [b"processing_error"]
    assert int(w.writes[0].usage["cpu_used_us"].sum()) == 300
    assert p.total_batches == 2 and p.total_dlq == 1 and len(cons.commits) == 1


def test_undecodable_message_is_dead_lettered_with_reason() -> None:
    p, prod, cons = make(FakeWriter())
    p.handle(Msg(b"garbage!garbage!", 7))
    p.flush()
    [(topic, value, headers)] = prod.sent
    assert topic == ProcessorSettings().deadletter_topic and value == b"garbage!garbage!"
    assert headers["sandmeter-dlq-reason"] == b"corrupt" and headers["sandmeter-source"] == b"t/0/7"
    assert len(cons.commits) == 1  # the offset moves on past it


def test_write_failure_is_retried_before_commit() -> None:
    w = FakeWriter(fail_times=1)
    p, _, cons = make(w)
    p.handle(Msg(batch("n1", 0, 1000, 100), 0))
    p.flush()  # no stop event: retries after the 0.5 s backoff
    assert len(w.writes) == 1 and len(cons.commits) == 1
    assert REGISTRY[id(p)].get_sample_value("sandmeter_processor_write_failures_total") == 1


def test_close_leaves_the_group_without_committing_unflushed_offsets() -> None:
    p, prod, cons = make(FakeWriter())
    p.close()
    assert cons.closed_with_autocommit is False and prod.closed


@dataclass(frozen=True)
class TP:
    topic: str
    partition: int


def test_a_partition_moves_with_its_state_and_offset() -> None:
    w = FakeWriter()
    a, _, _ = make(w)
    for i, (node, part) in enumerate([("n1", 0), ("n2", 1)]):
        a.handle(Msg(batch(node, 0, 1000, 100), 10 + i, partition=part))
    a.flush()
    a.handle(Msg(batch("n2", 1, 2000, 400), 12, partition=1))
    a.on_revoked([TP("t", 1)])  # flushes, checkpoints partition 1, forgets n2
    assert {s.node for s in a.acct.sandboxes.values()} == {"n1"}
    b, _, cons = make(w)
    b.on_assigned([TP("t", 1)])
    assert cons.seeks == {("t", 1): 13} and {s.node for s in b.acct.sandboxes.values()} == {"n2"}
    b.handle(Msg(batch("n2", 2, 3000, 1000), 13, partition=1))
    b.flush()
    # n2's counter continues from the moved state: 600 more, not the whole 1000 again
    assert int(w.writes[-1].usage["cpu_used_us"].sum()) == 600


def test_a_partition_without_a_checkpoint_is_read_from_its_beginning() -> None:
    """Not from the group's committed offset: without the state at that offset the first
    samples after it would only set baselines (a replica may not have the checkpoint yet)."""
    w = FakeWriter()
    a, _, _ = make(w)
    a.handle(Msg(batch("n1", 0, 1000, 100), 0, partition=0))
    a.flush()  # checkpoint of partition 0 only
    b, _, cons = make(w)
    b.on_assigned([TP("t", 0), TP("t", 3)])
    assert cons.seeks == {("t", 0): 1, ("t", 3): 0}


def test_checkpoint_then_replay_after_a_crash_writes_identical_rows() -> None:
    w = FakeWriter()
    a, _, _ = make(w)
    a.handle(Msg(batch("n1", 0, 1000, 100), 0))
    a.flush()  # checkpoint at offset 1
    a.s = a.s.model_copy(update={"checkpoint_interval_s": 3600.0})
    a.handle(Msg(batch("n1", 1, 2000, 300), 1))
    a.flush()  # written, then the process dies before the next checkpoint
    crashed_rows = w.writes[-1].usage
    b, _, cons = make(w)
    b.on_assigned([TP("t", 0)])
    assert cons.seeks == {("t", 0): 1}
    b.handle(Msg(batch("n1", 1, 2000, 300), 1))
    b.flush()
    pd.testing.assert_frame_equal(w.writes[-1].usage, crashed_rows)


def test_checkpoint_evicts_sandboxes_stopped_longer_than_the_lateness_window() -> None:
    w = FakeWriter()
    p, _, _ = make(w)
    p.s = p.s.model_copy(update={"lateness_s": 5.0})  # the fake clock says 10 s; stops before 5 s go
    p.handle(Msg(batch("n1", 0, 1000, 100), 0))
    b = BatchBuilder("n1")
    e = b.entity("sb1", {"tenant": "acme"})
    b.add(e, n.M_CG_CPU_USAGE_US, "", 2000, 200)
    b.event(e, EventKind.STOP, 2000)
    p.handle(Msg(encode(b.build(1, 1, 2000)), 1))
    p.handle(Msg(batch("n2", 0, 9000, 100), 2))  # still running: kept
    p.flush()
    assert [s.node for s in p.acct.sandboxes.values()] == ["n2"]
    assert REGISTRY[id(p)].get_sample_value("sandmeter_processor_evicted_sandboxes_total") == 1
    assert w.checkpoints[-1].state.sandboxes["node"].tolist() == ["n2"]  # the checkpoint no longer carries it


def test_the_buckets_a_flush_wrote_are_rolled_up_before_the_checkpoint() -> None:
    w = FakeWriter()
    p, _, cons = make(w)
    p.handle(Msg(batch("n1", 0, 61_000, 100), 0))
    p.handle(Msg(batch("n1", 1, 125_000, 300), 1))
    p.flush()
    # the raw samples in flight are waited for, then the rollups, then the checkpoint
    assert w.calls == ["settle", "roll", "checkpoint"] and len(cons.commits) == 1
    assert w.rolled == [{"acme": (60_000, 120_000)}]  # minutes of the intervals' last milliseconds
    p.handle(Msg(batch("n1", 2, 126_000, 301), 2))
    p.flush()
    assert w.rolled[-1] == {"acme": (120_000, 120_000)}  # only what was written since


def test_retention_drops_raw_days_older_than_the_setting() -> None:
    w = FakeWriter()
    s = ProcessorSettings(raw_retention_days=7)
    reg = CollectorRegistry()
    p = Processor(s, FakeConsumer(), FakeProducer(), w, reg, clock_ms=lambda: 1_795_773_600_000)  # type: ignore[arg-type]
    p.retention()  # 2026-11-27T10:00Z
    assert w.calls == ["retention raw_samples 20261120", "retention function_load 20261125"]
    assert reg.get_sample_value("sandmeter_processor_partitions_dropped_total") == 2
    p.s = s.model_copy(update={"raw_retention_days": 0})
    w.calls.clear()
    p.retention()
    assert w.calls == ["retention function_load 20261125"]  # 0 keeps the raw samples


def test_function_load_rows_carry_the_function_spec_and_inflight_gauge() -> None:
    w = FakeWriter()
    p, _, _ = make(w)
    b = BatchBuilder("n1")
    e = b.entity("sb1", {"tenant": "acme", "cri_name": "resize-7d9f8b6c5-x2x4q"})
    b.add(e, n.M_CG_CPU_USAGE_US, "", 2000, 500_000)
    b.add(e, n.M_SPEC_VCPU_MILLI, "", 2000, 1500)
    b.add(e, n.M_SPEC_MEM_BYTES, "", 2000, 1 << 30)
    b.add(e, n.M_INFLIGHT, "", 2000, 7)
    b.event(e, EventKind.START, 1000)
    p.handle(Msg(encode(b.build(1, 0, 2000)), 0))
    p.flush()
    fl = w.function_loads[-1]
    assert fl[["function", "vcpu_milli", "inflight", "cpu_used_us"]].values.tolist() == [["resize", 1500, 7.0, 500_000]]
