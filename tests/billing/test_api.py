"""The billing API on the real ClickHouse: usage, cost, exports, keys, isolation, bad input."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from billing_seed import interval, write_usage
from fastapi import FastAPI
from fastapi.testclient import TestClient

from billing.app import create_app
from billing.keys import OPERATOR, TENANT, create_key, revoke_key
from billing.plans import load_book
from billing.settings import ApiSettings
from billing.timeparse import format_ms, parse_ms
from contracts.clickhouse import tables
from pipeline.accounted import Accounted
from pipeline.accounting import USAGE_COLUMNS
from pipeline.health import HealthEvent
from pipeline.writer import ClickHouseWriter

PLANS = Path(__file__).resolve().parents[1] / "fixtures" / "plans"
OCT = parse_ms("2026-10-01T00:00:00Z")
NOV = parse_ms("2026-11-01T00:00:00Z")
DEC = parse_ms("2026-12-01T00:00:00Z")
HOUR = 3_600_000
PROBLEM = "application/problem+json"


@dataclass
class Env:
    app: FastAPI
    client: TestClient
    ch: Any
    keys: dict[str, str]
    now: list[int]
    writer: ClickHouseWriter

    def get(self, path: str, who: str = "operator", **params: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.keys[who]}"} if who else {}
        return self.client.get(path, params=params, headers=headers)

    def add(self, rows: list[dict[str, Any]]) -> None:
        write_usage(self.ch, rows)


def make_env(ch: Any, **settings: Any) -> Env:
    writer = ClickHouseWriter(ch, keep_raw=False)
    keys = {
        "operator": create_key(ch, OPERATOR)[1],
        "acme": create_key(ch, TENANT, "acme")[1],
        "other": create_key(ch, TENANT, "other")[1],
    }
    now = [NOV + 10 * HOUR]
    s = ApiSettings(**{"max_rows": 1000, "key_cache_s": 0, "invoice_grace_s": 3600, **settings})
    app = create_app(s, lambda: ch, book=load_book(PLANS), clock_ms=lambda: now[0])
    e = Env(app, TestClient(app), ch, keys, now, writer)
    # acme: two 1 s intervals at 00:00:01 and 00:00:02 on Nov 1 (one written twice, as a replay would)
    rows = [interval("acme", "s1", NOV, NOV + 1000, 1500), interval("acme", "s1", NOV + 1000, NOV + 2000, 2501)]
    e.add(rows)
    e.add(rows[:1])
    e.add([interval("other", "s2", NOV, NOV + 1000, 7)])
    return e


@pytest.fixture
def env(db: tuple[str, Any]) -> Iterator[Env]:
    e = make_env(db[1])
    with e.client:
        yield e


@pytest.mark.clickhouse
def test_usage_dedups_is_exact_and_exports_typed_columns(env: Env) -> None:
    params = {"from": format_ms(NOV), "to": format_ms(NOV + 2000), "granularity": "second"}
    r = env.get("/v1/tenants/acme/usage", **params)
    assert r.status_code == 200, r.text
    assert r.json()["totals"]["cpu_used_ms"] == "4.001" and r.json()["next_cursor"] is None
    assert [s["start"] for s in r.json()["series"]] == [format_ms(NOV), format_ms(NOV + 1000)]
    csv = env.get("/v1/tenants/acme/usage", **params, format="csv")
    assert csv.headers["content-type"].startswith("text/csv")
    assert csv.headers["content-disposition"] == 'attachment; filename="usage-acme.csv"'
    assert pd.read_csv(io.StringIO(csv.text))["cpu_used_ms"].tolist() == [1.5, 2.501]
    pqt = pq.read_table(io.BytesIO(env.get("/v1/tenants/acme/usage", **params, format="parquet").content))
    assert pqt.schema.field("start").type == pa.timestamp("ms", tz="UTC")
    assert pqt.schema.field("cpu_used_ms").type == pa.decimal128(38, 3)
    assert pqt.schema.field("io_read_bytes").type == pa.decimal128(38, 0)
    assert [str(v) for v in pqt.column("cpu_used_ms").to_pylist()] == ["1.500", "2.501"]
    assert pqt.column("start").to_pylist()[1].isoformat() == "2026-11-01T00:00:01+00:00"
    # an hour-aligned month range reads the hour rollup and gives the same total
    month = env.get("/v1/tenants/acme/usage", **{"from": format_ms(NOV), "to": format_ms(DEC), "granularity": "day"})
    assert month.json()["totals"]["cpu_used_ms"] == "4.001"


@pytest.mark.clickhouse
def test_an_empty_export_still_has_its_header_and_schema(env: Env) -> None:
    params = {"from": format_ms(OCT), "to": format_ms(OCT + HOUR), "metric": ["cpu_used_ms", "net_tx_bytes"]}
    csv = env.get("/v1/tenants/acme/usage", **params, format="csv", group_by="sandbox")
    assert csv.status_code == 200 and csv.text == "start,sandbox_id,cpu_used_ms,net_tx_bytes\n"
    table = pq.read_table(io.BytesIO(env.get("/v1/tenants/acme/usage", **params, format="parquet").content))
    assert table.num_rows == 0 and table.schema.names == ["start", "cpu_used_ms", "net_tx_bytes"]
    assert table.schema.field("start").type == pa.timestamp("ms", tz="UTC")


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
def test_every_route_is_tenant_isolated(env: Env) -> None:
    """Route by route, from the app's own spec (built from its route table): a new route cannot skip it."""
    params = {"from": format_ms(NOV), "to": format_ms(DEC), "granularity": "day"}
    v1 = [p for p in env.app.openapi()["paths"] if p.startswith("/v1/")]
    assert len(v1) >= 8
    for template in v1:
        path = template.replace("{tenant}", "acme").replace("{period}", "2026-11").replace("{function}", "fn")
        anonymous = env.get(path, "", **params)
        assert anonymous.status_code == 401 and anonymous.headers["www-authenticate"].startswith("Bearer"), path
        if "{tenant}" in template:
            assert env.get(path, "acme", **params).status_code not in (401, 403), template
            denied = env.get(path, "other", **params)
        else:  # operator-only routes
            assert env.get(path, "operator", **params).status_code == 200, template
            denied = env.get(path, "acme", **params)
        assert denied.status_code == 403 and denied.json()["code"] == "forbidden", template
        assert denied.headers["content-type"] == PROBLEM


