"""The processor's chain driven end to end with small fakes for Kafka and ClickHouse (no services)."""

from __future__ import annotations

import time
from typing import Any

import pandas as pd
import pytest
from fakes import NOW, FakeWriter, assign, batch, feed, processor, record
from prometheus_client import CollectorRegistry

from contracts import names as n
from contracts.builder import BatchBuilder
from contracts.wire import EventKind, encode
from pipeline.accounting import Accountant
from pipeline.settings import ProcessorSettings

T0 = NOW - 3_600_000  # an hour before the processors' clock
TOPIC = ProcessorSettings().topic
TP0 = (TOPIC, 0)


def usage(w: FakeWriter) -> pd.DataFrame:
    return w.rows(n.T_USAGE)


def test_poisoned_batch_is_dead_lettered_as_it_arrived_and_the_rest_written(monkeypatch: pytest.MonkeyPatch) -> None:
    real = Accountant._columns

    def columns(self: Accountant, batches: Any, *rest: Any) -> Any:
        if any(b.node == "poison" for b in batches):
            raise ValueError("boom")
        return real(self, batches, *rest)

    monkeypatch.setattr(Accountant, "_columns", columns)
    w = FakeWriter()
    p, cons, prod = processor(w)
    assign(p, cons, [TP0])
    poison = batch("poison", 0, T0 + 1000, 5)
    raws = [batch("n1", 0, T0 + 1000, 100), poison, batch("n1", 1, T0 + 2000, 300)]
    keys = [b"n1", b"poison", b"n1"]
    assert feed(p, cons, [record(raw, i, key=k) for i, (raw, k) in enumerate(zip(raws, keys, strict=True))])
    [(key, value, headers)] = prod.dead()
    assert (key, value) == (b"poison", poison)  # the bytes that arrived, never re-encoded
    assert (
        headers["sandmeter-dlq-reason"] == b"processing_error"
        and headers["sandmeter-source"] == f"{TOPIC}/0/1".encode()
    )
    assert int(usage(w)["cpu_used_us"].sum()) == 300
    assert p.total_batches == 2 and p.total_dlq == 1 and cons.commits[-1] == {TP0: 3}


@pytest.mark.parametrize(
    ("value", "key", "reason"),
    [
        (None, b"n1", "empty"),
        (b"", b"n1", "empty"),
        (b"garbage!garbage!", b"n1", "corrupt"),
        (b"SMB", b"n1", "truncated"),
        (b"SMB\x07\x01\x00\x00\x00\x00\x00", b"n1", "unknown_version"),
        (None, None, "empty"),
        ("batch", None, "bad_key"),
        ("batch", b"another-node", "bad_key"),
    ],
)
def test_a_record_that_cannot_be_a_batch_is_dead_lettered_with_its_reason(
    value: bytes | str | None, key: bytes | None, reason: str
) -> None:
    raw = batch("n1", 0, T0 + 1000, 100) if value == "batch" else value
    assert not isinstance(raw, str)
    w = FakeWriter()
    p, cons, prod = processor(w)
    assign(p, cons, [TP0])
    headers = (("x-odd", b"\xff"), ("sandmeter-format", b"99"))
    assert feed(p, cons, [record(raw, 7, key=key, headers=headers)])
    [(k, v, h)] = prod.dead()
    # as it came (a record with neither key nor value goes with an empty key: kafka-python sends no other)
    assert (k, v) == (b"" if key is None and raw is None else key, raw)
    assert h["sandmeter-dlq-reason"] == reason.encode()
    assert h["x-odd"] == b"\xff" and h["sandmeter-format"] == b"99"  # headers as they came
    assert h["sandmeter-source"] == f"{TOPIC}/0/7".encode() and h["sandmeter-dlq-detail"]
    assert cons.commits[-1] == {TP0: 8}  # the offset moves on past it
    assert usage(w).empty


