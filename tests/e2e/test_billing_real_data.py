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
from billing.timeparse import format_ms
from sandmeter.settings import ApiSettings

pytestmark = pytest.mark.e2e

# priced on the quantities the pipeline meters exactly (used CPU, IO and network bytes); the
# allocation lines are checked against lifetimes, within 10 ms each, by the exactly-once test
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

[[lines]]
metric = "net_gb"
model = "volume"
tiers = [ { up_to = "0.5", price = "0.09" }, { price = "0.0613" } ]
"""
CENT = Decimal("0.01")


def by_hand(t: dict[str, int]) -> tuple[Decimal, Decimal, Decimal]:
    """The three line amounts, computed here without the rating code."""
    cpu = (Decimal(t["cpu_used_us"]) / 1000 * Decimal("0.0000137")).quantize(CENT, ROUND_HALF_EVEN)
    io_q = max(Decimal(t["io_read_bytes"] + t["io_write_bytes"]) / Decimal(10**9) - Decimal("0.25"), Decimal(0))
    io = (min(io_q, Decimal(1)) * Decimal("0.731") + max(io_q - 1, Decimal(0)) * Decimal("0.377")).quantize(
        CENT, ROUND_HALF_EVEN
    )
    net_q = Decimal(t["net_rx_bytes"] + t["net_tx_bytes"]) / Decimal(10**9)
    net = (net_q * (Decimal("0.09") if net_q <= Decimal("0.5") else Decimal("0.0613"))).quantize(CENT, ROUND_HALF_EVEN)
    return cpu, io, net


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
            cpu, io, net = by_hand(truth)
            expected = cpu + io + net
            key = create_key(ch, TENANT, tenant)[1]
            h = {"Authorization": f"Bearer {key}"}
            r = c.get(f"/v1/tenants/{tenant}/cost", headers=h,
                      params={"from": format_ms(period.start_ms), "to": format_ms(period.end_ms)})  # fmt: skip
            assert r.status_code == 200, r.text
            amounts = {ln["metric"]: Decimal(ln["amount"]) for ln in r.json()["lines"]}
            assert amounts == {"cpu_used_ms": cpu, "io_gb": io, "net_gb": net}, tenant
            assert Decimal(r.json()["total"]) == expected
            inv = c.get(f"/v1/tenants/{tenant}/invoices/{period}", headers=h).json()
            assert inv["status"] == "draft" and Decimal(inv["total"]) == expected, (tenant, inv["total"], expected)
            assert Decimal(inv["quantities"]["cpu_used_ms"]) == Decimal(truth["cpu_used_us"]) / 1000
            print(f"{tenant}: cpu {cpu} + io {io} + net {net} = {expected} USD, as invoiced")
            assert expected > Decimal("0.10")  # amounts large enough that an error shows
        health = c.get("/v1/health/sandboxes", headers={"Authorization": f"Bearer {op}"}, params={"state": "all"})
        kinds = {i["kind"] for i in health.json()["incidents"]}
        assert {"qemu_hang", "io_stall"} <= kinds