@pytest.mark.clickhouse
def test_a_host_disk_named_like_a_tenant_is_never_that_tenants_incident(env: Env) -> None:
    """Two host disks of n1 stall in the same ms, one named "acme"; acme's sandbox s1 stalls too.
    acme sees only its sandbox's incident; the operator sees all three, each disk in `disk`."""
    opened = NOV + HOUR
    events = [
        HealthEvent("host_disk_stall", "open", "n1", "", "", opened + 60_000, opened, {"disk": d}, d)
        for d in ("acme", "nvme1n1")
    ] + [HealthEvent("io_stall", "open", "n1", "s1", "acme", opened + 60_000, opened, {})]
    env.writer.write(env.writer.prepare(Accounted(usage=pd.DataFrame(columns=list(USAGE_COLUMNS))), events=events))
    mine = env.get("/v1/tenants/acme/health", "acme", state="all").json()["incidents"]
    assert [(i["kind"], i["sandbox_id"], i["tenant"], i["disk"]) for i in mine] == [("io_stall", "s1", "acme", "")]
    assert env.get("/v1/tenants/acme/health", "operator", state="all").json()["incidents"] == mine
    fleet = env.get("/v1/health/sandboxes", "operator").json()["incidents"]
    disks = sorted((i["disk"], i["tenant"], i["sandbox_id"], i["incident_id"]) for i in fleet if i["disk"])
    assert disks == [
        ("acme", "", "", f"host_disk_stall/n1/acme/{opened}"),
        ("nvme1n1", "", "", f"host_disk_stall/n1/nvme1n1/{opened}"),
    ]
    # no tenant column holds a disk's name
    where = "WHERE disk != '' OR tenant = 'acme'"
    sql = f"SELECT kind, tenant, disk FROM {tables(env.ch).health} FINAL {where}"
    rows = [tuple(r) for r in env.ch.execute(sql, settings={"use_numpy": False})]
    assert sorted(rows) == [
        ("host_disk_stall", "", "acme"),
        ("host_disk_stall", "", "nvme1n1"),
        ("io_stall", "acme", ""),
    ]


@pytest.mark.clickhouse
def test_keys_scheme_word_in_any_case_and_revocation(env: Env) -> None:
    key = env.keys["acme"]
    for scheme in ("Bearer", "bearer", "BEARER"):
        r = env.client.get("/v1/tenants/acme/health", headers={"Authorization": f"{scheme} {key}"})
        assert r.status_code == 200, (scheme, r.text)
    for bad in (f"Basic {key}", "Bearer", "Bearer smk_nope_nope", f"Bearer {key}x"):
        r = env.client.get("/v1/tenants/acme/health", headers={"Authorization": bad})
        assert r.status_code == 401 and r.headers["www-authenticate"] == 'Bearer realm="sandmeter"', bad
    assert revoke_key(env.ch, key.split("_")[1])
    r = env.get("/v1/tenants/acme/health", "acme")
    assert r.status_code == 401 and r.json()["code"] == "unauthenticated"


D1, D2 = "2026-11-01T00:00:00Z", "2026-11-02T00:00:00Z"


