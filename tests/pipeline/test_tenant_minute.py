"""The tenant-minute rollup against the real ClickHouse: for any split of the intervals into
flushes, any replays and any rollup cadence, each row is exactly the sum of the tenant's
per-sandbox minute rows (and of their `intervals`), which are exactly the deduplicated
intervals; and sums that overflow a UInt64 do not wrap (migrations/0008)."""

from __future__ import annotations

import uuid
from typing import Any

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contracts.quantities import COLUMNS as QUANTITIES
from contracts.quantities import HOUR_MS, MINUTE_MS
from pipeline.accounted import Accounted
from pipeline.accounting import USAGE_COLUMNS
from pipeline.reconcile import reconcile_rollups
from pipeline.rollup import DirtyBuckets
from pipeline.writer import ClickHouseWriter

pytestmark = pytest.mark.clickhouse
T0 = 1_790_000_000_000 // HOUR_MS * HOUR_MS
U64 = 2**64
# one interval's amount: small, or large enough that a few sandboxes' minute overflows a
# UInt64 while one sandbox's minute (at most 7 intervals here) still fits one
AMOUNT = st.one_of(st.integers(0, 1000), st.integers(2**60, 2**61))


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[dict[str, Any]], list[list[int]], list[bool]]:
    """(distinct intervals, flushes as lists of indexes into them with replays, roll after each?)"""
    keys = draw(
        st.sets(
            st.tuples(st.sampled_from("ab"), st.integers(0, 5), st.integers(0, 2), st.integers(1, 7)),
            min_size=1,
            max_size=40,
        )
    )  # (tenant, sandbox, minute, which 5 s step of it ends the interval): at most 7 per sandbox-minute
    rows = []
    for tenant, sandbox, minute, step in sorted(keys):
        end = T0 + minute * MINUTE_MS + step * 5000
        rows.append(
            {"tenant": tenant, "sandbox_id": f"s{sandbox}", "node": "n1", "start_ms": end - 5000, "end_ms": end}
            | {q: draw(AMOUNT) for q in QUANTITIES}
            | {"batch_id": f"b{end}"}
        )
    order = draw(st.permutations(range(len(rows))))
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(rows) - 1)), max_size=5)))
    flushes = [list(order[a:b]) for a, b in zip([0, *cuts], [*cuts, len(rows)], strict=True) if order[a:b]]
    for _ in range(draw(st.integers(0, 3))):  # replays: rows already written, written again
        at = draw(st.integers(1, len(flushes)))
        seen = [i for f in flushes[:at] for i in f]
        flushes.insert(at, draw(st.lists(st.sampled_from(seen), min_size=1, max_size=8)))
    rolls = draw(st.lists(st.booleans(), min_size=len(flushes), max_size=len(flushes)))
    return rows, flushes, rolls


def tenant_minutes(ch: Any, sql: str) -> dict[tuple[str, int], tuple[int, ...]]:
    return {(str(r[0]), int(r[1])): tuple(int(x) for x in r[2:]) for r in ch.execute(sql)}


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(scenario=scenarios())
def test_tenant_minutes_are_the_sums_of_the_sandbox_minutes_for_any_flushes(
    db: tuple[str, Any], scenario: tuple[list[dict[str, Any]], list[list[int]], list[bool]]
) -> None:
    _, ch = db
    rows, flushes, rolls = scenario
    run = uuid.uuid4().hex[:8]  # this example's own tenants: the database is shared by the examples
    df = pd.DataFrame(rows, columns=list(USAGE_COLUMNS)).astype({q: "uint64" for q in QUANTITIES})
    df["tenant"] = run + df["tenant"]
    w = ClickHouseWriter(ch, keep_raw=False)
    dirty = DirtyBuckets()
    for flush, roll in zip(flushes, rolls, strict=True):
        part = df.iloc[flush].reset_index(drop=True)
        w.write(w.prepare(Accounted(usage=part)))
        dirty.note(part)
        if roll:
            w.roll(dirty.take())
    if dirty:
        w.roll(dirty.take())  # the checkpoint that ends the run rolls up what is left

    cols = ", ".join(QUANTITIES)
    mine = f"tenant LIKE '{run}%'"
    stored = tenant_minutes(
        ch, f"SELECT tenant, minute_ms, {cols}, intervals FROM usage_tenant_minute FINAL WHERE {mine}"
    )
    sums = ", ".join(f"sum(toDecimal128({q}, 0))" for q in QUANTITIES)
    summed = tenant_minutes(
        ch,
        f"SELECT tenant, minute_ms, {sums}, sum(intervals) FROM usage_minute FINAL WHERE {mine} "
        "GROUP BY tenant, minute_ms",
    )
    assert stored == summed
    # and both are the distinct intervals, summed exactly (Python's integers do not wrap)
    truth: dict[tuple[str, int], list[int]] = {}
    for r in rows:
        key = (run + r["tenant"], (r["end_ms"] - 1) // MINUTE_MS * MINUTE_MS)
        acc = truth.setdefault(key, [0] * (len(QUANTITIES) + 1))
        for i, q in enumerate(QUANTITIES):
            acc[i] += r[q]
        acc[-1] += 1
    assert stored == {k: tuple(v) for k, v in truth.items()}
    assert reconcile_rollups(ch, T0, T0 + HOUR_MS) == {}  # nothing disagrees


@pytest.mark.clickhouse
def test_a_tenant_minute_beyond_uint64_does_not_wrap_and_reconcile_repairs_a_stale_one(db: tuple[str, Any]) -> None:
    _, ch = db
    big, n = 2**62 + 12345, 5  # an amount the writer stores for one interval (< 2^63), in five sandboxes
    assert n * big > U64  # the tenant's minute needs more than 64 bits
    rows = [
        {"tenant": "wide", "sandbox_id": f"s{i}", "node": "n1", "start_ms": T0, "end_ms": T0 + 5000}
        | {q: big for q in QUANTITIES}
        | {"batch_id": "b"}
        for i in range(n)
    ]
    df = pd.DataFrame(rows, columns=list(USAGE_COLUMNS)).astype({q: "uint64" for q in QUANTITIES})
    w = ClickHouseWriter(ch, keep_raw=False)
    w.write(w.prepare(Accounted(usage=df)))
    dirty = DirtyBuckets()
    dirty.note(df)
    w.roll(dirty.take())
    got = ch.execute(f"SELECT {', '.join(QUANTITIES)}, intervals FROM usage_tenant_minute FINAL WHERE tenant = 'wide'")
    assert [int(x) for x in got[0]] == [n * big] * len(QUANTITIES) + [n]

    # a tenant-minute computed before one of its sandbox minutes arrived (as on a replica that
    # lacked a part): reconcile finds it from the minutes and recomputes it
    ch.execute(
        "INSERT INTO usage_tenant_minute (tenant, minute_ms, cpu_used_us, intervals) VALUES",
        [("wide", T0, 1, 1)],
        settings={"use_numpy": False},
    )
    ch.execute("OPTIMIZE TABLE usage_tenant_minute FINAL")  # the lower version is gone after a merge anyway
    assert reconcile_rollups(ch, T0, T0 + MINUTE_MS) == {}  # the newer (5-interval) row won: nothing stale
    ch.execute("TRUNCATE TABLE usage_tenant_minute")
    assert reconcile_rollups(ch, T0, T0 + MINUTE_MS) == {"wide": (T0, T0)}
    again = ch.execute("SELECT cpu_used_us, intervals FROM usage_tenant_minute FINAL WHERE tenant = 'wide'")
    assert [int(x) for x in again[0]] == [n * big, n]