def test_a_batch_from_2200_is_dead_lettered_as_a_bad_timestamp() -> None:
    w = FakeWriter()
    p, cons, prod = processor(w)
    assign(p, cons, [TP0])
    assert feed(p, cons, [record(batch("n1", 0, 7_258_118_400_000, 100), 0)])
    [(_, _, h)] = prod.dead()
    assert h["sandmeter-dlq-reason"] == b"bad_timestamp" and b"2200-01-01" in (h["sandmeter-dlq-detail"] or b"")


def test_bad_values_are_kept_in_late_samples_with_their_reason_and_never_billed() -> None:
    w = FakeWriter()
    p, cons, _ = processor(w)
    assign(p, cons, [TP0])
    b = BatchBuilder("n1")
    e = b.entity("sb1", {"tenant": "acme"})
    b.add(e, n.M_CG_CPU_USAGE_US, "", T0 + 1000, float("nan"))
    b.add(e, n.M_CG_IO_RBYTES, "", T0 + 1000, -5.0)
    b.add(e, n.M_SPEC_VCPU_MILLI, "", T0 + 1000, 1e12)
    b.add(e, n.M_CG_IO_WBYTES, "", T0 + 1000, 4096.0)
    b.event(e, EventKind.START, T0)
    assert feed(p, cons, [record(encode(b.build(1, 0, T0 + 1000)), 0)])
    late = w.rows(n.T_LATE)
    assert sorted(zip(late["metric"], late["reason"], strict=True)) == [
        (n.M_CG_CPU_USAGE_US, "not_finite"), (n.M_CG_IO_RBYTES, "negative"), (n.M_SPEC_VCPU_MILLI, "out_of_range"),
    ]  # fmt: skip
    assert set(late["batch_id"]) == {"n1/1/0"}
    u = usage(w)
    assert int(u["io_write_bytes"].sum()) == 4096 and int(u["cpu_used_us"].sum()) == 0


def test_write_failures_are_retried_and_nothing_is_committed_before() -> None:
    w = FakeWriter()
    reg = CollectorRegistry()
    p, cons, _ = processor(w, reg)
    assign(p, cons, [TP0])
    w.fail = 2
    cons.queue.append(record(batch("n1", 0, T0 + 1000, 100), 0))
    deadline = time.monotonic() + 10
    while not cons.commits and time.monotonic() < deadline:
        p.turn()  # the loop retries the write after its backoff (0.5 s, then 1 s)
    assert int(usage(w)["cpu_used_us"].sum()) == 100 and cons.commits == [{TP0: 1}]
    assert reg.get_sample_value(n.PROCESSOR_WRITE_FAILURES) == 2
    assert reg.get_sample_value(n.PROCESSOR_WRITE_OUTAGE) == 0  # writing again


def test_while_clickhouse_is_down_consumption_pauses_and_a_stop_checkpoints_nothing() -> None:
    w = FakeWriter()
    reg = CollectorRegistry()
    p, cons, _ = processor(w, reg, shutdown_timeout_s=0.5)
    assign(p, cons, [TP0])
    w.down = True
    waves(p, cons, 3)
    assert TP0 in cons.paused and cons.queue  # backpressure: the rest waits in Kafka
    assert reg.get_sample_value(n.PROCESSOR_PAUSED) == 1 and reg.get_sample_value(n.PROCESSOR_WRITE_OUTAGE) > 1
    t0 = time.monotonic()
    assert not p.drain(None, 0.5)  # what a SIGTERM does: gives up in time
    assert time.monotonic() - t0 < 1.5
    assert not w.saved and not cons.commits and usage(w).empty


def waves(p: Any, cons: Any, seconds: float) -> None:
    """Records arriving in waves of five while the processor turns, for `seconds`."""
    deadline, i = time.monotonic() + seconds, 0
    while time.monotonic() < deadline:
        cons.queue += [
            record(batch("n1", i + k, T0 + 1000 * (i + k + 1), 100.0 * (i + k + 1)), i + k) for k in range(5)
        ]
        i += 5
        for _ in range(5):
            p.turn()


