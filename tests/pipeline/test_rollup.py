"""Rollups against the real ClickHouse: exact, idempotent, and completed by late intervals."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest

from contracts.names import Tables
from contracts.quantities import COLUMNS as QUANTITIES
from contracts.quantities import HOUR_MS, MINUTE_MS
from pipeline.accounted import Accounted
from pipeline.accounting import USAGE_COLUMNS
from pipeline.rollup import DirtyBuckets, rollup_statements
from pipeline.writer import ClickHouseWriter

T0 = 1_790_000_000_000 // HOUR_MS * HOUR_MS  # an hour boundary


def intervals(tenant: str, sandbox: str, ends: list[int], cpu: int = 1000) -> pd.DataFrame:
    rows = []
    for i, end in enumerate(ends):
        start = ends[i - 1] if i else end - 5000
        rows.append((tenant, sandbox, "node-1", start, end, cpu, 1000 * (end - start), 7, 8, 1, 2, 3, 4, f"b{end}"))
    return pd.DataFrame(rows, columns=list(USAGE_COLUMNS))


def write(w: ClickHouseWriter, df: pd.DataFrame, dirty: DirtyBuckets) -> None:
    w.write(w.prepare(Accounted(usage=df)))
    dirty.note(df)


def sums(ch: Any, table: str, tenant: str) -> list[int]:
    cols = ", ".join(f"sum({q})" for q in QUANTITIES)
    return [int(x) for x in ch.execute(f"SELECT {cols} FROM {table} FINAL WHERE tenant = '{tenant}'")[0]]


def test_statements_cover_whole_buckets_of_every_dirty_tenant() -> None:
    (minute_sql, mp), (tenant_sql, tp), (hour_sql, hp) = rollup_statements(
        Tables("db"), {"b": (T0 + MINUTE_MS, T0 + 3 * MINUTE_MS), "a": (T0, T0)}
    )
    assert mp == tp == {"tenants": ("a", "b"), "lo": T0, "hi": T0 + 4 * MINUTE_MS}
    assert hp == {"tenants": ("a", "b"), "lo": T0, "hi": T0 + HOUR_MS}
    assert "FINAL" in minute_sql and "FINAL" in tenant_sql and "FINAL" in hour_sql
    assert rollup_statements(Tables("db"), {}) == []


def test_dirty_buckets_use_the_minute_of_the_last_millisecond() -> None:
    d = DirtyBuckets()
    d.note(intervals("a", "s", [T0 + MINUTE_MS, T0 + MINUTE_MS + 1]))  # end == boundary belongs to the minute before
    assert d.take() == {"a": (T0, T0 + MINUTE_MS)}
    assert not d


@pytest.mark.clickhouse
def test_rollups_equal_the_deduplicated_intervals_and_follow_late_ones(db: tuple[str, Any]) -> None:
    _, ch = db
    w = ClickHouseWriter(ch, keep_raw=False)
    dirty = DirtyBuckets()
    ends = [T0 + 5000 * k for k in range(1, 40)]  # 3 min 15 s of 5 s intervals, over 4 minutes
    write(w, intervals("acme", "s1", ends), dirty)
    write(w, intervals("acme", "s1", ends[:10]), dirty)  # a replay: identical rows
    write(w, intervals("beta", "s9", [T0 + HOUR_MS + 1000]), dirty)  # the next hour
    w.roll(dirty.take())
    truth = sums(ch, "usage_intervals", "acme")
    assert truth[0] == 39 * 1000
    assert sums(ch, "usage_minute", "acme") == truth
    assert sums(ch, "usage_hour", "acme") == truth
    per_min = ch.execute("SELECT minute_ms, intervals FROM usage_minute FINAL WHERE tenant = 'acme' ORDER BY minute_ms")
    assert [(int(m) - T0, int(c)) for m, c in per_min] == [(0, 12), (60_000, 12), (120_000, 12), (180_000, 3)]
    hours = ch.execute("SELECT tenant, hour_ms, intervals FROM usage_hour FINAL ORDER BY tenant")
    assert [(t, int(h) - T0, int(c)) for t, h, c in hours] == [("acme", 0, 39), ("beta", HOUR_MS, 1)]

    w.roll({"acme": (T0, T0 + 3 * MINUTE_MS)})  # recomputed again: nothing changes
    assert sums(ch, "usage_hour", "acme") == truth
    # a late interval for a rolled-up minute (another sandbox) completes it
    write(w, intervals("acme", "s2", [T0 + 30_000], cpu=5), dirty)
    w.roll(dirty.take())
    assert sums(ch, "usage_minute", "acme")[0] == sums(ch, "usage_hour", "acme")[0] == 39 * 1000 + 5
    minute0 = ch.execute(f"SELECT sum(intervals) FROM usage_minute FINAL WHERE tenant = 'acme' AND minute_ms = {T0}")
    assert int(minute0[0][0]) == 13
    assert int(ch.execute("SELECT count() FROM usage_minute FINAL")[0][0]) == 4 + 1 + 1  # s1, s2, beta
