"""End to end through every real component: simulator -> collectors -> Tansu -> processor
-> ClickHouse 18.16 -> billing API over HTTP."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from collectors.sim.spec import FleetSpec
from sandmeter.demo import run_pipeline
from sandmeter.stack import Stack


@pytest.mark.e2e
def test_per_tenant_totals_match_ground_truth(stack: Stack, tmp_path: Path) -> None:
    spec = FleetSpec(nodes=3, sandboxes=12, tenants=3, churn_per_min=12, reset_per_min=0, seed=11)
    res = run_pipeline(stack, 15, spec, tmp_path, interval_s=1.0)
    truth = res.truth["tenants"]
    assert res.dlq == 0 and res.batches_sent > 30
    assert set(res.api_totals) == set(truth)
    for tenant, t in truth.items():
        api = res.api_totals[tenant]
        # counters: exact to the microsecond, through churn (final sample at each stop)
        assert api["cpu_used_ms"] == Decimal(t["cpu_used_us"]) / 1000, tenant
        assert api["io_read_bytes"] == t["io_read_bytes"], tenant
        # network comes from kata-monitor, gone at stop: what flowed after the last scrape that
        # saw the sandbox is unobservable, never over-billed. A late scrape slips by up to one
        # more interval (run_agent never bursts), so allow two 1 s intervals at 1500 B/ms
        stops = sum(1 for sb in res.truth["sandboxes"] if sb["tenant"] == tenant)
        assert 0 <= t["net_rx_bytes"] - api["net_rx_bytes"] <= 1500 * 2 * 1000 * stops, tenant
        # allocation and the memory integral run to when a 100 ms directory poll sees the stop,
        # which lags the true stop by up to a poll plus scheduling on a loaded 2-core CI machine
        # (1.02% seen); clipping at the stop event is issue 4's job
        alloc, want = api["vcpu_alloc_ms"], Decimal(t["vcpu_alloc_mcpu_ms"]) / 1000
        assert abs(alloc - want) <= want * Decimal("0.03"), (tenant, alloc, want)
        mem, want_mem = api["mem_used_byte_ms"], Decimal(t["mem_used_byte_ms"])
        assert abs(mem - want_mem) <= want_mem * Decimal("0.03"), (tenant, mem, want_mem)
    assert all(p.exists() for p in res.dashboards)
    assert res.wire_bytes / res.samples < 16  # compact: well under the 18 raw bytes/sample
