"""Property-based requests from the OpenAPI spec (schemathesis): no 5xx, no schema violation.

The scale endpoint's load data is kept fresh (a fixed clock), because its documented 503 for
stale data is the one 5xx a client may see by design; tests/pipeline covers that path.

Runs against the real ClickHouse with data and an operator key; every operation gets
generated valid and invalid parameters (dates, months, tenants, metrics, formats).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from support import private_db

from billing.app import create_app
from billing.keys import OPERATOR, create_key
from billing.plans import load_book
from billing.settings import ApiSettings
from contracts import names as n
from sandmeter.stack import Stack

PLANS = Path(__file__).resolve().parents[1] / "fixtures" / "plans"
KEY: dict[str, str] = {}


NOW_MS = 1_795_773_600_000  # the app's clock: load data stays fresh for the whole run


@pytest.fixture(scope="module")
def api_app(stack: Stack) -> Iterator[Any]:
    with private_db(stack) as (_, ch):
        KEY["operator"] = create_key(ch, OPERATOR)[1]
        rows = [
            {"tenant": "acme", "function": "fn", "sandbox_id": f"s{i}", "node": "n",
             "start_ms": NOW_MS - 2000 - s * 1000, "end_ms": NOW_MS - 1000 - s * 1000, "cpu_used_us": 500_000,
             "vcpu_milli": 1000, "inflight": -1.0, "batch_id": f"n-{s}"}
            for i in range(3) for s in range(200)
        ]  # fmt: skip
        ch.execute(f"INSERT INTO {n.T_FUNCTION_LOAD} VALUES", rows, settings={"use_numpy": False})
        settings = ApiSettings(max_rows=2000, key_cache_s=60)
        yield create_app(settings, lambda: ch, book=load_book(PLANS), clock_ms=lambda: NOW_MS)


@pytest.fixture
def api_schema(api_app: Any) -> Any:
    return schemathesis.openapi.from_asgi("/openapi.json", api_app)


CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def fuzz(schema: Any, only: str | None = None) -> int:
    ops = [r.ok() for r in schema.get_all_operations()]
    ops = [op for op in ops if only is None or op.path == only]
    for op in ops:

        @given(case=op.as_strategy())
        @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def run(case: Any) -> None:
            case.call_and_validate(headers={"Authorization": f"Bearer {KEY['operator']}"}, checks=CHECKS)

        run()
    return len(ops)


@pytest.mark.clickhouse
def test_no_request_makes_a_5xx_or_breaks_the_schema(api_schema: Any) -> None:
    assert fuzz(api_schema) >= 9


@pytest.mark.clickhouse
def test_the_fuzzer_finds_a_planted_server_error(api_app: Any) -> None:
    """The harness can fail: a route that breaks on some inputs is caught."""

    @api_app.get("/v1/planted/{n}")
    def planted(n: int) -> dict[str, int]:
        return {"x": 100 // (n % 7)}  # ZeroDivisionError -> 500 for multiples of 7

    try:
        with pytest.raises(ZeroDivisionError, match="modulo by zero"):  # the app error surfaces as is
            fuzz(schemathesis.openapi.from_asgi("/openapi.json", api_app), only="/v1/planted/{n}")
    finally:
        api_app.router.routes[:] = [r for r in api_app.router.routes if getattr(r, "path", "") != "/v1/planted/{n}"]
        api_app.openapi_schema = None
