"""Failures of the store and of the code, seen from a client: one problem format, the right status,
and every response counted. A small fake store stands in for ClickHouse here (the real one is in
test_api.py and test_fuzz.py)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from clickhouse_driver.errors import ServerException
from fastapi.testclient import TestClient

from billing.app import create_app
from billing.db import query_settings, read_only
from billing.plans import load_book
from billing.settings import ApiSettings
from contracts.clickhouse import tables
from contracts.names import Tables
from sandmeter.stack.users import ADMIN

PLANS = Path(__file__).resolve().parents[1] / "fixtures" / "plans"
SECRET = "s3cret"
KEY = f"smk_op1_{SECRET}"
ROUTES = [
    "/v1/tenants?from=2026-11-01T00:00:00Z&to=2026-11-02T00:00:00Z",
    "/v1/tenants/acme/usage?from=2026-11-01T00:00:00Z&to=2026-11-02T00:00:00Z",
    "/v1/tenants/acme/cost?from=2026-11-01T00:00:00Z&to=2026-11-02T00:00:00Z",
    "/v1/tenants/acme/invoices",
    "/v1/tenants/acme/invoices/2026-11",
    "/v1/tenants/acme/health",
    "/v1/health/sandboxes",
    "/v1/scale/acme/fn",
]


class Store:
    """Answers the key table; everything else fails as `fail` says."""

    def __init__(self, fail: BaseException | None = None, keys_fail: BaseException | None = None) -> None:
        self.fail, self.keys_fail = fail, keys_fail
        self.settings: list[dict[str, Any]] = []
        self.tables = Tables("sandmeter")

    def execute(self, sql: str, params: Any = None, settings: dict[str, Any] | None = None, **_: Any) -> Any:
        self.settings.append(settings or {})
        if "system.settings" in sql:  # the user's own `readonly`: a user that may write
            return [("0",)]
        if "api_keys" in sql:
            if self.keys_fail is not None:
                raise self.keys_fail
            return [("op1", hashlib.sha256(SECRET.encode()).hexdigest(), "operator", "", 1, 0)]
        if self.fail is not None:
            raise self.fail
        return [(1,)]


def client(store: Store) -> TestClient:
    app = create_app(ApiSettings(key_cache_s=0), lambda: store, book=load_book(PLANS))
    return TestClient(app)


def test_clickhouse_away_is_a_503_with_retry_after_on_every_route() -> None:
    away = ConnectionRefusedError("127.0.0.1:9000 refused")
    with client(Store(fail=away, keys_fail=away)) as c:
        for path in ROUTES:
            r = c.get(path, headers={"Authorization": f"Bearer {KEY}"})
            assert r.status_code == 503, (path, r.text)
            assert r.headers["retry-after"] == "5" and r.headers["content-type"] == "application/problem+json"
            assert r.json()["code"] == "clickhouse_unavailable" and "127.0.0.1" not in r.text
        ready = c.get("/readyz")
        assert ready.status_code == 503 and ready.json()["code"] == "not_ready" and "127.0.0.1" not in ready.text
        assert ready.headers["retry-after"] == "5"
        missing = c.get(ROUTES[0])  # no key: refused before the store is asked
        assert missing.status_code == 401 and missing.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize(("code", "status"), [(241, 503), (159, 503), (202, 503), (60, 500)])
def test_a_busy_store_is_a_503_and_our_own_mistake_a_500(code: int, status: int) -> None:
    with client(Store(fail=ServerException("server says no", code))) as c:
        r = c.get(ROUTES[1], headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == status and r.headers["content-type"] == "application/problem+json"
    assert "server says no" not in r.text


def test_an_unexpected_exception_is_a_counted_500_problem() -> None:
    with client(Store(fail=RuntimeError("boom"))) as c:
        for path in ROUTES[:3]:
            r = c.get(path, headers={"Authorization": f"Bearer {KEY}"})
            assert r.status_code == 500 and r.json()["code"] == "internal" and "boom" not in r.text
        metrics = c.get("/metrics").text
    for route in ("/v1/tenants", "/v1/tenants/{tenant}/usage", "/v1/tenants/{tenant}/cost"):
        assert f'sandmeter_api_requests_total{{route="{route}",status="500"}} 1.0' in metrics
        assert f'sandmeter_api_request_duration_seconds_count{{route="{route}"}} 1.0' in metrics


def test_every_query_the_api_sends_is_read_only() -> None:
    store = Store()
    with client(store) as c:
        for path in ROUTES:
            c.get(path, headers={"Authorization": f"Bearer {KEY}"})
    sent = store.settings[1:]  # after the probe of the user's own setting
    assert sent and all(s.get("readonly") == 2 and s.get("max_execution_time") for s in sent)


def test_a_user_read_only_already_is_sent_no_setting_it_may_not_change() -> None:
    assert query_settings("0", 30) == {"readonly": 2, "max_execution_time": 30}
    assert query_settings("2", 30) == {"max_execution_time": 30}
    assert query_settings("1", 30) == {}


@pytest.mark.clickhouse
def test_the_server_refuses_a_write_on_the_api_connection(db: tuple[str, Any]) -> None:
    """The test database's user may write (readonly 0), so the API sends readonly=2 itself."""
    ro = read_only(lambda: db[1], 30)()
    assert ro.settings == {"readonly": 2, "max_execution_time": 30}
    with pytest.raises(ServerException) as e:
        ro.execute(
            f"INSERT INTO {tables(db[1]).invoices} (tenant, period) VALUES", [{"tenant": "x", "period": "2026-11"}]
        )
    assert e.value.code == 164  # READONLY
    assert db[1].execute(f"SELECT count() FROM {tables(db[1]).invoices}", settings={"use_numpy": False}) == [(0,)]


@pytest.mark.clickhouse
@pytest.mark.parametrize("readonly", [1, 2])
def test_the_api_serves_as_a_read_only_user(stack: Any, db: tuple[str, Any], readonly: int) -> None:
    """A user whose profile is read-only (as docs/deployment.md gives the API) may change no
    setting; the API must not try, or every query would fail."""
    from clickhouse_driver import Client

    from billing.keys import OPERATOR, create_key

    name, ch = db
    key = create_key(ch, OPERATOR)[1]
    port = stack.settings.clickhouse_tcp_port

    def user() -> Any:
        c = Client(host="127.0.0.1", port=port, database=name, user=ADMIN, password=stack.users.password(ADMIN),
                   settings={"readonly": readonly})  # fmt: skip
        c.tables = Tables(name)  # what contracts.clickhouse.client() gives every connection
        return c

    with TestClient(create_app(ApiSettings(key_cache_s=0), user, book=load_book(PLANS))) as c:
        for path in ROUTES[:7]:
            r = c.get(path, headers={"Authorization": f"Bearer {key}"})
            assert r.status_code in (200, 404), (readonly, path, r.text)
