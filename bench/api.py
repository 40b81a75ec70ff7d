"""Billing API latency over a month of minute rollups for many tenants (issue 5 targets).

Loads `tenants` x 20 sandboxes x 30 days of `usage_minute` rows (and the matching
`usage_hour` rows) into a ClickHouse 18.16 started in a temp dir, generated server-side with
INSERT ... SELECT FROM numbers(), then times, through the FastAPI app in-process
(TestClient: routing, auth, queries, rating, JSON; no network hop):
  - the monthly cost of one tenant (random tenant per request),
  - one day of usage at minute granularity.
Prints p50 / p99 over `requests` requests each.
"""

from __future__ import annotations

import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from fastapi.testclient import TestClient

from billing.app import create_app
from billing.keys import OPERATOR, create_key
from billing.plans import load_book
from billing.settings import ApiSettings
from billing.timeparse import format_ms
from contracts import names as n
from contracts.clickhouse import client
from contracts.clock import wall_ms
from contracts.quantities import COLUMNS as QUANTITIES
from pipeline.schema import migrate
from sandmeter.stack import Stack, StackSettings
from sandmeter.stack.procs import free_port

SANDBOXES, DAYS = 20, 30
START_MS = 1_798_761_600_000  # 2027-01-01T00:00:00Z
ROOT = Path(__file__).resolve().parents[1]


def load(ch: object, tenants: int) -> tuple[int, float]:
    minutes = DAYS * 1440
    rows = tenants * SANDBOXES * minutes
    vals = ", ".join(f"1000 + (number % {97 + i})" for i, _ in enumerate(QUANTITIES))
    t0 = time.perf_counter()
    step = SANDBOXES * minutes  # one tenant per INSERT: progress, and bounded server memory
    for t in range(tenants):
        ch.execute(  # type: ignore[attr-defined]
            f"INSERT INTO {n.T_USAGE_MINUTE} (tenant, sandbox_id, node, minute_ms, {', '.join(QUANTITIES)}, intervals) "
            f"SELECT 'tenant-{t:04d}', concat('sb-', toString(intDiv(number, {minutes}))), 'node-1', "
            f"{START_MS} + (number % {minutes}) * 60000, {vals}, 12 FROM numbers({step})"
        )
        ch.execute(  # type: ignore[attr-defined]
            f"INSERT INTO {n.T_USAGE_HOUR} (tenant, sandbox_id, node, hour_ms, {', '.join(QUANTITIES)}, intervals) "
            f"SELECT tenant, sandbox_id, any(node), intDiv(minute_ms, 3600000) * 3600000 AS h, "
            + ", ".join(f"sum({q})" for q in QUANTITIES)
            + f", sum(intervals) FROM {n.T_USAGE_MINUTE} WHERE tenant = 'tenant-{t:04d}' GROUP BY tenant, sandbox_id, h"
        )
        if t % 50 == 49 or t == tenants - 1:
            print(f"  loaded {t + 1}/{tenants} tenants ({(t + 1) * step:,} minute rows) in "
                  f"{time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)  # fmt: skip
    return rows, time.perf_counter() - t0


def pct(xs: list[float], p: float) -> float:
    return sorted(xs)[min(len(xs) - 1, int(len(xs) * p))]


def main(tenants: int = 1000, requests: int = 300) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        st = Stack(StackSettings(state_dir=Path(tmp), kafka_port=free_port(), clickhouse_tcp_port=free_port(),
                                 clickhouse_http_port=free_port()))  # fmt: skip
        st.up()
        try:
            ch = client("127.0.0.1", st.settings.clickhouse_tcp_port, "default")
            migrate(ch, wall_ms())
            rows, secs = load(ch, tenants)
            key = create_key(ch, OPERATOR)[1]
            app = create_app(ApiSettings(key_cache_s=3600), lambda: ch, book=load_book(ROOT / "plans"))
            rng = random.Random(1)
            h = {"Authorization": f"Bearer {key}"}
            month = {"from": format_ms(START_MS), "to": format_ms(START_MS + DAYS * 86_400_000)}
            with TestClient(app) as c:
                cost, day = [], []
                for i in range(requests + 20):  # the first 20 warm up
                    t = f"tenant-{rng.randrange(tenants):04d}"
                    t0 = time.perf_counter()
                    r = c.get(f"/v1/tenants/{t}/cost", params=month, headers=h)
                    t1 = time.perf_counter()
                    d0 = START_MS + rng.randrange(DAYS) * 86_400_000
                    q = {"from": format_ms(d0), "to": format_ms(d0 + 86_400_000), "granularity": "minute"}
                    u = c.get(f"/v1/tenants/{t}/usage", params=q, headers=h)
                    t2 = time.perf_counter()
                    assert r.status_code == 200 and u.status_code == 200 and len(u.json()["series"]) == 1440
                    if i >= 20:
                        cost.append((t1 - t0) * 1000)
                        day.append((t2 - t1) * 1000)
            print(f"api: {tenants} tenants x {SANDBOXES} sandboxes x {DAYS} days = {rows:,} minute rows "
                  f"(loaded in {secs:.0f} s)")  # fmt: skip
            print(f"  monthly cost of one tenant: p50 {statistics.median(cost):.1f} ms, p99 {pct(cost, 0.99):.1f} ms "
                  f"over {len(cost)} requests (target p99 < 100 ms)")  # fmt: skip
            print(f"  one day at minute granularity: p50 {statistics.median(day):.1f} ms, p99 {pct(day, 0.99):.1f} ms "
                  f"over {len(day)} requests (target p99 < 50 ms)")  # fmt: skip
        finally:
            st.down()


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
