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
def _minutes(t: n.Tables) -> str:
    return (
        "SELECT tenant, m FROM ("
        f" SELECT tenant, sandbox_id, toUInt64(intDiv(end_ms - 1, {MINUTE_MS}) * {MINUTE_MS}) AS m, count() AS rows"
        f" FROM {t.usage} FINAL WHERE end_ms > %(lo)s AND end_ms <= %(hi)s GROUP BY tenant, sandbox_id, m"
        ") AS usage ALL LEFT JOIN ("
        f" SELECT tenant, sandbox_id, minute_ms AS m, intervals FROM {t.usage_minute} FINAL"
        " WHERE minute_ms >= %(lo)s AND minute_ms < %(hi)s"
        ") AS rolled USING (tenant, sandbox_id, m) WHERE rows != intervals"
    )


def _hours(t: n.Tables) -> str:
    return (
        "SELECT tenant, h FROM ("
        f" SELECT tenant, sandbox_id, toUInt64(intDiv(minute_ms, {HOUR_MS}) * {HOUR_MS}) AS h, sum(intervals) AS rows"
        f" FROM {t.usage_minute} FINAL WHERE minute_ms >= %(lo)s AND minute_ms < %(hi)s GROUP BY tenant, sandbox_id, h"
        ") AS minutes ALL LEFT JOIN ("
        f" SELECT tenant, sandbox_id, hour_ms AS h, intervals FROM {t.usage_hour} FINAL"
        " WHERE hour_ms >= %(lo)s AND hour_ms < %(hi)s"
        ") AS rolled USING (tenant, sandbox_id, h) WHERE rows != intervals"
    )


def _tenant_minutes(t: n.Tables) -> str:
    return (
        "SELECT tenant, m FROM ("
        " SELECT tenant, minute_ms AS m, sum(intervals) AS rows"
        f" FROM {t.usage_minute} FINAL WHERE minute_ms >= %(lo)s AND minute_ms < %(hi)s GROUP BY tenant, m"
        ") AS minutes ALL LEFT JOIN ("
        f" SELECT tenant, minute_ms AS m, intervals FROM {t.usage_tenant_minute} FINAL"
        " WHERE minute_ms >= %(lo)s AND minute_ms < %(hi)s"
        ") AS rolled USING (tenant, m) WHERE rows != intervals"
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