def test_a_partition_assigned_while_clickhouse_is_down_waits_paused_and_a_stop_exits_at_once() -> None:
    w = FakeWriter()
    p, cons, _ = processor(w)
    w.down = True
    cons.assigned = {TP0}
    p.on_assigned([TP0])
    cons.queue.append(record(batch("n1", 0, T0 + 1000, 100), 0))
    for _ in range(20):
        p.turn()
    assert TP0 in cons.paused and cons.queue and p.loader.loading == {TP0}  # nothing read without its state
    t0 = time.monotonic()
    assert p.drain(None, 5)  # nothing taken, nothing to write: a stop ends at once
    assert time.monotonic() - t0 < 1
    w.down = False
    deadline = time.monotonic() + 10
    while (p.loader.loading or cons.queue) and time.monotonic() < deadline:
        p.turn()  # the load is tried again every 2 s
    assert TP0 not in cons.paused and not p.loader.loading and not cons.queue


def test_close_leaves_the_group() -> None:
    p, cons, prod = processor(FakeWriter())
    p.close()
    assert cons.closed and prod.closed


def test_a_partition_moves_with_its_state_and_offset() -> None:
    w = FakeWriter()
    a, cons_a, _ = processor(w)
    assign(a, cons_a, [TP0, (TOPIC, 1)])
    recs = [record(batch(nd, 0, T0 + 1000, 100), 10 + i, key=nd.encode(), partition=part)
            for i, (nd, part) in enumerate([("n1", 0), ("n2", 1)])]  # fmt: skip
    assert feed(a, cons_a, recs)
    cons_a.queue.append(record(batch("n2", 1, T0 + 2000, 400), 12, key=b"n2", partition=1))
    while cons_a.queue:
        a.turn()
    a.on_revoked([(TOPIC, 1)])  # flushes, checkpoints partition 1, forgets n2
    assert a.chain.account.acct.nodes() == {"n1"}
    b, cons_b, _ = processor(w)
    assign(b, cons_b, [(TOPIC, 1)])
    assert cons_b.seeks == {(TOPIC, 1): 13} and b.chain.account.acct.nodes() == {"n2"}
    assert feed(b, cons_b, [record(batch("n2", 2, T0 + 3000, 1000), 13, key=b"n2", partition=1)])
    # n2's counter continues from the moved state: 600 more, not the whole 1000 again
    assert int(usage(w)["cpu_used_us"].iloc[-1]) == 600


def test_a_partition_without_a_checkpoint_is_read_from_its_beginning() -> None:
    """Not from the group's committed offset: without the state at that offset the first
    samples after it would only set baselines (a replica may not have the checkpoint yet)."""
    w = FakeWriter()
    a, cons_a, _ = processor(w)
    assign(a, cons_a, [TP0])
    assert feed(a, cons_a, [record(batch("n1", 0, T0 + 1000, 100), 0)])  # checkpoint of partition 0 only
    b, cons_b, _ = processor(w)
    assign(b, cons_b, [TP0, (TOPIC, 3)])
    assert cons_b.seeks == {TP0: 1, (TOPIC, 3): 0}


def test_a_revocation_with_clickhouse_down_drops_the_partition_unwritten() -> None:
    w = FakeWriter()
    a, cons, _ = processor(w, shutdown_timeout_s=0.3)
    assign(a, cons, [TP0])
    w.down = True
    cons.queue.append(record(batch("n1", 0, T0 + 1000, 100), 0))
    while cons.queue:
        a.turn()
    a.on_revoked([TP0])
    assert not w.saved and a.chain.account.acct.nodes() == frozenset()
    w.down = False
    assert a.drain(None, 2)  # the rows in flight may still land (identical to the next owner's)
    assert not w.saved  # but nothing is checkpointed for a partition it lost


