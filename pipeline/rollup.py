"""Minute (per sandbox, per tenant) and hour rollups of the deduplicated intervals (docs/metering.md).

The processor notes which tenants and minutes each flush wrote and, before each checkpoint,
recomputes those buckets whole: a rollup row is a pure function of the intervals stored at
that moment, versioned by how many it sums. Re-running it (a replay, a second processor
touching the same minute) can only replace a row with an equal or more complete one, so
rollups inherit the intervals' exactly-once property instead of summing duplicates.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from contracts import names as n
from contracts.quantities import COLUMNS, HOUR_MS, MINUTE_MS, exact_sum


@dataclass
class DirtyBuckets:
    """Per tenant, the first and last minute (epoch ms) written since the last rollup."""

    minutes: dict[str, tuple[int, int]] = field(default_factory=dict)

    def note(self, usage: pd.DataFrame) -> None:
        """Remembers the buckets of a flush's usage rows (one groupby per flush)."""
        if usage.empty:
            return
        minute = (usage["end_ms"].astype("int64") - 1) // MINUTE_MS * MINUTE_MS
        span = minute.groupby(usage["tenant"]).agg(["min", "max"])
        for tenant, lo, hi in zip(span.index.tolist(), span["min"].tolist(), span["max"].tolist(), strict=True):
            old = self.minutes.get(str(tenant))
            self.minutes[str(tenant)] = (int(lo), int(hi)) if old is None else (min(old[0], lo), max(old[1], hi))

    def __bool__(self) -> bool:
        return bool(self.minutes)

    def take(self) -> dict[str, tuple[int, int]]:
        out, self.minutes = self.minutes, {}
        return out


def rollup_statements(t: n.Tables, dirty: dict[str, tuple[int, int]]) -> list[tuple[str, dict[str, object]]]:
    """INSERT ... SELECT statements recomputing the minute, then the tenant-minute and the hour,
    buckets of `dirty`.

    One set for all tenants, over the union of their ranges: recomputing a bucket nobody
    touched rewrites it unchanged, which is cheaper than one statement per tenant.
    """
    if not dirty:
        return []
    tenants = tuple(sorted(dirty))
    lo = min(r[0] for r in dirty.values())
    hi = max(r[1] for r in dirty.values()) + MINUTE_MS  # exclusive end of the last minute
    h_lo, h_hi = lo // HOUR_MS * HOUR_MS, -(-hi // HOUR_MS) * HOUR_MS
    cols = ", ".join(COLUMNS)
    sums = ", ".join(f"sum({q}) AS {q}" for q in COLUMNS)
    minute = (
        f"INSERT INTO {t.usage_minute} (tenant, sandbox_id, node, minute_ms, {cols}, intervals) "
        f"SELECT tenant, sandbox_id, any(node), intDiv(end_ms - 1, {MINUTE_MS}) * {MINUTE_MS} AS m, {sums}, count() "
        f"FROM {t.usage} FINAL "
        "WHERE tenant IN %(tenants)s AND end_ms > %(lo)s AND end_ms <= %(hi)s "
        "GROUP BY tenant, sandbox_id, m"
    )
    hour = (
        f"INSERT INTO {t.usage_hour} (tenant, sandbox_id, node, hour_ms, {cols}, intervals) "
        f"SELECT tenant, sandbox_id, any(node), intDiv(minute_ms, {HOUR_MS}) * {HOUR_MS} AS h, {sums}, "
        "sum(intervals) "
        f"FROM {t.usage_minute} FINAL "
        "WHERE tenant IN %(tenants)s AND minute_ms >= %(lo)s AND minute_ms < %(hi)s "
        "GROUP BY tenant, sandbox_id, h"
    )
    return [
        (minute, {"tenants": tenants, "lo": lo, "hi": hi}),
        (tenant_minute_sql(t), {"tenants": tenants, "lo": lo, "hi": hi}),
        (hour, {"tenants": tenants, "lo": h_lo, "hi": h_hi}),
    ]


def tenant_minute_sql(t: n.Tables) -> str:
    """The tenant-minute recomputation (usage_minute FINAL summed over sandboxes) of the tenants
    and minutes [lo, hi) its parameters name. Sums are Decimal128: a UInt64 sum over a tenant's
    sandboxes could wrap (migrations/0008); the sum of `intervals` is the row's version."""
    sums = ", ".join(exact_sum(q) for q in COLUMNS)  # by position: no alias shadows a column
    return (
        f"INSERT INTO {t.usage_tenant_minute} (tenant, minute_ms, {', '.join(COLUMNS)}, intervals) "
        f"SELECT tenant, minute_ms, {sums}, sum(intervals) "
        f"FROM {t.usage_minute} FINAL "
        "WHERE tenant IN %(tenants)s AND minute_ms >= %(lo)s AND minute_ms < %(hi)s "
        "GROUP BY tenant, minute_ms"
    )
