"""Usage rows against the real ClickHouse: deduplication removes replays, never distinct rows.

A stopped sandbox's final batch (its last cgroup reading, stamped when the stop was seen)
and the periodic batch before it (whose kata-monitor reading may carry the same millisecond)
both end at the same `end_ms`. They are different usage; only a replay of one batch is a
duplicate, so the storage key holds the batch, not only the end.
"""

from __future__ import annotations

from typing import Any

import pytest

from contracts import names as n
from contracts.builder import BatchBuilder
from contracts.wire import EventKind, SampleBatch
from pipeline.accounting import Accountant
from pipeline.writer import ClickHouseWriter

GIB = 1 << 30
T = 1_790_000_000_000


def periodic(seq: int, cg_ts: int, km_ts: int, cpu: int, rx: int) -> SampleBatch:
    """One scrape: the cgroup source and kata-monitor stamp their readings separately."""
    b = BatchBuilder("node-1")
    e = b.entity("sb1", {"tenant": "acme"})
    b.add(e, n.M_CG_CPU_USAGE_US, "", cg_ts, cpu)
    b.add(e, n.M_SPEC_VCPU_MILLI, "", cg_ts, 1000)
    b.add(e, n.M_SPEC_MEM_BYTES, "", cg_ts, GIB)
    b.add(e, n.M_NET_RX_BYTES, "", km_ts, rx)
    if seq == 0:
        b.event(e, EventKind.START, T)
    return b.build(1, seq, km_ts)


def final(seq: int, ts: int, cpu: int) -> SampleBatch:
    """The stop handler's batch: the last cgroup reading and the stop, stamped in one ms."""
    b = BatchBuilder("node-1")
    e = b.entity("sb1", {"tenant": "acme"})
    b.add(e, n.M_CG_CPU_USAGE_US, "", ts, cpu)
    b.event(e, EventKind.STOP, ts)
    return b.build(1, seq, ts)


def stored(ch: Any) -> tuple[int, int, int]:
    row = ch.execute("SELECT count(), sum(cpu_used_us), sum(net_rx_bytes) FROM usage_intervals FINAL")[0]
    return int(row[0]), int(row[1]), int(row[2])


@pytest.mark.clickhouse
@pytest.mark.parametrize("one_flush", [True, False], ids=["one-flush", "two-flushes"])
def test_two_batches_ending_in_the_same_ms_are_both_kept(db: tuple[str, Any], one_flush: bool) -> None:
    _, ch = db
    batches = [
        periodic(0, T + 500, T + 500, cpu=10_000, rx=100),
        periodic(1, T + 990, T + 1000, cpu=30_000, rx=300),  # kata-monitor read in the stop's ms
        final(2, T + 1000, cpu=32_000),
    ]
    acct, w = Accountant(), ClickHouseWriter(ch, keep_raw=False)
    results = [acct.account(batches, 0)] if one_flush else [acct.account(batches[:2], 0), acct.account(batches[2:], 0)]
    for r in results:
        w.write(w.prepare(r))
    ends = [int(e) for r in results for e in r.usage["end_ms"]]
    assert ends.count(T + 1000) == 2  # the case at hand: two rows, one end
    rows, cpu, rx = stored(ch)
    assert (rows, cpu, rx) == (3, 32_000, 300)
    for r in results:  # a replay of everything is a duplicate of everything: nothing changes
        w.write(w.prepare(r))
    assert stored(ch) == (3, 32_000, 300)
