"""Properties of the whole chain over generated streams (the real steps; Kafka and ClickHouse faked):
bad records of every kind between valid batches never stop it, cost nothing valid, bill nothing
invalid, and no mix of them bills above what a sandbox can physically use."""

from __future__ import annotations

import random
from collections import Counter

from fakes import NOW, FakeWriter, assign, feed, processor, record
from hypothesis import HealthCheck, given, settings
from poison import SETTINGS, Plan, plans, stream, usable

from contracts import names as n
from pipeline.settings import ProcessorSettings

TP0 = (ProcessorSettings().topic, 0)


def run(plan: Plan, seed: int) -> None:
    s = stream(plan, NOW, "x", random.Random(seed))
    w = FakeWriter()
    p, cons, prod = processor(w, checkpoint_interval_s=3600, **SETTINGS)
    assign(p, cons, [TP0])
    recs = [record(r.value, i, key=r.key, headers=tuple(r.headers)) for i, r in enumerate(s.records)]
    try:
        assert feed(p, cons, recs), "the chain did not get everything written"
    finally:
        p.close()
    # the dead letters are exactly the bad records, as they arrived, with their reasons
    dead = [r for r in s.records if r.is_dead]
    got = prod.dead()
    assert [(k, v) for k, v, _ in got] == [(r.key, r.value) for r in dead]
    for (_, _, h), r in zip(got, dead, strict=True):
        assert h["sandmeter-dlq-reason"] in {x.encode() for x in n.DLQ_REASONS}
        assert r.dead is None or h["sandmeter-dlq-reason"] == r.dead.encode(), (r.dead, h)
    # the rejected samples are exactly the bad values, kept with their reasons
    late = w.rows(n.T_LATE)
    want = Counter(reason for r in s.records for reason in r.rejected)
    assert Counter(late["reason"].tolist() if len(late) else []) == want
    # usage equals what the valid batches alone give, and stays within the physical bounds
    u = w.rows(n.T_USAGE).groupby("sandbox_id")[["cpu_used_us", "io_read_bytes", "vcpu_alloc_mcpu_ms"]].sum()
    for sandbox, t in s.truth.items():
        got_cpu, got_io, got_alloc = (int(x) for x in u.loc[sandbox])
        assert (got_cpu, got_io, got_alloc) == (t["cpu_used_us"], t["io_read_bytes"], t["vcpu_alloc_mcpu_ms"])
        assert got_cpu <= t["vcpu"] * t["elapsed_ms"]  # CPU-us <= millicores x ms
        assert got_alloc <= t["vcpu"] * t["elapsed_ms"]
    assert p.total_batches == sum(1 for r in s.records if not r.is_dead)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(plans().filter(usable))
def test_bad_records_never_stop_the_chain_nor_change_what_valid_ones_bill(plan: Plan) -> None:
    run(plan, seed=len(plan.bad) * 7919 + len(plan.gaps))
