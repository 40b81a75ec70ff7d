"""Each step of the chain on its own: decode, validate, batch, account, write, commit, the outbox."""

from __future__ import annotations

import struct
import time
import zlib
from typing import Any

import pytest
from fakes import NOW, FakeConsumer, FakeProducer, FakeWriter, batch, record
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from contracts import names as n
from contracts.builder import BatchBuilder
from contracts.wire import EventKind, decode, encode
from pipeline.account import AccountStep
from pipeline.accounting import Accountant
from pipeline.batching import BatchStep
from pipeline.checkpoint import Checkpoint
from pipeline.commit import CommitStep
from pipeline.deadletter import DeadLetters
from pipeline.decode import DecodeStep, Refused, decoded
from pipeline.health import HealthDetector
from pipeline.metrics import ProcessorMetrics
from pipeline.steps import Flush, Item, MessageRejected, Outbox, Plan, Rows, Written, offsets_of
from pipeline.validate import Rules, checked
from pipeline.worker import Worker
from pipeline.write import WriteStep

T0 = NOW - 3_600_000
RULES = Rules(max_age_ms=7 * 86_400_000, max_skew_ms=300_000, max_samples=1000, max_sandbox_cpus=64,
              max_memory_bytes=1 << 40)  # fmt: skip


class Sink:
    """A next step that takes everything (or refuses while `full`)."""

    def __init__(self) -> None:
        self.got: list[Any] = []
        self.full = False

    def submit(self, msg: Any) -> None:
        if self.full:
            raise MessageRejected
        self.got.append(msg)

    def poll(self) -> None:
        pass

    def join(self) -> None:
        pass

    def close(self) -> None:
        pass

    def pending(self) -> bool:
        return False


def dlq(prod: FakeProducer | None = None) -> DeadLetters:
    return DeadLetters(prod or FakeProducer(), "dlq", ProcessorMetrics(CollectorRegistry()).dlq)


# -- decode -------------------------------------------------------------------------------------
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.none(), st.binary(max_size=64), st.binary(max_size=8).map(lambda b: b"SMB\x01\x01\x00" + b)))
def test_any_bytes_decode_to_a_batch_or_a_dead_letter_reason(value: bytes | None) -> None:
    try:
        decoded(record(value, 0), 1 << 20)
    except Refused as r:
        assert r.reason in n.DLQ_REASONS and r.detail


@settings(max_examples=200)
@given(st.data())
def test_a_flipped_or_cut_valid_batch_is_refused_or_still_a_batch(data: st.DataObject) -> None:
    raw = bytearray(batch("n1", 0, T0, 100))
    for _ in range(data.draw(st.integers(1, 3))):
        raw[data.draw(st.integers(0, len(raw) - 1))] ^= 1 << data.draw(st.integers(0, 7))
    cut = data.draw(st.integers(0, len(raw)))
    try:
        decoded(record(bytes(raw[:cut]), 0), 1 << 20)
    except Refused as r:
        assert r.reason in n.DLQ_REASONS


def test_decoder_faults_beyond_wire_errors_become_corrupt() -> None:
    """A body whose checksum holds but whose header is absurd (scrape time past int64)."""
    body = struct.pack("<QQQIII", 1, 0, (1 << 64) - 1, 0, 0, 2) + b"{}"
    raw = struct.pack("<3sBBxI", b"SMB", 1, 0, zlib.crc32(body)) + body
    with pytest.raises(Refused) as r:
        decoded(record(raw, 0), 1 << 20)
    assert r.value.reason == "corrupt"


def test_names_no_utf8_column_can_hold_are_corrupt() -> None:
    b = BatchBuilder("n1")
    e = b.entity("sb\ud800", {"tenant": "acme"})  # a lone surrogate, spelled as a JSON escape on the wire
    b.add(e, n.M_CG_CPU_USAGE_US, "", T0, 1.0)
    with pytest.raises(Refused) as r:
        decoded(record(encode(b.build(1, 0, T0)), 0), 1 << 20)
    assert r.value.reason == "corrupt" and "surrogate" in r.value.detail


