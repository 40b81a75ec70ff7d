"""Rollup buckets that disagree with what they roll up, recomputed (`sandmeter reconcile`).

A rollup row stores how many deduplicated rows it sums (`intervals`). On a replicated cluster
a rollup can be computed on a replica that lacks a part its peer acknowledged a moment
before it went down; the part arrives when the peer is back, but nothing recomputes that
bucket (docs/architecture.md, "Replica loss"). This finds every minute whose `intervals`
differs from the count of its deduplicated intervals, and every tenant-minute and hour that
differs from the sum of its minutes, and recomputes those tenants' ranges with the
processor's own rollup statements: idempotent, so running it again, or beside a processor,
changes nothing more.
"""

from __future__ import annotations

from typing import Any

from contracts import names as n
from contracts.clickhouse import tables
from contracts.quantities import HOUR_MS, MINUTE_MS
from pipeline.rollup import rollup_statements


# both sides aliased (current ClickHouse requires it); key types equal (18.16 requires it)
def _disagreeing(keys: str, bucket: str, rows: str, below: str, cond: str, rolled: str, col: str) -> str:
    """(tenant, bucket) of every rollup row of `rolled` (bucket column `col`) whose `intervals`
    differs from `rows` counted over the table below it, grouped by `keys` and `bucket`."""
    return (
        "SELECT tenant, b FROM ("
        f" SELECT {keys}, {bucket} AS b, {rows} AS rows FROM {below} FINAL WHERE {cond} GROUP BY {keys}, b"
        ") AS below ALL LEFT JOIN ("
        f" SELECT {keys}, {col} AS b, intervals FROM {rolled} FINAL WHERE {col} >= %(lo)s AND {col} < %(hi)s"
        f") AS rolled USING ({keys}, b) WHERE rows != intervals"
    )


def _minutes(t: n.Tables) -> str:
    minute = f"toUInt64(intDiv(end_ms - 1, {MINUTE_MS}) * {MINUTE_MS})"
    ends = "end_ms > %(lo)s AND end_ms <= %(hi)s"
    return _disagreeing("tenant, sandbox_id", minute, "count()", t.usage, ends, t.usage_minute, "minute_ms")


_MINUTES_IN = "minute_ms >= %(lo)s AND minute_ms < %(hi)s"


def _hours(t: n.Tables) -> str:
    hour = f"toUInt64(intDiv(minute_ms, {HOUR_MS}) * {HOUR_MS})"
    return _disagreeing(
        "tenant, sandbox_id", hour, "sum(intervals)", t.usage_minute, _MINUTES_IN, t.usage_hour, "hour_ms"
    )


def _tenant_minutes(t: n.Tables) -> str:
    return _disagreeing(
        "tenant", "minute_ms", "sum(intervals)", t.usage_minute, _MINUTES_IN, t.usage_tenant_minute, "minute_ms"
    )


def stale_buckets(ch: Any, from_ms: int, to_ms: int) -> dict[str, tuple[int, int]]:
    """Per tenant, the first and last minute of its rollups that disagree, within the whole
    hours around [from_ms, to_ms)."""
    lo, hi = from_ms // HOUR_MS * HOUR_MS, -(-to_ms // HOUR_MS) * HOUR_MS
    stale: dict[str, tuple[int, int]] = {}

    def note(tenant: str, first: int, last: int) -> None:
        old = stale.get(tenant)
        stale[tenant] = (first, last) if old is None else (min(old[0], first), max(old[1], last))

    params = {"lo": lo, "hi": hi}
    t = tables(ch)
    for tenant, minute in ch.execute(_minutes(t), params, settings={"use_numpy": False}):
        note(str(tenant), int(minute), int(minute))
    for tenant, minute in ch.execute(_tenant_minutes(t), params, settings={"use_numpy": False}):
        note(str(tenant), int(minute), int(minute))
    for tenant, hour in ch.execute(_hours(t), params, settings={"use_numpy": False}):
        note(str(tenant), int(hour), int(hour) + HOUR_MS - MINUTE_MS)
    return stale


def reconcile_rollups(ch: Any, from_ms: int, to_ms: int) -> dict[str, tuple[int, int]]:
    """Recomputes the stale buckets of [from_ms, to_ms); returns what was stale."""
    stale = stale_buckets(ch, from_ms, to_ms)
    for sql, params in rollup_statements(tables(ch), stale):
        ch.execute(sql, params)
    return stale
