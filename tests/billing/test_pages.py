"""Pages and reads, as properties on the real ClickHouse: walking any list page by page gives
exactly the whole list once, nothing is cut; and no GET, on any route, with any parameters
(months before a plan, unknown tenants, invoices long past their grace period), writes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from billing_seed import daily_usage, footprint, interval, write_incidents, write_usage
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_api import NOV, Env, make_env

from billing.timeparse import format_ms
from contracts.clickhouse import tables

DAY = 86_400_000
SLOW = settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)


@pytest.fixture
def env(db: tuple[str, Any]) -> Iterator[Env]:
    e = make_env(db[1])
    write_usage(db[1], daily_usage(("acme", "t2", "t3", "t4", "t5"), 4, NOV, 3))
    # intervals at odd times, so buckets of every size hold several sandboxes
    write_usage(db[1], [interval("acme", f"odd{i}", NOV + i * 7_777_777, NOV + i * 7_777_777 + 3333, i + 1)
                        for i in range(30)])  # fmt: skip
    write_incidents(db[1], "acme", 9, NOV)
    with e.client:
        yield e


def walk(env: Env, path: str, key: str, params: dict[str, Any]) -> tuple[list[dict[str, Any]], list[Any]]:
    """Every page of a list: (the pages' bodies, the items of all pages in order)."""
    pages, items, cursor = [], [], None
    for _ in range(1000):
        r = env.get(path, **params, **({"cursor": cursor} if cursor else {}))
        assert r.status_code == 200, r.text
        pages.append(r.json())
        items += r.json()[key]
        cursor = r.json()["next_cursor"]
        if cursor is None:
            return pages, items
    raise AssertionError("pages never end")


@pytest.mark.clickhouse
@SLOW
@given(
    limit=st.integers(1, 9),
    grouped=st.booleans(),
    granularity=st.sampled_from(["second", "minute", "hour", "day"]),
    start=st.integers(0, 3 * DAY),
    length=st.integers(1, 3 * DAY),
)
def test_usage_pages_add_up_to_the_whole_range(
    env: Env, limit: int, grouped: bool, granularity: str, start: int, length: int
) -> None:
    params: dict[str, Any] = {"from": format_ms(NOV + start), "to": format_ms(NOV + start + length),
                              "granularity": granularity, **({"group_by": "sandbox"} if grouped else {})}  # fmt: skip
    whole = env.get("/v1/tenants/acme/usage", **params, limit=1000)
    assert whole.status_code == 200 and whole.json()["next_cursor"] is None, whole.text
    pages, series = walk(env, "/v1/tenants/acme/usage", "series", {**params, "limit": limit})
    assert series == whole.json()["series"]
    assert all(len(p["series"]) == limit for p in pages[:-1]) and len(pages[-1]["series"]) <= limit
    assert all(p["totals"] == whole.json()["totals"] for p in pages)  # totals are of the range, on every page
    keys = [(s["start"], s.get("sandbox_id", "")) for s in series]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)


@pytest.mark.clickhouse
def test_tenant_and_incident_pages_add_up_to_the_whole_list(env: Env) -> None:
    rng = {"from": format_ms(NOV), "to": format_ms(NOV + 4 * DAY)}
    _, everyone = walk(env, "/v1/tenants", "tenants", {**rng, "limit": 1000})
    assert everyone == ["acme", "other", "t2", "t3", "t4", "t5"]
    for limit in (1, 2, 5):
        assert walk(env, "/v1/tenants", "tenants", {**rng, "limit": limit})[1] == everyone
    for path in ("/v1/health/sandboxes", "/v1/tenants/acme/health"):
        _, whole = walk(env, path, "incidents", {"state": "all", "limit": 1000})
        assert len(whole) == 9 and [i["opened"] for i in whole] == sorted((i["opened"] for i in whole), reverse=True)
        for limit in (1, 4):
            assert walk(env, path, "incidents", {"state": "all", "limit": limit})[1] == whole
        assert [i for i in whole if i["state"] == "closed"] == walk(env, path, "incidents", {"state": "closed"})[1]


ROUTES = [
    "/v1/tenants", "/v1/tenants/{tenant}/usage", "/v1/tenants/{tenant}/cost", "/v1/tenants/{tenant}/invoices",
    "/v1/tenants/{tenant}/invoices/{period}", "/v1/tenants/{tenant}/health", "/v1/health/sandboxes",
    "/v1/scale/{tenant}/{function}",
]  # fmt: skip


@pytest.mark.clickhouse
def test_the_route_list_is_the_spec(env: Env) -> None:
    assert sorted(ROUTES) == sorted(p for p in env.app.openapi()["paths"] if p.startswith("/v1/"))


@pytest.mark.clickhouse
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(
    calls=st.lists(
        st.tuples(
            st.sampled_from(ROUTES),
            st.sampled_from(["acme", "other", "tenant-c", "no-such-tenant", "ACME", "a%0Ab"]),
            st.sampled_from(["1970-01", "2025-12", "2026-01", "2026-10", "2026-11", "2026-12", "2099-01", "2026-13"]),
            st.sampled_from(["operator", "acme"]),
            st.sampled_from(["json", "csv", "parquet"]),
        ),
        min_size=1,
        max_size=8,
    ),
    now=st.sampled_from([NOV + DAY, NOV + 31 * DAY, NOV + 400 * DAY]),  # inside, just after, long after the month
)
def test_no_get_writes_and_none_is_a_5xx(env: Env, calls: list[tuple[str, str, str, str, str]], now: int) -> None:
    env.now[0] = now
    before = footprint(env.ch)
    for route, tenant, period, who, fmt in calls:
        path = route.replace("{tenant}", tenant).replace("{period}", period).replace("{function}", "fn")
        r = env.get(path, who, **{"from": format_ms(NOV), "to": format_ms(NOV + DAY), "format": fmt})
        assert r.status_code < 500 or r.json()["code"] == "stale", (path, r.status_code, r.text)
    assert footprint(env.ch) == before


@pytest.mark.clickhouse
def test_the_footprint_sees_a_write_even_one_merged_away(env: Env) -> None:
    """The check above can fail: a write shows, including a duplicate row a merge would remove."""
    before = footprint(env.ch)
    invoices = tables(env.ch).invoices
    row = [{"tenant": "t", "period": "2026-11"}]
    env.ch.execute(f"INSERT INTO {invoices} (tenant, period) VALUES", row, settings={"use_numpy": False})
    after = footprint(env.ch)
    assert after[invoices] != before[invoices]
    env.ch.execute(f"INSERT INTO {invoices} (tenant, period) VALUES", row, settings={"use_numpy": False})
    env.ch.execute(f"OPTIMIZE TABLE {invoices} FINAL")
    assert footprint(env.ch)[invoices][1] > after[invoices][1]  # same rows as readers see them, newer block
