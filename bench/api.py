"""Billing API latency over a month of minute rollups for many tenants (issue 5 and 15 targets).

Loads `tenants` x 20 sandboxes x 30 days of `usage_minute` rows into a ClickHouse 18.16
started in a temp dir, generated server-side with INSERT ... SELECT FROM numbers(), and the
matching `usage_hour` and `usage_tenant_minute` rows with the processor's own rollup
statements (pipeline/rollup.py), then times, through the FastAPI app in-process
(TestClient: routing, auth, validation, queries, rating, JSON; no network hop), a random
tenant per request:
  - the monthly cost of one tenant (target p99 < 100 ms),
  - one day of usage at minute granularity (target p99 < 50 ms),
  - the month's draft invoice (computed on read; reported, no target).
Baseline, in the same run: each request's own SQL, recorded as the route sends it (statements,
parameters and settings) and run again at once directly through clickhouse-driver, so every
route's p99 is set against its own queries' p99 (issue 19: at most 1.5x).

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

from bench import local_stack
from billing.app import create_app
from billing.keys import OPERATOR, create_key
from billing.plans import load_book
from billing.settings import ApiSettings
from billing.timeparse import format_ms
from contracts.clickhouse import tables
from contracts.clock import wall_ms
from contracts.quantities import COLUMNS as QUANTITIES
from pipeline.rollup import rollup_statements
from pipeline.schema import migrate

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
        # the hour and tenant-minute rollups as the processor computes them: its own statements
        # (its minute statement finds no intervals here and writes nothing)
        for sql, params in rollup_statements(tb, {f"tenant-{t:04d}": (START_MS, START_MS + DAYS * DAY - 60_000)}):
            ch.execute(sql, params)
        if t % 50 == 49 or t == tenants - 1:
            print(f"  loaded {t + 1}/{tenants} tenants ({(t + 1) * step:,} minute rows) in "
                  f"{time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)  # fmt: skip
    return rows, time.perf_counter() - t0


class Recording:
    """The API's ClickHouse client, noting every statement a request sends, to run it again bare."""

    def __init__(self, ch: Any) -> None:
        self.ch, self.calls = ch, list[tuple[str, Any, dict[str, Any] | None, dict[str, Any]]]()
        self.tables = ch.tables  # the installation's qualified table names, as client() carries them

    def execute(self, sql: str, params: Any = None, settings: dict[str, Any] | None = None, **kw: Any) -> Any:
        self.calls.append((sql, params, settings, kw))
        return self.ch.execute(sql, params, settings=settings, **kw)

    def replay(self) -> float:
        """Milliseconds to run the noted statements again directly; forgets them."""
        calls, self.calls = self.calls, []
        t0 = time.perf_counter()
        for sql, params, settings, kw in calls:
            self.ch.execute(sql, params, settings=settings, **kw)
        return (time.perf_counter() - t0) * 1000


def pct(xs: list[float], p: float) -> float:
    return sorted(xs)[min(len(xs) - 1, int(len(xs) * p))]


def timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1000


def line(what: str, xs: list[float], base: list[float], target: str = "") -> str:
    p99, b99 = pct(xs, 0.99), pct(base, 0.99)
    return (
        f"  {what}: p50 {statistics.median(xs):.1f} ms, p99 {p99:.1f} ms over {len(xs)} requests (its SQL run "
        f"directly: p50 {statistics.median(base):.1f} ms, p99 {b99:.1f} ms); API/SQL p99 {p99 / b99:.2f}x "
        f"[target <= 1.5x{'; ' + target if target else ''}]"
    )


def main(tenants: int = DEFAULT_TENANTS, requests: int = 300) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        st = local_stack(Path(tmp))
        st.up()
        try:
            ch = st.ch("sandmeter", home="system")  # the admin: one connection for everything here
            migrate(ch, wall_ms())
            ch = st.ch("sandmeter")
            rows, secs = load(ch, tenants)
            key = create_key(ch, OPERATOR)[1]
            rec = Recording(ch)
            app = create_app(ApiSettings(key_cache_s=3600), lambda: rec, book=load_book(ROOT / "plans"),
                             clock_ms=lambda: START_MS + 40 * DAY)  # fmt: skip
            rng = random.Random(1)
            h = {"Authorization": f"Bearer {key}"}
            month = {"from": format_ms(START_MS), "to": format_ms(START_MS + DAYS * DAY)}
            routes = {  # name -> (path, params, target beside the ratio)
                "monthly cost of one tenant": ("/v1/tenants/{t}/cost", "month", ""),
                "one day at minute granularity": ("/v1/tenants/{t}/usage", "day", "p99 <= 25 ms at 1,000 tenants"),
                "the month's draft invoice (computed on read)": ("/v1/tenants/{t}/invoices/2027-01", "", ""),
                "the tenant's invoice list": ("/v1/tenants/{t}/invoices", "", ""),
            }
            api: dict[str, list[float]] = {k: [] for k in routes}
            sql: dict[str, list[float]] = {k: [] for k in routes}
            with TestClient(app) as c:
                for i in range(requests + 20):  # the first 20 warm up
                    t = f"tenant-{rng.randrange(tenants):04d}"
                    d0 = START_MS + rng.randrange(DAYS) * DAY
                    day = {"from": format_ms(d0), "to": format_ms(d0 + DAY), "granularity": "minute"}
                    params: dict[str, dict[str, str]] = {"month": month, "day": day, "": {}}
                    for name, (path, which, _) in routes.items():
                        rec.calls = []
                        r: list[Any] = []
                        ms = timed(lambda: r.append(c.get(path.format(t=t), params=params[which], headers=h)))  # noqa: B023
                        assert r[0].status_code == 200, r[0].text[:300]
                        if which == "day":
                            assert len(r[0].json()["series"]) == 1440
                        base = rec.replay()
                        if i >= 20:
                            api[name].append(ms)
                            sql[name].append(base)
            print(f"api: {tenants} tenants x {SANDBOXES} sandboxes x {DAYS} days = {rows:,} minute rows "
                  f"(loaded in {secs:.0f} s)")  # fmt: skip
            for name, (_, _, target) in routes.items():
                print(line(name, api[name], sql[name], target))
        finally:
            st.down()


if __name__ == "__main__":
    p = argparse.ArgumentParser(prog="python -m bench.api", description=__doc__.split("\n")[0])
    p.add_argument("--tenants", type=int, default=DEFAULT_TENANTS, help=f"{FULL_TENANTS} is the issue's size")
    p.add_argument("--requests", type=int, default=300)
    a = p.parse_args()
    main(a.tenants, a.requests)
