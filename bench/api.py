"""Billing API latency over a month of minute rollups for many tenants (issue 5 and 15 targets).

Loads `tenants` x 20 sandboxes x 30 days of `usage_minute` rows (and the matching
`usage_hour` rows) into a ClickHouse 18.16 started in a temp dir, generated server-side with
INSERT ... SELECT FROM numbers(), then times, through the FastAPI app in-process
(TestClient: routing, auth, validation, queries, rating, JSON; no network hop), a random
tenant per request:
  - the monthly cost of one tenant (target p99 < 100 ms),
  - one day of usage at minute granularity (target p99 < 50 ms),
  - the month's draft invoice (computed on read; reported, no target).
Baseline, in the same run: the bare ClickHouse queries behind the first two (the same SQL
through the same driver), so the API's own share shows as a ratio.

`python -m bench.api` runs 100 tenants (about 2 minutes, 2 GB of temporary disk); the
issue's size is `python -m bench.api --tenants 1000` (about 15 minutes and 22 GB).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from billing.app import create_app
from billing.invoices import usage_sums
from billing.keys import OPERATOR, create_key
from billing.plans import load_book
from billing.settings import ApiSettings
from billing.timeparse import format_ms
from billing.usage import METRICS, UsageQuery, run_usage
from contracts.clickhouse import tables
from contracts.clock import wall_ms
from contracts.quantities import COLUMNS as QUANTITIES
from pipeline.schema import migrate
from sandmeter.stack import Stack, StackSettings
from sandmeter.stack.procs import free_port

SANDBOXES, DAYS, DAY = 20, 30, 86_400_000
START_MS = 1_798_761_600_000  # 2027-01-01T00:00:00Z
DEFAULT_TENANTS, FULL_TENANTS = 100, 1000
ROOT = Path(__file__).resolve().parents[1]


def load(ch: Any, tenants: int) -> tuple[int, float]:
    minutes = DAYS * 1440
    rows = tenants * SANDBOXES * minutes
    vals = ", ".join(f"1000 + (number % {97 + i})" for i, _ in enumerate(QUANTITIES))
    t0 = time.perf_counter()
    tb = tables(ch)
    step = SANDBOXES * minutes  # one tenant per INSERT: progress, and bounded server memory
    for t in range(tenants):
        ch.execute(
            f"INSERT INTO {tb.usage_minute} (tenant, sandbox_id, node, minute_ms, {', '.join(QUANTITIES)}, intervals) "
            f"SELECT 'tenant-{t:04d}', concat('sb-', toString(intDiv(number, {minutes}))), 'node-1', "
            f"{START_MS} + (number % {minutes}) * 60000, {vals}, 12 FROM numbers({step})"
        )
        ch.execute(
            f"INSERT INTO {tb.usage_hour} (tenant, sandbox_id, node, hour_ms, {', '.join(QUANTITIES)}, intervals) "
            f"SELECT tenant, sandbox_id, any(node), intDiv(minute_ms, 3600000) * 3600000 AS h, "
            + ", ".join(f"sum({q})" for q in QUANTITIES)
            + f", sum(intervals) FROM {tb.usage_minute} WHERE tenant = 'tenant-{t:04d}' GROUP BY tenant, sandbox_id, h"
        )
        if t % 50 == 49 or t == tenants - 1:
            print(f"  loaded {t + 1}/{tenants} tenants ({(t + 1) * step:,} minute rows) in "
                  f"{time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)  # fmt: skip
    return rows, time.perf_counter() - t0


def pct(xs: list[float], p: float) -> float:
    return sorted(xs)[min(len(xs) - 1, int(len(xs) * p))]


def timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1000


def line(what: str, xs: list[float], base: list[float] | None = None, target: str = "") -> str:
    out = f"  {what}: p50 {statistics.median(xs):.1f} ms, p99 {pct(xs, 0.99):.1f} ms over {len(xs)} requests"
    if base:
        out += (f" (bare ClickHouse query p50 {statistics.median(base):.1f} ms, p99 {pct(base, 0.99):.1f} ms: "
                f"API/query {statistics.median(xs) / statistics.median(base):.2f}x at p50)")  # fmt: skip
    return out + (f" [{target}]" if target else "")


def main(tenants: int = DEFAULT_TENANTS, requests: int = 300) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        st = Stack(StackSettings(state_dir=Path(tmp), kafka_port=free_port(), clickhouse_tcp_port=free_port(),
                                 clickhouse_http_port=free_port()))  # fmt: skip
        st.up()
        try:
            ch = st.ch("sandmeter", home="system")  # the admin: one connection for everything here
            migrate(ch, wall_ms())
            ch = st.ch("sandmeter")
            rows, secs = load(ch, tenants)
            key = create_key(ch, OPERATOR)[1]
            app = create_app(ApiSettings(key_cache_s=3600), lambda: ch, book=load_book(ROOT / "plans"),
                             clock_ms=lambda: START_MS + 40 * DAY)  # fmt: skip
            rng = random.Random(1)
            h = {"Authorization": f"Bearer {key}"}
            month = {"from": format_ms(START_MS), "to": format_ms(START_MS + DAYS * DAY)}
            cost, day, invoice, cost_sql, day_sql = [], [], [], [], []
            with TestClient(app) as c:
                for i in range(requests + 20):  # the first 20 warm up
                    t = f"tenant-{rng.randrange(tenants):04d}"
                    d0 = START_MS + rng.randrange(DAYS) * DAY
                    q = {"from": format_ms(d0), "to": format_ms(d0 + DAY), "granularity": "minute"}
                    uq = UsageQuery(t, d0, d0 + DAY, "minute", tuple(METRICS), False)
                    r: list[Any] = []
                    ms = [
                        timed(lambda: r.append(c.get(f"/v1/tenants/{t}/cost", params=month, headers=h))),  # noqa: B023
                        timed(lambda: r.append(c.get(f"/v1/tenants/{t}/usage", params=q, headers=h))),  # noqa: B023
                        timed(lambda: r.append(c.get(f"/v1/tenants/{t}/invoices/2027-01", headers=h))),  # noqa: B023
                        timed(lambda: usage_sums(ch, t, START_MS, START_MS + DAYS * DAY)),  # noqa: B023
                        timed(lambda: run_usage(ch, uq, 10_000, None)),  # noqa: B023
                    ]
                    assert [x.status_code for x in r] == [200, 200, 200], [x.text[:300] for x in r]
                    assert len(r[1].json()["series"]) == 1440
                    if i >= 20:
                        for xs, v in zip((cost, day, invoice, cost_sql, day_sql), ms, strict=True):
                            xs.append(v)
            print(f"api: {tenants} tenants x {SANDBOXES} sandboxes x {DAYS} days = {rows:,} minute rows "
                  f"(loaded in {secs:.0f} s)")  # fmt: skip
            print(line("monthly cost of one tenant", cost, cost_sql, "target p99 < 100 ms"))
            print(line("one day at minute granularity", day, day_sql, "target p99 < 50 ms"))
            print(line("the month's draft invoice (computed on read)", invoice))
        finally:
            st.down()


if __name__ == "__main__":
    p = argparse.ArgumentParser(prog="python -m bench.api", description=__doc__.split("\n")[0])
    p.add_argument("--tenants", type=int, default=DEFAULT_TENANTS, help=f"{FULL_TENANTS} is the issue's size")
    p.add_argument("--requests", type=int, default=300)
    a = p.parse_args()
    main(a.tenants, a.requests)
