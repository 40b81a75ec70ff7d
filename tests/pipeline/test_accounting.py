from __future__ import annotations

import pandas as pd

from contracts import names as n
from contracts.builder import BatchBuilder
from contracts.wire import EventKind, SampleBatch
from pipeline.accounting import Accountant, export_state, import_state, rebuilt
from pipeline.checkpoint import decode_state, encode_state

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


def test_impossible_jump_rejected_not_billed() -> None:
    """Faster than the sandbox's 2 cores (+1 of headroom) can count: rejected before the state
    moves (it used to be clamped, which moved the state to the spike, so every valid sample after
    a transient spike read as an impossible drop)."""
    a = Accountant(max_counter_rate_per_s=1e6)
    r = a.process([batch(0, 1000, 100, events=((EventKind.START, 0),)), batch(1, 2000, 1e12)])
    assert r.rejected is not None and r.rejected["reason"].tolist() == ["too_fast"]
    assert int(r.usage["cpu_used_us"].sum()) == 100
    assert int(a.process([batch(2, 3000, 2100)]).usage["cpu_used_us"].sum()) == 2000  # compared with 100


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


def two_node_batches(seq: int, ts: int) -> list[SampleBatch]:
    out = []
    for node in ("node-1", "node-2"):
        b = BatchBuilder(node)
        for sb in ("sbA", "sbB"):
            e = b.entity(f"{node}-{sb}", {"tenant": "acme", "cri_name": sb})
            b.add(e, n.M_CG_CPU_USAGE_US, "", ts, 1000.0 * seq * (2 if sb == "sbA" else 1))
            b.add(e, n.M_CG_MEM_CURRENT, "", ts, GIB)
            b.add(e, n.M_NET_RX_BYTES, "", ts, 10.0 * seq)
            b.add(e, n.M_SPEC_VCPU_MILLI, "", ts, 1000)
            b.add(e, n.M_SPEC_MEM_BYTES, "", ts, GIB)
            if seq == 0:
                b.event(e, EventKind.START, ts - 100)
        out.append(b.build(1, seq, ts))
    return out


def test_state_moves_between_processes_by_name() -> None:
    first = [b for s in range(3) for b in two_node_batches(s, 1000 * (s + 1))]
    later = [b for s in range(3, 6) for b in two_node_batches(s, 1000 * (s + 1))]
    a = Accountant()
    a.process(first)
    moved = Accountant()
    moved.process([two_node_batches(0, 1)[0]])  # a different interning order than `a`
    moved = rebuilt(a)
    expected = a.process(later).usage.sort_values(["sandbox_id", "end_ms"]).reset_index(drop=True)
    got = moved.process(later).usage.sort_values(["sandbox_id", "end_ms"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(got, expected)
    assert int(expected["cpu_used_us"].sum()) == 3 * 3000 * 2


def test_checkpoint_of_one_node_round_trips_through_its_encoding() -> None:
    a = Accountant()
    a.process([b for s in range(2) for b in two_node_batches(s, 1000 * (s + 1))])
    state = decode_state(encode_state(export_state(a, frozenset({"node-2"}))))
    assert set(state.sandboxes["node"]) == {"node-2"} and set(state.series["node"]) == {"node-2"}
    assert len(state.series) == 2 * 5  # cpu, mem, net and the two spec series of each sandbox
    b = Accountant()
    import_state(b, state)
    assert {s.sandbox_id for s in b.sandboxes.values()} == {"node-2-sbA", "node-2-sbB"}
    assert all(s.vcpu_milli == 1000 and s.start_ms == 900 for s in b.sandboxes.values())


def test_a_checkpoint_written_before_names_were_coded_still_loads() -> None:
    """Checkpoints stored by earlier processors held one string per row (labels as JSON per
    sandbox, node, sandbox, metric and sub-label per series): they load to the same state."""
    import base64
    import io
    import json

    import numpy as np
    import zstandard

    a = Accountant()
    a.process([b for s in range(2) for b in two_node_batches(s, 1000 * (s + 1))])
    now = export_state(a)
    arrays = {f"sb.{c}": now.sandboxes[c].to_numpy().astype(np.int64) for c in now.sandboxes.columns[4:]}
    arrays |= {f"sb.{c}": now.sandboxes[c].to_numpy().astype(str) for c in ("node", "sandbox_id", "tenant")}
    arrays["sb.labels"] = np.array([json.dumps(x, sort_keys=True) for x in now.sandboxes["labels"]])
    arrays |= {f"se.{c}": now.series[c].to_numpy().astype(str) for c in ("node", "sandbox_id", "metric", "sub")}
    arrays |= {"se.ts": now.series["ts"].to_numpy(np.int64), "se.val": now.series["val"].to_numpy(np.float64)}
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    old = base64.b64encode(zstandard.ZstdCompressor().compress(buf.getvalue())).decode()
    for text in (old, encode_state(now)):
        b = Accountant()
        import_state(b, decode_state(text))
        assert {k: (s.tenant, s.labels, s.vcpu_milli, s.start_ms) for k, s in b.sandboxes.items()} == {
            k: (s.tenant, s.labels, s.vcpu_milli, s.start_ms) for k, s in a.sandboxes.items()
        }
        later = two_node_batches(2, 3000)
        pd.testing.assert_frame_equal(rebuilt(a).process(later).usage, b.process(later).usage)


def test_stopped_sandboxes_are_evicted_after_the_lateness_window() -> None:
    a = Accountant()
    a.process(
        [batch(0, 1000, 100, events=((EventKind.START, 500),)), batch(1, 2000, 200, events=((EventKind.STOP, 2000),))]
    )
    assert len(rebuilt(a, evict_before_ms=1500).sandboxes) == 1  # silent only since 2000: kept
    gone = rebuilt(a, evict_before_ms=2001)
    assert len(gone.sandboxes) == 0 and len(gone.series) == 0


def test_a_sandbox_shorter_than_a_scrape_is_allocated_from_its_start_in_the_stop_batch() -> None:
    """The stop handler's batch carries the start again: it may be the first to arrive."""
    a = Accountant()
    t = totals(a, [batch(0, 1300, 40, events=((EventKind.START, 1000), (EventKind.STOP, 1300)))])
    assert t["vcpu_alloc_mcpu_ms"] == 2000 * 300 and t["mem_alloc_byte_ms"] == 2 * GIB * 300
    assert t["cpu_used_us"] == 40
    late_start = a.process([batch(1, 1400, None, events=((EventKind.START, 1000),))])  # the scrape's copy, after
    assert int(late_start.usage["vcpu_alloc_mcpu_ms"].sum()) == 0 and not late_start.lifecycle
