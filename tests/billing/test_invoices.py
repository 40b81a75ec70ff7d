"""Invoices on the real ClickHouse: drafts computed on read and never stored, finalization as an
explicit idempotent job after the grace period, late usage, and which invoices exist at all."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from billing_seed import footprint, interval, write_usage
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_api import DEC, HOUR, NOV, OCT, PLANS, Env, make_env

from billing.app import create_app
from billing.finalize import finalize_due, finalize_job
from billing.invoices import Invoices, Period
from billing.plans import load_book
from billing.settings import ApiSettings
from billing.timeparse import format_ms, parse_ms
from contracts.clickhouse import tables
from contracts.names import Tables
from sandmeter.cli import main
from sandmeter.stack.users import API, BILLING


@pytest.fixture
def env(db: tuple[str, Any]) -> Iterator[Env]:
    e = make_env(db[1])
    with e.client:
        yield e


def finalize(env: Env, now_ms: int, assigned_too: bool = False) -> list[tuple[str, str]]:
    """What a run finalizes; without `assigned_too`, leaving out tenant-c (assigned a plan in the
    fixtures, so it has an invoice every month since the plan's start)."""
    done = finalize_due(Invoices(load_book(PLANS), 3_600_000), env.ch, now_ms).finalized
    return [(t, p) for t, p in done if assigned_too or t != "tenant-c"]


@pytest.mark.clickhouse
def test_draft_until_the_job_finalizes_it_then_frozen_with_late_usage_on_the_next(env: Env) -> None:
    draft = env.get("/v1/tenants/acme/invoices/2026-11")
    assert draft.headers["x-invoice-status"] == "draft" and draft.json()["status"] == "draft"
    body = draft.json()
    assert body["subtotal"] == "0.02" and body["finalizes_after"] == format_ms(DEC + HOUR)
    mc = [a for a in body["adjustments"] if a["kind"] == "minimum_commitment"]
    assert mc == [{"kind": "minimum_commitment", "label": "minimum commitment 5.00 USD", "amount": "4.98"}]
    assert body["total"] == "5.00"

    assert finalize(env, DEC + HOUR - 1) == []  # still inside the grace period
    env.now[0] = DEC + 5 * HOUR  # long after the grace period: a GET still only reads
    assert env.get("/v1/tenants/acme/invoices/2026-11").json()["status"] == "draft"
    assert finalize(env, DEC + 5 * HOUR) == [("acme", "2026-11"), ("other", "2026-11")]
    assert finalize(env, DEC + 6 * HOUR) == []  # idempotent
    first = env.get("/v1/tenants/acme/invoices/2026-11")
    assert first.json()["status"] == "final" and first.json()["finalized_at"] == format_ms(DEC + 5 * HOUR)
    assert first.headers["x-invoice-status"] == "final"
    env.now[0] += 5000
    assert env.get("/v1/tenants/acme/invoices/2026-11").content == first.content  # frozen, byte for byte

    # usage for November arrives after the invoice was finalized: 10 more GB of IO
    late = interval("acme", "s9", NOV + 5 * HOUR, NOV + 5 * HOUR + 1000, 0)
    late.update(io_read_bytes=10_000_000_000, io_write_bytes=0)
    env.add([late])
    assert env.get("/v1/tenants/acme/invoices/2026-11").content == first.content
    restarted = create_app(
        ApiSettings(key_cache_s=0), lambda: env.ch, book=load_book(PLANS), clock_ms=lambda: DEC + 7 * HOUR
    )
    with TestClient(restarted) as c2:
        r = c2.get("/v1/tenants/acme/invoices/2026-11", headers={"Authorization": f"Bearer {env.keys['acme']}"})
        assert r.content == first.content  # and across a restart of the API
    env.add([interval("acme", "s1", DEC + HOUR, DEC + HOUR + 1000, 1)])  # December has usage: it has an invoice
    dec = env.get("/v1/tenants/acme/invoices/2026-12").json()
    [adj] = [a for a in dec["adjustments"] if a["kind"] == "late_usage"]
    assert adj["period"] == "2026-11" and adj["quantities"]["io_gb"] == "10"
    assert adj["amount"] == "0.20"  # 11 GB now at 0.02 = 0.22, minus the 0.02 booked
    csv = env.get("/v1/tenants/acme/invoices/2026-12", format="csv").text
    assert csv.splitlines()[0] == "kind,metric,period,unit,model,quantity,unit_price,amount,currency"
    assert "late_usage,,2026-11,,,,,0.20,USD" in csv
    table = pq.read_table(io.BytesIO(env.get("/v1/tenants/acme/invoices/2026-12", format="parquet").content))
    assert table.schema.field("amount").type == pa.decimal128(38, 2)
    assert isinstance(table.schema.field("quantity").type, pa.Decimal128Type | pa.Decimal256Type)
    assert table.column("amount").to_pylist()[-1] == Decimal(dec["total"])


@pytest.mark.clickhouse
def test_an_invoice_exists_only_with_usage_or_an_assignment_and_never_before_the_plan(env: Env) -> None:
    env.now[0] = parse_ms("2027-03-10T00:00:00Z")
    cases = {
        ("acme", "2026-11"): 200,  # usage
        ("acme", "2026-10"): 404,  # no usage, not assigned
        ("acme", "1970-01"): 404,  # before the plan (was: a stored 5.00 USD final invoice)
        ("acme", "2027-04"): 404,  # has not started
        ("no-such-tenant", "2026-10"): 404,  # unknown tenant, operator key (was: stored too)
        ("tenant-c", "2026-01"): 200,  # assigned: from its plan's start, usage or not
        ("tenant-c", "2025-12"): 404,  # before its plan starts
    }
    before = footprint(env.ch)
    for (tenant, period), status in cases.items():
        r = env.get(f"/v1/tenants/{tenant}/invoices/{period}")
        assert r.status_code == status, (tenant, period, r.text)
        if status == 404:
            assert r.json()["code"] == "no_invoice"
    assert footprint(env.ch) == before
    listed = env.get("/v1/tenants/tenant-c/invoices", limit=100).json()["invoices"]
    assert [i["period"] for i in listed] == [str(p) for p in _months("2027-03", "2026-01")]
    assert {i["currency"] for i in listed} == {"EUR"} and {i["status"] for i in listed} == {"draft"}
    assert [i["period"] for i in env.get("/v1/tenants/acme/invoices").json()["invoices"]] == ["2026-11"]
    finalized = finalize(env, env.now[0], assigned_too=True)
    assert ("acme", "2026-10") not in finalized and ("acme", "1970-01") not in finalized
    assert {p for t, p in finalized if t == "tenant-c"} == {str(p) for p in _months("2027-02", "2026-01")}
    assert ("no-such-tenant", "2026-10") not in finalized


def _months(newest: str, oldest: str) -> list[Period]:
    out, p = [], Period.parse(newest)
    while p >= Period.parse(oldest):
        out.append(p)
        p = p.prev()
    return out


@pytest.mark.clickhouse
def test_invoice_pages_walk_every_month_once(env: Env) -> None:
    env.now[0] = parse_ms("2027-03-10T00:00:00Z")
    seen, cursor = [], None
    while True:
        params = {"limit": 4, **({"cursor": cursor} if cursor else {})}
        page = env.get("/v1/tenants/tenant-c/invoices", **params).json()
        seen += [i["period"] for i in page["invoices"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [str(p) for p in _months("2027-03", "2026-01")]


@pytest.mark.clickhouse
@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(
    months=st.sets(st.integers(0, 15), min_size=1, max_size=5),
    plan_from=st.integers(-3, 12),
    runs=st.lists(st.integers(0, 20), min_size=1, max_size=3),
)
def test_finalization_property(db: tuple[str, Any], months: set[int], plan_from: int, runs: list[int]) -> None:
    """Whatever the usage months, plan start and run times: a run finalizes exactly the months with
    usage that end after the plan starts and whose grace is over, each once, oldest first, and
    never touches anything else."""
    _, ch = db
    ch.execute(f"TRUNCATE TABLE {tables(ch).invoices}")
    ch.execute("TRUNCATE TABLE usage_intervals")
    ch.execute("TRUNCATE TABLE usage_minute")
    ch.execute("TRUNCATE TABLE usage_hour")
    base = Period.parse("2026-01")
    month = [base]
    for _ in range(20):
        month.append(month[-1].next())
    write_usage(ch, [interval("t1", "s", month[m].start_ms + 1000, month[m].start_ms + 2000, 5) for m in months])
    tmp = Path(__import__("tempfile").mkdtemp())
    (tmp / "p-v1.toml").write_text(
        f'id = "p"\nversion = 1\neffective_from = "{format_ms(month[0].start_ms + plan_from * 30 * 86_400_000)}"\n'
        'currency = "USD"\n[[lines]]\nmetric = "cpu_used_ms"\nprice = "1"\n'
    )
    (tmp / "assignments.toml").write_text('default = "p"\n')
    book = load_book(tmp)
    invoices = Invoices(book, 3_600_000)
    done: list[tuple[str, str]] = []
    for r in sorted(runs):
        now = month[r].start_ms + 3_600_000
        got = finalize_due(invoices, ch, now).finalized
        assert [p for _, p in got] == sorted(p for _, p in got)  # oldest first
        done += got
        expect = {str(month[m]) for m in months if month[m].end_ms > book.starts_ms("t1") and m < r}
        assert {p for _, p in done} == expect and len(done) == len(set(done))
    rows = ch.execute(f"SELECT tenant, period, body FROM {tables(ch).invoices}", settings={"use_numpy": False})
    assert sorted((str(t), str(p)) for t, p, _ in rows) == sorted(done)
    assert all(json.loads(b)["status"] == "final" for _, _, b in rows)


@pytest.mark.clickhouse
def test_the_finalize_command(env: Env, db: tuple[str, Any], stack: Any, monkeypatch: pytest.MonkeyPatch,
                              capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    name, _ = db
    monkeypatch.setenv("SANDMETER_API_CLICKHOUSE_PORT", str(stack.settings.clickhouse_tcp_port))
    # reads usage as the API's user, writes the invoices as the billing user
    for k, v in {**stack.users.env("API", API), **stack.users.env("API", BILLING, "billing_")}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("SANDMETER_API_CLICKHOUSE_DATABASE", name)
    monkeypatch.setenv("SANDMETER_API_PLANS_DIR", str(PLANS))
    assert main(["invoices", "finalize", "--now", "2026-12-01T00:30:00Z"]) == 0
    out = capsys.readouterr().out  # November is inside the grace period; tenant-c is assigned a plan
    assert "finalized tenant-c 2026-10" in out and "2026-11" not in out and "finalized 10 invoice(s)" in out
    assert main(["invoices", "finalize", "--now", "2026-12-02T00:00:00Z", "--tenant", "acme"]) == 0
    out = capsys.readouterr().out
    assert "finalized acme 2026-11" in out and "finalized 1 invoice(s)" in out
    assert main(["invoices", "finalize", "--now", "2026-12-02T00:00:00Z"]) == 0
    assert "finalized other 2026-11" in capsys.readouterr().out
    assert main(["invoices", "finalize", "--now", "2026-12-02T00:00:00Z"]) == 0
    assert "finalized 0 invoice(s)" in capsys.readouterr().out
    assert main(["invoices", "finalize", "--tenant", "Bad Tenant"]) == 2
    assert main(["invoices", "finalize", "--now", "yesterday"]) == 2
    assert finalize_job(ApiSettings(plans_dir=PLANS), _Down(), None, None) == 1
    assert "failed" in capsys.readouterr().err


class _Down:
    tables = Tables("sandmeter")

    def execute(self, *a: Any, **k: Any) -> Any:
        raise ConnectionError("refused")


_ = OCT