@pytest.mark.clickhouse
@pytest.mark.parametrize(
    ("path", "params", "code"),
    [
        ("/v1/tenants/acme/usage", {"from": D2, "to": D1}, "bad_range"),
        ("/v1/tenants/acme/usage", {"from": "yesterday", "to": D1}, "invalid_request"),
        ("/v1/tenants/acme/usage", {"from": "2026-11-01T00:00:00", "to": D2}, "invalid_request"),
        ("/v1/tenants/acme/usage", {"from": "1700000000", "to": D2}, "invalid_request"),
        ("/v1/tenants/acme/usage", {"from": D1, "to": "9999-12-31T23:59:59-14:00"}, "invalid_request"),
        ("/v1/tenants/acme/usage", {"from": D1, "to": D2, "metric": "gpu"}, "invalid_request"),
        (
            "/v1/tenants/acme/usage",
            {"from": D1, "to": "2026-12-03T00:00:00Z", "granularity": "second"},
            "range_too_long",
        ),
        ("/v1/tenants/acme/usage", {"from": D1, "to": "2027-12-01T00:00:00Z", "granularity": "day"}, "range_too_long"),
        ("/v1/tenants/acme/usage", {"from": D1, "to": D2, "granularity": "week"}, "invalid_request"),
        ("/v1/tenants/acme/usage", {"from": D1, "to": D2, "group_by": "node"}, "invalid_request"),
        ("/v1/tenants/acme/usage", {"from": D1, "to": D2, "format": "xml"}, "invalid_request"),
        ("/v1/tenants/acme/usage", {"from": D1, "to": D2, "limit": 0}, "invalid_request"),
        ("/v1/tenants/acme/usage", {"from": D1, "to": D2, "cursor": "12\n"}, "invalid_request"),
        ("/v1/tenants/ACME';DROP/usage", {"from": D1, "to": D2}, "invalid_request"),
        ("/v1/tenants/acme%0A/usage", {"from": D1, "to": D2, "format": "csv"}, "invalid_request"),
        ("/v1/tenants/acme/usage", {"to": D2}, "invalid_request"),
        ("/v1/tenants/acme/cost", {"from": D2, "to": D1}, "bad_range"),
        (
            "/v1/tenants/acme/cost",
            {"from": "2026-11-30T00:00:00Z", "to": "9999-12-31T23:59:59-14:00"},
            "invalid_request",
        ),
        ("/v1/tenants/acme/cost", {"from": "2026-13-01T00:00:00Z", "to": D2}, "invalid_request"),
        ("/v1/tenants/acme/invoices/2026-13", {}, "invalid_request"),
        ("/v1/tenants/acme/invoices/26-11", {}, "invalid_request"),
        ("/v1/tenants/acme/invoices/2026-10%0A", {"format": "csv"}, "invalid_request"),
        ("/v1/tenants/acme/invoices/2026-11", {"format": "pdf"}, "invalid_request"),
        ("/v1/tenants/acme/invoices", {"cursor": "2026-1"}, "invalid_request"),
        ("/v1/tenants/acme/health", {"state": "sick"}, "invalid_request"),
        ("/v1/health/sandboxes", {"state": "sick"}, "invalid_request"),
        ("/v1/tenants", {"from": D2}, "invalid_request"),
        ("/v1/scale/acme/a$b", {}, "invalid_request"),
        ("/v1/scale/acme/fn%0A", {}, "invalid_request"),
        ("/v1/scale/ACME/fn", {}, "invalid_request"),
    ],
)
def test_bad_input_is_one_422_problem(env: Env, path: str, params: dict[str, str], code: str) -> None:
    r = env.get(path, **params)
    assert r.status_code == 422, r.text
    body = r.json()
    assert r.headers["content-type"] == PROBLEM and "content-disposition" not in r.headers
    assert body["code"] == code and body["status"] == 422 and body["type"] == f"urn:sandmeter:problem:{code}"
    assert body["detail"] and body["errors"] and body["title"] == "Unprocessable Entity"


@pytest.mark.clickhouse
def test_unknown_paths_and_methods_are_problems_too(env: Env) -> None:
    r = env.get("/v1/nope")
    assert r.status_code == 404 and r.headers["content-type"] == PROBLEM and r.json()["code"] == "not_found"
    r = env.client.delete("/v1/tenants/acme/usage")
    assert r.status_code == 405 and r.headers["allow"] == "GET" and r.json()["code"] == "method_not_allowed"


@pytest.mark.clickhouse
def test_service_endpoints(env: Env) -> None:
    assert env.client.get("/healthz").text == "ok"
    assert env.client.get("/readyz").text == "ready"
    env.get("/v1/tenants/acme/usage", **{"from": "x", "to": "y"})
    text = env.client.get("/metrics").text
    assert 'sandmeter_api_requests_total{route="/v1/tenants/{tenant}/usage",status="422"} 1.0' in text
    assert 'sandmeter_api_request_duration_seconds_count{route="/v1/tenants/{tenant}/usage"} 1.0' in text


def test_a_bad_plan_file_stops_the_start_up(tmp_path: Path) -> None:
    import shutil

    from billing.plans import PlanError

    shutil.copytree(PLANS, tmp_path / "plans")
    f = tmp_path / "plans" / "standard-v2.toml"
    f.write_text(f.read_text().replace('price = "0.0000018"', 'price = "-1"'))
    with pytest.raises(PlanError, match=r"standard-v2.toml:8: lines\[0\].price"):
        create_app(ApiSettings(plans_dir=tmp_path / "plans"), lambda: None)
