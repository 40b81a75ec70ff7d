from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from billing.app import create_app
from billing.timeparse import format_ms, parse_ms
from sandmeter import names as n
from sandmeter.settings import ApiSettings


def test_timestamps_round_trip_to_the_millisecond() -> None:
    assert parse_ms("2026-11-27T10:00:00.123Z", "from") == 1795773600123
    assert format_ms(1795773600123) == "2026-11-27T10:00:00.123Z"


def test_usage_reads_the_coarsest_table_whose_buckets_fit_the_range() -> None:
    from billing.usage import source

    h, m = 3_600_000, 60_000
    assert source(0, 24 * h, 24 * h)[0] == n.T_USAGE_HOUR
    assert source(0, 24 * h, h)[0] == n.T_USAGE_HOUR
    assert source(0, 2 * h, m)[0] == n.T_USAGE_MINUTE  # minute buckets from hour rows: impossible
    assert source(m, 2 * h, h)[0] == n.T_USAGE_MINUTE  # the range starts inside an hour
    assert source(1, 2 * h, h)[0] == n.T_USAGE  # ... or inside a millisecond-exact minute
    assert source(0, 2000, 1000)[0] == n.T_USAGE


@pytest.fixture
def api(ch_migrated: Any) -> Iterator[TestClient]:
    import numpy as np
    import pandas as pd

    rows = pd.DataFrame(
        {
            "tenant": ["acme", "acme", "other"], "sandbox_id": ["s1", "s1", "s2"], "node": ["n"] * 3,
            "start_ms": np.array([0, 1000, 0], np.uint64), "end_ms": np.array([1000, 2000, 1000], np.uint64),
            "cpu_used_us": np.array([1500, 2501, 7], np.uint64),
            **{c: np.array([1, 2, 3], np.uint64) for c in (
                "vcpu_alloc_mcpu_ms", "mem_used_byte_ms", "mem_alloc_byte_ms", "io_read_bytes",
                "io_write_bytes", "net_rx_bytes", "net_tx_bytes")},
            "batch_id": ["api-test/0/0", "api-test/0/1", "api-test/0/0"],
        }
    )  # fmt: skip
    ch_migrated.insert_dataframe(f"INSERT INTO {n.T_USAGE} ({', '.join(rows.columns)}) VALUES", rows)
    ch_migrated.insert_dataframe(f"INSERT INTO {n.T_USAGE} ({', '.join(rows.columns)}) VALUES", rows)  # a replay
    app = create_app(ApiSettings(max_rows=1000), lambda: ch_migrated)
    with TestClient(app) as c:
        yield c


@pytest.mark.clickhouse
def test_usage_dedups_and_is_exact(api: TestClient) -> None:
    params = {"from": "1970-01-01T00:00:00.000Z", "to": "1970-01-01T00:00:02.000Z", "granularity": "second"}
    r = api.get("/v1/tenants/acme/usage", params=params)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["totals"]["cpu_used_ms"] == "4.001"
    assert [s["start"] for s in body["series"]] == ["1970-01-01T00:00:00.000Z", "1970-01-01T00:00:01.000Z"]


@pytest.mark.clickhouse
@pytest.mark.parametrize(
    ("path", "params", "code"),
    [
        ("/v1/tenants/acme/usage", {"from": "2026-01-02T00:00:00Z", "to": "2026-01-01T00:00:00Z"}, "bad_range"),
        ("/v1/tenants/acme/usage", {"from": "yesterday", "to": "2026-01-01T00:00:00Z"}, "bad_timestamp"),
        ("/v1/tenants/acme/usage", {"from": "2026-01-01T00:00:00", "to": "2026-01-02T00:00:00Z"}, "bad_timestamp"),
        (
            "/v1/tenants/acme/usage",
            {"from": "2026-01-01T00:00:00Z", "to": "2026-01-02T00:00:00Z", "metric": "gpu"},
            "unknown_metric",
        ),
        (
            "/v1/tenants/acme/usage",
            {"from": "2026-01-01T00:00:00Z", "to": "2026-02-01T00:00:00Z", "granularity": "second"},
            "too_many_rows",
        ),
        (
            "/v1/tenants/acme/usage",
            {"from": "2026-01-01T00:00:00Z", "to": "2026-01-02T00:00:00Z", "granularity": "week"},
            "bad_granularity",
        ),
        ("/v1/tenants/ACME';DROP/usage", {"from": "2026-01-01T00:00:00Z", "to": "2026-01-02T00:00:00Z"}, "bad_tenant"),
        ("/v1/tenants/acme/usage", {"to": "2026-01-02T00:00:00Z"}, "bad_request"),
    ],
)
def test_bad_input_is_4xx_with_code(api: TestClient, path: str, params: dict[str, str], code: str) -> None:
    r = api.get(path, params=params)
    assert 400 <= r.status_code < 500, r.text
    assert r.json()["code"] == code


@pytest.mark.clickhouse
def test_service_endpoints(api: TestClient) -> None:
    assert api.get("/healthz").text == "ok"
    assert api.get("/readyz").status_code == 200
    api.get("/v1/tenants/acme/usage", params={"from": "x", "to": "y"})
    assert 'route="/v1/tenants/{tenant}/usage"' in api.get("/metrics").text
