from __future__ import annotations

from pipeline.accounting import Accountant
from sandmeter import names as n
from sandmeter.builder import BatchBuilder
from sandmeter.wire import EventKind, SampleBatch

GIB = 1 << 30


def batch(
    seq: int, ts: int, cpu: float | None, mem: float = GIB, events: tuple[tuple[EventKind, int], ...] = ()
) -> SampleBatch:
    b = BatchBuilder("node-1")
    e = b.entity("sb1", {"tenant": "acme"})
    if cpu is not None:
        b.add(e, n.M_CG_CPU_USAGE_US, "", ts, cpu)
        b.add(e, n.M_CG_MEM_CURRENT, "", ts, mem)
        b.add(e, n.M_SPEC_VCPU_MILLI, "", ts, 2000)
        b.add(e, n.M_SPEC_MEM_BYTES, "", ts, 2 * GIB)
    for kind, t in events:
        b.event(e, kind, t)
    return b.build(1, seq, ts)


def totals(a: Accountant, batches: list[SampleBatch]) -> dict[str, int]:
    u = a.process(batches).usage
    return {c: int(u[c].sum()) for c in ("cpu_used_us", "vcpu_alloc_mcpu_ms", "mem_used_byte_ms", "mem_alloc_byte_ms")}


def test_counter_deltas_reset_and_allocation() -> None:
    a = Accountant()
    t = totals(
        a,
        [
            batch(0, 1000, 100, events=((EventKind.START, 500),)),
            batch(1, 2000, 400),
            batch(2, 3000, 50),  # VM restart: counter began again from 0
            batch(3, 3500, 80, events=((EventKind.STOP, 3500),)),
        ],
    )
    assert t["cpu_used_us"] == 100 + 300 + 50 + 30
    assert t["vcpu_alloc_mcpu_ms"] == 2000 * (3500 - 500)
    assert t["mem_alloc_byte_ms"] == 2 * GIB * 3000
    assert t["mem_used_byte_ms"] == GIB * 3000


def test_same_result_across_flush_boundaries() -> None:
    seq = [batch(0, 1000, 100, events=((EventKind.START, 0),)), batch(1, 2000, 300), batch(2, 3000, 900)]
    one = totals(Accountant(), seq)
    a = Accountant()
    parts = [totals(a, [b]) for b in seq]
    assert one == {k: sum(p[k] for p in parts) for k in one}


def test_replayed_batch_counts_once_and_old_goes_late() -> None:
    a = Accountant()
    first = totals(a, [batch(0, 1000, 100, events=((EventKind.START, 0),)), batch(1, 2000, 300)])
    r = a.process([batch(1, 2000, 300)])
    assert r.duplicates == 4 and int(r.usage["cpu_used_us"].sum()) == 0
    r = a.process([batch(9, 1500, 200)])
    assert r.late is not None and len(r.late) == 4
    assert first["cpu_used_us"] == 300


def test_impossible_jump_clamped_not_billed() -> None:
    a = Accountant(max_counter_rate_per_s=1e6)
    r = a.process([batch(0, 1000, 100, events=((EventKind.START, 0),)), batch(1, 2000, 1e12)])
    assert r.clamped == 1 and int(r.usage["cpu_used_us"].sum()) == 100


def test_snapshot_restore() -> None:
    a = Accountant()
    a.process([batch(0, 1000, 100, events=((EventKind.START, 0),))])
    snap = a.snapshot()
    a.process([batch(1, 2000, 300)])
    a.restore(snap)
    assert int(a.process([batch(1, 2000, 300)]).usage["cpu_used_us"].sum()) == 200


def test_allocation_waits_for_spec() -> None:
    a = Accountant()
    t = totals(a, [batch(0, 1000, None, events=((EventKind.START, 0),)), batch(1, 2000, 10)])
    assert t["vcpu_alloc_mcpu_ms"] == 2000 * 2000
