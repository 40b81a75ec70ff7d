"""The API over what the real processor wrote (the `fault_run` fixture): the cost and the
invoice of each tenant equal Decimal totals computed by hand from the simulator's truth."""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from billing.app import create_app
from billing.invoices import Period
from billing.keys import OPERATOR, TENANT, create_key
from billing.plans import load_book
from billing.settings import ApiSettings
from billing.timeparse import format_ms

pytestmark = pytest.mark.e2e

# priced on the quantities the pipeline meters exactly (used CPU and IO bytes, from cgroup
# counters read one last time at each stop). Allocation is within 10 ms of each lifetime (the
# exactly-once test); network comes from kata-monitor, which forgets a sandbox at its stop,
# so bytes sent after the last scrape are unobservable: checked here as a bound, not priced.
PLAN = """
id = "exact"
version = 1
effective_from = "2026-01-01T00:00:00Z"
currency = "USD"

[[lines]]
metric = "cpu_used_ms"
price = "0.0000137"

[[lines]]
metric = "io_gb"
model = "graduated"
free = "0.25"
tiers = [ { up_to = "1", price = "0.731" }, { price = "0.377" } ]
"""
CENT = Decimal("0.01")


def by_hand(t: dict[str, int]) -> tuple[Decimal, Decimal]:
    """The two line amounts, computed here without the rating code."""
    cpu = (Decimal(t["cpu_used_us"]) / 1000 * Decimal("0.0000137")).quantize(CENT, ROUND_HALF_EVEN)
    io_q = max(Decimal(t["io_read_bytes"] + t["io_write_bytes"]) / Decimal(10**9) - Decimal("0.25"), Decimal(0))
    io = (min(io_q, Decimal(1)) * Decimal("0.731") + max(io_q - 1, Decimal(0)) * Decimal("0.377")).quantize(
        CENT, ROUND_HALF_EVEN
    )
    return cpu, io


def test_cost_and_invoice_equal_hand_computed_totals_from_ground_truth(fault_run: Any, tmp_path: Path) -> None:
    (tmp_path / "exact-v1.toml").write_text(PLAN)
    (tmp_path / "assignments.toml").write_text('default = "exact"\n')
    ch = fault_run.ch
    op = create_key(ch, OPERATOR)[1]
    app = create_app(ApiSettings(key_cache_s=0), lambda: ch, book=load_book(tmp_path))
    period = Period.parse(format_ms(fault_run.from_ms)[:7])
    if fault_run.to_ms >= period.end_ms:  # the ~2 min run straddled a month's end: two invoices
        pytest.skip("the run crossed a month boundary; its usage is split over two invoices")
    with TestClient(app) as c:
        for tenant, truth in fault_run.truth["tenants"].items():
            cpu, io = by_hand(truth)
            expected = cpu + io
            key = create_key(ch, TENANT, tenant)[1]
            h = {"Authorization": f"Bearer {key}"}
            r = c.get(f"/v1/tenants/{tenant}/cost", headers=h,
                      params={"from": format_ms(period.start_ms), "to": format_ms(period.end_ms)})  # fmt: skip
            assert r.status_code == 200, r.text
            amounts = {ln["metric"]: Decimal(ln["amount"]) for ln in r.json()["lines"]}
            assert amounts == {"cpu_used_ms": cpu, "io_gb": io}, tenant
            assert Decimal(r.json()["total"]) == expected
            inv = c.get(f"/v1/tenants/{tenant}/invoices/{period}", headers=h).json()
            assert inv["status"] == "draft" and Decimal(inv["total"]) == expected, (tenant, inv["total"], expected)
            assert Decimal(inv["quantities"]["cpu_used_ms"]) == Decimal(truth["cpu_used_us"]) / 1000
            net_truth = Decimal(truth["net_rx_bytes"] + truth["net_tx_bytes"]) / Decimal(10**9)
            stops = sum(1 for sb in fault_run.truth["sandboxes"] if sb["tenant"] == tenant)
            # never over-billed; at most two 1 s scrape intervals (2,200 B/ms) lost per stopped sandbox
            assert 0 <= net_truth - Decimal(inv["quantities"]["net_gb"]) <= Decimal(2 * 2200 * 1000 * stops) / 10**9
            print(f"{tenant}: cpu {cpu} + io {io} = {expected} USD, as invoiced")
            assert expected > Decimal("0.10")  # amounts large enough that an error shows
        health = c.get("/v1/health/sandboxes", headers={"Authorization": f"Bearer {op}"}, params={"state": "all"})
        kinds = {i["kind"] for i in health.json()["incidents"]}
        assert {"qemu_hang", "io_stall"} <= kinds