def test_checkpoint_then_replay_after_a_crash_writes_identical_rows() -> None:
    w = FakeWriter()
    a, cons, _ = processor(w)
    assign(a, cons, [TP0])
    assert feed(a, cons, [record(batch("n1", 0, T0 + 1000, 100), 0)])  # checkpoint at offset 1
    a.chain.account.every_s = 3600.0
    cons.queue.append(record(batch("n1", 1, T0 + 2000, 300), 1))
    while cons.queue or a.chain.pending():
        a.turn()  # written, then the process dies before the next checkpoint
    crashed = usage(w).iloc[-1:]
    b, cons_b, _ = processor(w)
    assign(b, cons_b, [TP0])
    assert cons_b.seeks == {TP0: 1}
    assert feed(b, cons_b, [record(batch("n1", 1, T0 + 2000, 300), 1)])
    pd.testing.assert_frame_equal(usage(w).iloc[-1:].reset_index(drop=True), crashed.reset_index(drop=True))


def test_checkpoint_evicts_sandboxes_stopped_longer_than_the_lateness_window() -> None:
    w = FakeWriter()
    reg = CollectorRegistry()
    p, cons, _ = processor(w, reg, lateness_s=5.0)  # stops more than 5 s before the clock go
    assign(p, cons, [TP0])
    b = BatchBuilder("n1")
    e = b.entity("sb1", {"tenant": "acme"})
    b.add(e, n.M_CG_CPU_USAGE_US, "", T0 + 2000, 200)
    b.event(e, EventKind.STOP, T0 + 2000)
    recs = [record(batch("n1", 0, T0 + 1000, 100), 0), record(encode(b.build(1, 1, T0 + 2000)), 1),
            record(batch("n2", 0, NOW - 1000, 100), 2, key=b"n2")]  # fmt: skip
    assert feed(p, cons, recs)
    assert p.chain.account.acct.nodes() == {"n2"}
    assert reg.get_sample_value("sandmeter_processor_evicted_sandboxes_total") == 1
    assert w.saved[-1].state.sandboxes["node"].tolist() == ["n2"]  # the checkpoint no longer carries it


def test_the_buckets_written_are_rolled_up_before_the_checkpoint() -> None:
    w = FakeWriter()
    p, cons, _ = processor(w)
    assign(p, cons, [TP0])
    assert feed(p, cons, [record(batch("n1", 0, T0 + 61_000, 100), 0), record(batch("n1", 1, T0 + 125_000, 300), 1)])
    assert w.calls[-2:] == ["roll", "checkpoint"] and cons.commits == [{TP0: 2}]


def test_function_load_rows_carry_the_function_spec_and_inflight_gauge() -> None:
    w = FakeWriter()
    p, cons, _ = processor(w)
    assign(p, cons, [TP0])
    b = BatchBuilder("n1")
    e = b.entity("sb1", {"tenant": "acme", "cri_name": "resize-7d9f8b6c5-x2x4q"})
    b.add(e, n.M_CG_CPU_USAGE_US, "", T0 + 2000, 500_000)
    b.add(e, n.M_SPEC_VCPU_MILLI, "", T0 + 2000, 1500)
    b.add(e, n.M_SPEC_MEM_BYTES, "", T0 + 2000, 1 << 30)
    b.add(e, n.M_INFLIGHT, "", T0 + 2000, 7)
    b.event(e, EventKind.START, T0 + 1000)
    assert feed(p, cons, [record(encode(b.build(1, 0, T0 + 2000)), 0)])
    fl = w.rows(n.T_FUNCTION_LOAD)
    assert fl[["function", "vcpu_milli", "inflight", "cpu_used_us"]].values.tolist() == [["resize", 1500, 7.0, 500_000]]


def test_lag_keeps_updating_while_writes_fail() -> None:
    w = FakeWriter()
    reg = CollectorRegistry()
    p, cons, _ = processor(w, reg)
    assign(p, cons, [TP0])
    w.down = True
    waves(p, cons, 1)
    p.periodic._last_lag -= 10  # due now
    p.turn()
    lag = reg.get_sample_value(n.PROCESSOR_LAG, {"partition": "0"})
    assert lag is not None and lag > 0  # consumption paused, the backlog shows
