"""The billing API on the real ClickHouse: usage, cost, invoices, exports, keys, isolation, bad input."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from billing.app import create_app
from billing.keys import OPERATOR, TENANT, create_key, revoke_key
from billing.plans import load_book
from billing.settings import ApiSettings
from billing.timeparse import format_ms, parse_ms
from pipeline.accounted import Accounted
from pipeline.accounting import USAGE_COLUMNS
from pipeline.rollup import DirtyBuckets
from pipeline.writer import ClickHouseWriter

PLANS = Path(__file__).resolve().parents[1] / "fixtures" / "plans"
OCT = parse_ms("2026-10-01T00:00:00Z", "t")
NOV = parse_ms("2026-11-01T00:00:00Z", "t")
DEC = parse_ms("2026-12-01T00:00:00Z", "t")
HOUR = 3_600_000


def test_timestamps_round_trip_to_the_millisecond() -> None:
    assert parse_ms("2026-11-27T10:00:00.123Z", "from") == 1795773600123
    assert format_ms(1795773600123) == "2026-11-27T10:00:00.123Z"


def interval(tenant: str, sandbox: str, start: int, end: int, cpu_us: int, mcpu: int = 1000) -> dict[str, Any]:
    return {
        "tenant": tenant, "sandbox_id": sandbox, "node": "n1", "start_ms": start, "end_ms": end, "cpu_used_us": cpu_us,
        "vcpu_alloc_mcpu_ms": mcpu * (end - start), "mem_used_byte_ms": 0,
        "mem_alloc_byte_ms": (1 << 30) * (end - start),
        "io_read_bytes": 250_000_000, "io_write_bytes": 250_000_000, "net_rx_bytes": 1_000_000, "net_tx_bytes": 0,
        "batch_id": f"{sandbox}/{end}",
    }  # fmt: skip


@dataclass
class Env:
    client: TestClient
    ch: Any
    keys: dict[str, str]
    now: list[int]
    writer: ClickHouseWriter

    def get(self, path: str, who: str = "operator", **params: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.keys[who]}"} if who else {}
        return self.client.get(path, params=params, headers=headers)

    def add(self, rows: list[dict[str, Any]]) -> None:
        df = pd.DataFrame(rows, columns=list(USAGE_COLUMNS))
        dirty = DirtyBuckets()
        self.writer.write(self.writer.prepare(Accounted(usage=df)))
        dirty.note(df)
        self.writer.roll(dirty.take())


@pytest.fixture
def env(db: tuple[str, Any]) -> Iterator[Env]:
    _, ch = db
    writer = ClickHouseWriter(ch, keep_raw=False)
    keys = {
        "operator": create_key(ch, OPERATOR)[1],
        "acme": create_key(ch, TENANT, "acme")[1],
        "other": create_key(ch, TENANT, "other")[1],
    }
    now = [NOV + 10 * HOUR]
    settings = ApiSettings(max_rows=1000, key_cache_s=0, invoice_grace_s=3600)
    app = create_app(settings, lambda: ch, book=load_book(PLANS), clock_ms=lambda: now[0])
    e = Env(TestClient(app), ch, keys, now, writer)
    # acme: two 1 s intervals at 00:00:01 and 00:00:02 on Nov 1 (one written twice, as a replay would)
    rows = [interval("acme", "s1", NOV, NOV + 1000, 1500), interval("acme", "s1", NOV + 1000, NOV + 2000, 2501)]
    e.add(rows)
    e.add(rows[:1])
    e.add([interval("other", "s2", NOV, NOV + 1000, 7)])
    with e.client:
        yield e


@pytest.mark.clickhouse
def test_usage_dedups_is_exact_and_exports(env: Env) -> None:
    params = {"from": format_ms(NOV), "to": format_ms(NOV + 2000), "granularity": "second"}
    r = env.get("/v1/tenants/acme/usage", **params)
    assert r.status_code == 200, r.text
    assert r.json()["totals"]["cpu_used_ms"] == "4.001"
    assert [s["start"] for s in r.json()["series"]] == [format_ms(NOV), format_ms(NOV + 1000)]
    csv = env.get("/v1/tenants/acme/usage", **params, format="csv")
    assert csv.headers["content-type"].startswith("text/csv")
    assert pd.read_csv(io.StringIO(csv.text))["cpu_used_ms"].tolist() == [1.5, 2.501]
    pq = env.get("/v1/tenants/acme/usage", **params, format="parquet")
    assert pd.read_parquet(io.BytesIO(pq.content))["cpu_used_ms"].tolist() == ["1.5", "2.501"]
    # an hour-aligned month range reads the hour rollup and gives the same total
    month = env.get("/v1/tenants/acme/usage", **{"from": format_ms(NOV), "to": format_ms(DEC), "granularity": "day"})
    assert month.json()["totals"]["cpu_used_ms"] == "4.001"


@pytest.mark.clickhouse
def test_cost_is_rated_by_hand(env: Env) -> None:
    r = env.get("/v1/tenants/acme/cost", **{"from": format_ms(NOV), "to": format_ms(DEC)})
    assert r.status_code == 200, r.text
    by = {ln["metric"]: ln for ln in r.json()["lines"]}
    # vcpu 2,000 vCPU-ms all inside the 60,000 free; cpu 4.001 ms x 0.000001 -> 0.00;
    # memory 2,000 GiB-ms x 0.0000003 -> 0.00; IO 2 x 0.5 GB = 1 GB x 0.02 = 0.02; net 0.002 GB x 0.09 -> 0.00
    assert by["vcpu_alloc_ms"]["quantity"] == "2000" and by["vcpu_alloc_ms"]["amount"] == "0.00"
    assert by["io_gb"]["quantity"] == "1" and by["io_gb"]["amount"] == "0.02"
    assert r.json()["total"] == "0.02" and r.json()["currency"] == "USD"


@pytest.mark.clickhouse
def test_invoice_draft_then_final_frozen_across_gets_and_restarts_with_late_usage_adjusted(env: Env) -> None:
    draft = env.get("/v1/tenants/acme/invoices/2026-11")
    assert draft.headers["x-invoice-status"] == "draft" and draft.json()["status"] == "draft"
    body = draft.json()
    assert body["subtotal"] == "0.02"
    mc = [a for a in body["adjustments"] if a["kind"] == "minimum_commitment"]
    assert mc == [{"kind": "minimum_commitment", "label": "minimum commitment 5.00 USD", "amount": "4.98"}]
    assert body["total"] == "5.00"

    env.now[0] = DEC + HOUR - 1  # still inside the grace period
    assert env.get("/v1/tenants/acme/invoices/2026-11").json()["status"] == "draft"
    env.now[0] = DEC + HOUR
    first = env.get("/v1/tenants/acme/invoices/2026-11")
    assert first.json()["status"] == "final" and first.json()["finalized_at"] == format_ms(DEC + HOUR)
    env.now[0] += 5000
    again = env.get("/v1/tenants/acme/invoices/2026-11")
    assert again.content == first.content  # frozen, byte for byte

    # usage for November arrives after the invoice was finalized: 10 more GB of IO
    late = interval("acme", "s9", NOV + 5 * HOUR, NOV + 5 * HOUR + 1000, 0)
    late.update(io_read_bytes=10_000_000_000, io_write_bytes=0)
    env.add([late])
    assert env.get("/v1/tenants/acme/invoices/2026-11").content == first.content
    restarted = create_app(
        ApiSettings(key_cache_s=0), lambda: env.ch, book=load_book(PLANS), clock_ms=lambda: DEC + 2 * HOUR
    )
    with TestClient(restarted) as c2:
        r = c2.get("/v1/tenants/acme/invoices/2026-11", headers={"Authorization": f"Bearer {env.keys['acme']}"})
        assert r.content == first.content  # and across a restart of the API
    dec = env.get("/v1/tenants/acme/invoices/2026-12").json()
    [adj] = [a for a in dec["adjustments"] if a["kind"] == "late_usage"]
    assert adj["period"] == "2026-11" and adj["quantities"]["io_gb"] == "10"
    assert adj["amount"] == "0.20"  # 11 GB now at 0.02 = 0.22, minus the 0.02 booked
    csv = env.get("/v1/tenants/acme/invoices/2026-12", format="csv").text
    assert "late_usage,2026-11,,,,0.20" in csv


@pytest.mark.clickhouse
def test_every_route_is_tenant_isolated(env: Env) -> None:
    """Route by route, from the app's own route table: a new route cannot skip the check."""
    params = {"from": format_ms(NOV), "to": format_ms(DEC), "granularity": "day"}
    v1 = [r for r in env.client.app.routes if getattr(r, "path", "").startswith("/v1/")]  # type: ignore[attr-defined]
    assert len(v1) >= 6
    for route in v1:
        path = route.path.replace("{tenant}", "acme").replace("{period}", "2026-11").replace("{function}", "fn")
        assert env.get(path, "", **params).status_code == 401, route.path  # no key
        if "{tenant}" in route.path:
            assert env.get(path, "acme", **params).status_code not in (401, 403), route.path
            denied = env.get(path, "other", **params)
        else:  # operator-only routes
            assert env.get(path, "operator", **params).status_code == 200, route.path
            denied = env.get(path, "acme", **params)
        assert denied.status_code == 403 and denied.json()["code"] == "forbidden", route.path