def test_decode_step_dead_letters_then_passes_the_offset_on() -> None:
    prod, sink = FakeProducer(), Sink()
    step = DecodeStep(sink, dlq(prod), max_bytes=1000)
    step.submit(record(b"x" * 1001, 3))
    step.submit(record(batch("n1", 0, T0, 100), 4))
    assert [h["sandmeter-dlq-reason"] for *_, h in prod.sent] == [b"too_large"]
    assert [it.batch is None for it in sink.got] == [True, False]


def test_decode_step_refuses_a_record_while_the_dead_letter_topic_is_away() -> None:
    prod, sink = FakeProducer(), Sink()
    prod.down = True
    step = DecodeStep(sink, dlq(prod), max_bytes=100)
    with pytest.raises(MessageRejected):
        step.submit(record(None, 0))
    assert not sink.got  # not taken: the processor submits it again
    prod.down = False
    step.submit(record(None, 0))
    assert len(sink.got) == 1 and len(prod.sent) == 1


# -- validate -----------------------------------------------------------------------------------
def one(metric: str, value: float, ts: int = T0, events: tuple[tuple[EventKind, int], ...] = ()) -> Any:
    b = BatchBuilder("n1")
    e = b.entity("sb1", {"tenant": "acme"})
    b.add(e, metric, "", ts, value)
    b.add(e, "kata_guest_load", "", ts, -1.0)  # negative is fine for a metric nobody bills
    for k, t in events:
        b.event(e, k, t)
    return decode(encode(b.build(1, 0, ts)))


@pytest.mark.parametrize(
    ("metric", "value", "reason"),
    [
        (n.M_CG_CPU_USAGE_US, float("nan"), "not_finite"),
        (n.M_CG_MEM_CURRENT, float("inf"), "not_finite"),
        ("kata_guest_load", float("-inf"), "not_finite"),
        (n.M_CG_IO_WBYTES, -1.0, "negative"),
        (n.M_SPEC_MEM_BYTES, -(2.0**63), "negative"),
        (n.M_SPEC_VCPU_MILLI, 65_000.0, "out_of_range"),
        (n.M_CG_MEM_CURRENT, float(1 << 41), "out_of_range"),
        (n.M_CG_CPU_USAGE_US, 2.0**63, "out_of_range"),
    ],
)
def test_a_bad_value_is_taken_out_of_the_batch_with_its_reason(metric: str, value: float, reason: str) -> None:
    clean, rejected = checked(one(metric, value), NOW, RULES)
    assert rejected is not None and rejected["reason"].tolist() == [reason]
    assert rejected["batch_id"].tolist() == ["n1/1/0"] and rejected["metric"].tolist() == [metric]
    assert len(clean) == 1 and clean.metrics[clean.metric[0]] == "kata_guest_load"


def test_good_values_pass_untouched() -> None:
    b = one(n.M_CG_CPU_USAGE_US, 5.0)
    assert checked(b, NOW, RULES) == (b, None)


@pytest.mark.parametrize(
    ("ts", "events", "what"),
    [
        (7_258_118_400_000, (), "scrape time"),  # 2200-01-01
        (NOW + 301_000, (), "scrape time"),
        (NOW - 8 * 86_400_000, (), "scrape time"),
        (T0, ((EventKind.START, T0 - 9 * 86_400_000),), "event time"),
    ],
)
def test_a_time_outside_the_window_refuses_the_whole_batch(ts: int, events: Any, what: str) -> None:
    with pytest.raises(Refused) as r:
        checked(one(n.M_CG_CPU_USAGE_US, 5.0, ts, events), NOW, RULES)
    assert r.value.reason == "bad_timestamp" and what in r.value.detail


def test_too_many_samples_refuse_the_batch() -> None:
    b = BatchBuilder("n1")
    e = b.entity("sb1", {})
    b.add_many(e, "m", [f'i="{i}"' for i in range(1001)], T0, [1.0] * 1001)
    with pytest.raises(Refused, match="1001 samples"):
        checked(b.build(1, 0, T0), NOW, RULES)


