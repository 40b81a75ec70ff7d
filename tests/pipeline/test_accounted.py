"""The accountant's one result: what `account` returns equals what its internals compute."""

from __future__ import annotations

import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts import names as n
from contracts.builder import BatchBuilder
from contracts.wire import EventKind, SampleBatch
from pipeline.accounting import Accountant

T0 = 1_800_000_000_000
METRICS = [n.M_CG_CPU_USAGE_US, n.M_CG_MEM_CURRENT, n.M_CG_IO_RBYTES, n.M_SPEC_VCPU_MILLI, n.M_SPEC_MEM_BYTES,
           n.M_NET_RX_BYTES, "kata_hypervisor_netdev", "kata_guest_load", n.M_PROC_THREADS]  # fmt: skip


@st.composite
def streams(draw: st.DrawFn) -> list[SampleBatch]:
    out = []
    sandboxes = draw(st.integers(1, 4))
    for seq in range(draw(st.integers(1, 5))):
        ts = T0 + 1000 * (seq + 1)
        b = BatchBuilder("n1")
        b.add(0, "host_load1", "", ts, 0.5)  # the node's own samples: never accounted
        for i in range(sandboxes):
            e = b.entity(f"sb{i}", {"tenant": f"t{i % 2}"})
            for m in draw(st.lists(st.sampled_from(METRICS), unique=True, min_size=1)):
                sub = 'item="recv_bytes"' if m == "kata_hypervisor_netdev" else ""
                b.add(e, m, sub, ts, float(draw(st.integers(0, 10**6)) * (seq + 1)))
            if seq == 0:
                b.event(e, EventKind.START, T0)
        out.append(b.build(1, seq, ts))
    return out


@settings(max_examples=100, deadline=None)
@given(streams())
def test_the_result_holds_what_the_accounting_computes_from_the_whole_batches(batches: list[SampleBatch]) -> None:
    """`account` hands the internals only the billed samples; every row must be as from the whole."""
    whole, result = Accountant(), Accountant()
    want = whole.process(batches)
    got = result.account(batches, T0 + 10_000)
    pd.testing.assert_frame_equal(
        got.usage.reset_index(drop=True), want.usage.reset_index(drop=True), check_dtype=False
    )
    assert [tuple(r) for r in got.lifecycle.itertuples(index=False)] == [tuple(r) for r in want.lifecycle]
    assert got.health_input == tuple(batches)  # the health detector sees every sample
    assert got.samples == want.samples == sum(len(b) for b in batches)
    assert whole.export_state().series.equals(result.export_state().series)
