"""Small fakes for the processor's clients: a consumer, a producer, a ClickHouse writer.

The writer is the real `ClickHouseWriter` with its inserts recorded instead of sent (and
failing on demand), so the chain's preparation and partial retries run for real.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import pandas as pd
from prometheus_client import CollectorRegistry

from contracts import names as n
from contracts.builder import BatchBuilder
from contracts.wire import EventKind, encode
from pipeline.build import assemble
from pipeline.checkpoint import Checkpoint
from pipeline.kafka import ProduceError, Rebalance
from pipeline.processor import Processor
from pipeline.settings import ProcessorSettings
from pipeline.steps import TP, Record
from pipeline.writer import ClickHouseWriter, WriteError

NOW = 1_800_000_000_000  # the processors' clock in these tests


class FakeConsumer:
    def __init__(self) -> None:
        self.queue: list[Record] = []
        self.assigned: set[TP] = set()
        self.paused: set[TP] = set()
        self.commits: list[dict[TP, int]] = []
        self.seeks: dict[TP, int] = {}
        self.closed = False
        self.rebalance: Rebalance | None = None
        self.pause_calls = 0

    def subscribe(self, topic: str, rebalance: Rebalance) -> None:
        self.rebalance = rebalance

    def poll(self, timeout_ms: int) -> list[Record]:
        out = [r for r in self.queue if r.tp not in self.paused]
        self.queue = [r for r in self.queue if r.tp in self.paused]
        return out

    def pause(self, tps: Collection[TP]) -> None:
        self.pause_calls += 1
        self.paused |= set(tps)

    def resume(self, tps: Collection[TP]) -> None:
        self.paused -= set(tps)

    def assignment(self) -> set[TP]:
        return set(self.assigned)

    def seek(self, tp: TP, offset: int) -> None:
        self.seeks[tp] = offset

    def seek_to_beginning(self, tp: TP) -> None:
        self.seeks[tp] = 0

    def lag(self) -> dict[TP, int]:
        return {tp: len([r for r in self.queue if r.tp == tp]) for tp in self.assigned}

    def commit(self, offsets: Mapping[TP, int]) -> None:
        self.commits.append(dict(offsets))

    def close(self) -> None:
        self.closed = True


class FakeProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes | None, dict[str, bytes | None]]] = []
        self.down = False
        self.closed = False
        self.max_bytes = 1 << 20

    def send(
        self, topic: str, key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes | None]],
        wait_s: float | None,
    ) -> None:  # fmt: skip
        if self.down:
            raise ProduceError("broker away", retriable=True)
        if (key is None and value is None) or any(v is None for _, v in headers):  # as kafka-python refuses
            raise ProduceError("TypeError: All headers items must be (str, bytes) tuples", retriable=False)
        if value is not None and len(value) > self.max_bytes:
            raise ProduceError("MessageSizeTooLargeError", retriable=False)
        self.sent.append((topic, key, value, dict(headers)))

    def close(self, timeout_s: float) -> None:
        self.closed = True

    def dead(self) -> list[tuple[bytes | None, bytes | None, dict[str, bytes | None]]]:
        return [(k, v, h) for t, k, v, h in self.sent if t == ProcessorSettings().deadletter_topic]


class FakeWriter(ClickHouseWriter):
    """Records every insert by table; `fail` makes the next that many calls raise WriteError."""

    def __init__(self, keep_raw: bool = False) -> None:
        super().__init__(None, keep_raw=keep_raw)
        self.tables: dict[str, list[pd.DataFrame]] = {}
        self.calls: list[str] = []
        self.saved: list[Checkpoint] = []
        self.fail = 0
        self.down = False  # every call fails while set

    def _maybe_fail(self, what: str) -> None:
        if self.down or self.fail:
            self.fail = max(0, self.fail - 1)
            raise WriteError(f"{what}: clickhouse down")

    def _insert(self, table: str, df: pd.DataFrame, ch: Any = None) -> None:
        self._maybe_fail(table)
        if not df.empty:
            self.tables.setdefault(table, []).append(df)

    def rows(self, table: str) -> pd.DataFrame:
        got = self.tables.get(table, [])
        return pd.concat(got, ignore_index=True) if got else pd.DataFrame()

    def write(self, p: Any) -> None:
        self.calls.append("write")
        super().write(p)

    def roll(self, dirty: dict[str, tuple[int, int]]) -> None:
        self._maybe_fail("rollup")
        self.calls.append("roll")

    def save_checkpoints(self, cps: Sequence[Checkpoint]) -> None:
        self._maybe_fail("checkpoint")
        self.calls.append("checkpoint")
        self.saved.extend(cps)

    def load_checkpoints(self, topic: str, partitions: Sequence[int]) -> dict[int, Checkpoint]:
        self._maybe_fail("load")
        out: dict[int, Checkpoint] = {}
        for c in self.saved:  # the newest offset wins, as in the table
            if c.topic == topic and c.partition in partitions and c.offset >= out.get(c.partition, c).offset:
                out[c.partition] = c
        return out


def processor(
    writer: FakeWriter, registry: CollectorRegistry | None = None, **settings: Any
) -> tuple[Processor, FakeConsumer, FakeProducer]:
    cons, prod = FakeConsumer(), FakeProducer()
    s = ProcessorSettings(**{"checkpoint_interval_s": 0, "flush_interval_s": 0.01, **settings})
    p = assemble(s, cons, prod, writer, writer, registry or CollectorRegistry(), clock_ms=lambda: NOW)
    cons.subscribe(s.topic, p)
    return p, cons, prod


def assign(p: Processor, cons: FakeConsumer, tps: list[TP]) -> None:
    """What the broker does on a rebalance: assigns, then the processor loads the checkpoints."""
    cons.assigned |= set(tps)
    p.on_assigned(tps)
    deadline = time.monotonic() + 5
    while p.loader.loading and time.monotonic() < deadline:
        p.turn()


def feed(p: Processor, cons: FakeConsumer, records: list[Record], timeout_s: float = 5.0) -> bool:
    """Queues `records`, lets the processor take them all, then drains and checkpoints."""
    cons.queue += records
    deadline = time.monotonic() + timeout_s
    while (cons.queue or p.feeding()) and time.monotonic() < deadline:
        p.turn()
    return p.drain(None, max(0.1, deadline - time.monotonic()))


def record(value: bytes | None, offset: int, key: bytes | None = b"n1", partition: int = 0,
           headers: tuple[tuple[str, bytes | None], ...] = ()) -> Record:  # fmt: skip
    return Record(ProcessorSettings().topic, partition, offset, key, value, headers)


def batch(node: str, seq: int, ts: int, cpu: float, tenant: str = "acme") -> bytes:
    b = BatchBuilder(node)
    e = b.entity("sb1", {"tenant": tenant})
    b.add(e, n.M_CG_CPU_USAGE_US, "", ts, cpu)
    b.add(e, n.M_SPEC_VCPU_MILLI, "", ts, 1000)
    if seq == 0:
        b.event(e, EventKind.START, ts - 1000)
    return encode(b.build(1, seq, ts))