# -- batch --------------------------------------------------------------------------------------
def items(count: int, start: int = 0) -> list[Item]:
    return [Item(record(batch("n1", i, T0 + i, 1.0), i), batch=decode(batch("n1", i, T0 + i, 1.0)))
            for i in range(start, start + count)]  # fmt: skip


def test_batch_closes_by_size_and_by_age_and_refuses_while_the_next_is_full() -> None:
    now = [0.0]
    sink = Sink()
    step = BatchStep(sink, max_samples=6, max_age_s=1.0, clock=lambda: now[0])
    for it in items(3):  # 2 samples each: the third closes the flush
        step.submit(it)
    assert [len(f.items) for f in sink.got] == [3] and sink.got[0].offsets == {("sandmeter.samples.v1", 0): 3}
    step.submit(items(1, 3)[0])
    step.poll()
    assert len(sink.got) == 1  # not old enough
    now[0] = 1.5
    sink.full = True
    step.poll()  # closed, held: the next step is full
    with pytest.raises(MessageRejected):
        step.submit(items(1, 4)[0])
    sink.full = False
    step.poll()
    assert [len(f.items) for f in sink.got] == [3, 1] and not step.pending()


def test_outbox_keeps_order_and_drops_lost_partitions() -> None:
    sink = Sink()
    box: Outbox[int] = Outbox(sink)
    sink.full = True
    box.put(1)
    box.put(2)
    with pytest.raises(MessageRejected):
        box.ready()
    box.drop(lambda m: m == 1)
    sink.full = False
    box.poll()
    assert sink.got == [2]


def test_offsets_are_the_next_to_read_per_partition() -> None:
    its = [Item(record(b"", o, partition=p)) for o, p in [(4, 0), (9, 1), (5, 0)]]
    assert offsets_of(its) == {("sandmeter.samples.v1", 0): 6, ("sandmeter.samples.v1", 1): 10}


# -- account ------------------------------------------------------------------------------------
def account_step(sink: Sink, prod: FakeProducer) -> AccountStep:
    m = ProcessorMetrics(CollectorRegistry())
    return AccountStep(sink, Accountant(), HealthDetector(), dlq(prod), m, lambda: NOW, 3600, 600_000)


def flush_of(raws: list[bytes]) -> Flush:
    its = []
    for i, raw in enumerate(raws):
        b = decode(raw)
        clean, rejected = checked(b, NOW, RULES)
        its.append(Item(record(raw, i, key=b.node.encode()), batch=b, clean=clean, rejected=rejected))
    return Flush(its, offsets_of(its))


def test_account_confines_an_exception_to_its_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    real = Accountant._allocation

    def allocation(self: Accountant, batches: Any, *rest: Any) -> Any:
        if any(b.node == "bad" for b in batches):
            raise RuntimeError("boom")
        return real(self, batches, *rest)

    monkeypatch.setattr(Accountant, "_allocation", allocation)
    sink, prod = Sink(), FakeProducer()
    step = account_step(sink, prod)
    bad = batch("bad", 0, T0 + 10, 7)
    step.submit(flush_of([batch("n1", 0, T0, 100), bad, batch("n1", 1, T0 + 1000, 250)]))
    [rows] = sink.got
    assert isinstance(rows, Rows) and int(rows.accounted.usage["cpu_used_us"].sum()) == 250
    assert [b.node for b in rows.raw] == ["n1", "n1"]
    assert [(v, h["sandmeter-dlq-reason"]) for _, _, v, h in prod.sent] == [(bad, b"processing_error")]
    assert rows.offsets == {("sandmeter.samples.v1", 0): 3}


def test_account_leaves_no_trace_when_the_dead_letter_cannot_be_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Accountant, "_allocation", lambda *a: (_ for _ in ()).throw(RuntimeError("boom")))
    sink, prod = Sink(), FakeProducer()
    step = account_step(sink, prod)
    prod.down = True
    f = flush_of([batch("n1", 0, T0, 100)])
    with pytest.raises(MessageRejected):
        step.submit(f)
    assert not sink.got and step.acct.nodes() == frozenset()  # the state as before the flush