@pytest.mark.clickhouse
def test_a_revoked_key_is_refused(env: Env) -> None:
    key_id = env.keys["acme"].split("_")[1]
    assert revoke_key(env.ch, key_id)
    r = env.get("/v1/tenants/acme/health", "acme")
    assert r.status_code == 401 and r.json()["code"] == "unauthenticated"
    bad = env.client.get("/v1/tenants/acme/health", headers={"Authorization": "Bearer smk_nope_nope"})
    assert bad.status_code == 401


D1, D2 = "2026-11-01T00:00:00Z", "2026-11-02T00:00:00Z"


@pytest.mark.clickhouse
@pytest.mark.parametrize(
    ("path", "params", "code"),
    [
        ("/v1/tenants/acme/usage", {"from": D2, "to": D1}, "bad_range"),
        ("/v1/tenants/acme/usage", {"from": "yesterday", "to": D1}, "bad_timestamp"),
        ("/v1/tenants/acme/usage", {"from": "2026-11-01T00:00:00", "to": D2}, "bad_timestamp"),
        ("/v1/tenants/acme/usage", {"from": D1, "to": D2, "metric": "gpu"}, "unknown_metric"),
        (
            "/v1/tenants/acme/usage",
            {"from": D1, "to": "2026-12-01T00:00:00Z", "granularity": "second"},
            "too_many_rows",
        ),
        ("/v1/tenants/acme/usage", {"from": D1, "to": D2, "granularity": "week"}, "bad_granularity"),
        ("/v1/tenants/acme/usage", {"from": D1, "to": D2, "group_by": "node"}, "bad_group_by"),
        ("/v1/tenants/acme/usage", {"from": D1, "to": D2, "format": "xml"}, "bad_request"),
        ("/v1/tenants/ACME';DROP/usage", {"from": D1, "to": D2}, "bad_tenant"),
        ("/v1/tenants/acme/usage", {"to": D2}, "bad_request"),
        ("/v1/tenants/acme/cost", {"from": D2, "to": D1}, "bad_range"),
        ("/v1/tenants/acme/cost", {"from": "2026-13-01T00:00:00Z", "to": D2}, "bad_timestamp"),
        ("/v1/tenants/acme/invoices/2026-13", {}, "bad_period"),
        ("/v1/tenants/acme/invoices/26-11", {}, "bad_period"),
        ("/v1/tenants/acme/invoices/2030-01", {}, "period_in_future"),
        ("/v1/tenants/acme/invoices/2026-11", {"format": "pdf"}, "bad_request"),
        ("/v1/tenants/acme/health", {"state": "sick"}, "bad_state"),
        ("/v1/health/sandboxes", {"state": "sick"}, "bad_state"),
        ("/v1/tenants", {"from": D2}, "bad_request"),
        ("/v1/scale/acme/a$b", {}, "bad_function"),
        ("/v1/scale/ACME/fn", {}, "bad_tenant"),
    ],
)
def test_bad_input_is_4xx_with_code(env: Env, path: str, params: dict[str, str], code: str) -> None:
    r = env.get(path, **params)
    assert 400 <= r.status_code < 500, r.text
    assert r.json()["code"] == code and r.json()["message"]