def test_account_plans_a_checkpoint_when_asked_behind_the_rows() -> None:
    sink, prod = Sink(), FakeProducer()
    step = account_step(sink, prod)
    step.submit(flush_of([batch("n1", 0, T0, 100)]))
    step.ask_checkpoint(None)
    assert step.pending()
    step.poll()
    assert [type(m) for m in sink.got] == [Rows, Plan] and not step.pending()
    [cp] = sink.got[1].checkpoints
    assert (cp.offset, cp.state.sandboxes["node"].tolist()) == (1, ["n1"])


# -- write and commit ---------------------------------------------------------------------------
def wait(step: WriteStep, until: Any, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not until() and time.monotonic() < deadline:
        step.poll()
        time.sleep(0.01)


def test_write_refuses_while_busy_retries_failures_and_commits_behind_checkpoints() -> None:
    cons, w = FakeConsumer(), FakeWriter()
    reg = CollectorRegistry()
    commit = CommitStep(cons)
    clock = [0.0]
    step = WriteStep(commit, w, Worker("t"), FakeProducer(), "alerts", ProcessorMetrics(reg), lambda: clock[0])
    acct = Accountant()
    rows = Rows(acct.account([decode(batch("n1", 0, T0, 100))], NOW), (), [], {("t", 0): 1})
    plan = Plan([Checkpoint("t", 0, 1, NOW, acct.export_state())], {("t", 0): 1})
    w.fail = 1
    step.submit(rows)
    with pytest.raises(MessageRejected):
        step.submit(plan)  # one at a time
    wait(step, lambda: step.failed_attempts == 1)
    assert reg.get_sample_value(n.PROCESSOR_WRITE_FAILURES) == 1 and step.pending()
    clock[0] = 10.0  # past the backoff
    wait(step, lambda: not step.pending())
    assert reg.get_sample_value(n.PROCESSOR_WRITE_OUTAGE) == 0
    assert len(w.rows(n.T_USAGE)) == 1 and not cons.commits  # written rows carry no commit
    step.submit(plan)
    wait(step, lambda: not step.pending())
    assert cons.commits == [{("t", 0): 1}] and len(w.saved) == 1


def test_commit_only_follows_checkpoints() -> None:
    cons = FakeConsumer()
    c = CommitStep(cons)
    c.submit(Written({("t", 0): 5}))
    c.submit(Written({("t", 0): 9}, checkpoints=1))
    assert cons.commits == [{("t", 0): 9}]


def test_a_dead_letter_carries_the_record_as_it_arrived() -> None:
    prod = FakeProducer()
    d = dlq(prod)
    rec = record(b"\x00\xffraw", 42, key=None, headers=(("a", b"1"), ("a", b"")))
    d.send(rec, "corrupt", "bad magic " + "x" * 1000)
    [(_, key, value, h)] = prod.sent
    assert (key, value) == (None, b"\x00\xffraw") and h["a"] == b""  # both "a" headers went, in order
    assert h["sandmeter-source"] == b"sandmeter.samples.v1/0/42" and len(h["sandmeter-dlq-detail"] or b"") == 500
    with pytest.raises(ValueError, match="not a dead-letter reason"):
        d.send(rec, "because", "")


def test_a_record_the_client_cannot_send_as_it_is_goes_as_near_as_it_takes() -> None:
    prod = FakeProducer()
    d = dlq(prod)
    d.send(record(None, 1, key=None, headers=(("h", None),)), "empty", "null value (tombstone)")
    prod.max_bytes = 10
    d.send(record(b"y" * 11, 2), "too_large", "11 bytes")
    (_, k1, v1, h1), (_, k2, v2, h2) = prod.sent
    assert (k1, v1, h1["h"], h1["sandmeter-dlq-null"]) == (b"", None, b"", b"h,key")
    assert (k2, v2) == (b"n1", b"") and (h2["sandmeter-dlq-original"] or b"").startswith(b"11 bytes, sha256 ")
    assert d.total == 2  # the stream moved on past both