@pytest.mark.clickhouse
def test_service_endpoints(env: Env) -> None:
    assert env.client.get("/healthz").text == "ok"
    assert env.client.get("/readyz").status_code == 200
    env.get("/v1/tenants/acme/usage", **{"from": "x", "to": "y"})
    assert 'route="/v1/tenants/{tenant}/usage",status="400"' in env.client.get("/metrics").text


def test_readyz_is_503_when_clickhouse_is_away() -> None:
    class Down:
        def execute(self, *a: Any, **k: Any) -> Any:
            raise ConnectionError("refused")

    app = create_app(ApiSettings(), lambda: Down(), book=load_book(PLANS))
    with TestClient(app) as c:
        r = c.get("/readyz")
    assert r.status_code == 503 and r.json()["code"] == "clickhouse_unreachable"


def test_a_bad_plan_file_stops_the_start_up(tmp_path: Path) -> None:
    import shutil

    from billing.plans import PlanError

    shutil.copytree(PLANS, tmp_path / "plans")
    f = tmp_path / "plans" / "standard-v2.toml"
    f.write_text(f.read_text().replace('price = "0.0000018"', 'price = "-1"'))
    with pytest.raises(PlanError, match=r"standard-v2.toml:8: lines\[0\].price"):
        create_app(ApiSettings(plans_dir=tmp_path / "plans"), lambda: None)


_ = np  # numpy is imported for pandas' parquet round trip of numbers as strings
