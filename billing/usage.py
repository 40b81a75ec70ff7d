"""Usage queries over `usage_intervals`, deduplicated at read time (FINAL)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final

from billing.errors import bad_request
from contracts.names import T_USAGE, T_USAGE_HOUR, T_USAGE_MINUTE
from contracts.quantities import BY_API_NAME, HOUR_MS, MINUTE_MS

# API metric -> (column, divisor to the API unit, a power of ten). Values are exact.
METRICS: Final[dict[str, tuple[str, int]]] = {m: (q.column, q.api_divisor) for m, q in BY_API_NAME.items()}
GRANULARITY_MS: Final = {"second": 1000, "minute": MINUTE_MS, "hour": HOUR_MS, "day": 24 * HOUR_MS}
TENANT_RE: Final = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")


def check_tenant(tenant: str) -> str:
    if not TENANT_RE.match(tenant):
        raise bad_request("bad_tenant", "tenant ids are 1-63 of [a-z0-9._-], starting alphanumeric")
    return tenant


@dataclass(frozen=True)
class UsageQuery:
    tenant: str
    from_ms: int
    to_ms: int
    granularity: str
    metrics: tuple[str, ...]
    group_by_sandbox: bool

    def validate(self, max_rows: int) -> None:
        check_tenant(self.tenant)
        if self.from_ms >= self.to_ms:
            raise bad_request("bad_range", "`from` must be before `to`")
        unknown = [m for m in self.metrics if m not in METRICS]
        if unknown:
            raise bad_request("unknown_metric", f"unknown metric {unknown[0]!r}; known: {', '.join(METRICS)}")
        if self.granularity not in GRANULARITY_MS:
            raise bad_request("bad_granularity", f"granularity is one of {', '.join(GRANULARITY_MS)}")
        buckets = -(-(self.to_ms - self.from_ms) // GRANULARITY_MS[self.granularity])
        if buckets > max_rows:
            raise bad_request(
                "too_many_rows", f"{buckets} {self.granularity} buckets exceed the cap of {max_rows}; coarsen it"
            )


def source(from_ms: int, to_ms: int, granularity_ms: int | None) -> tuple[str, str, str]:
    """(table, bucket expression, range condition): the coarsest table that answers exactly.

    A rollup row holds the intervals whose last millisecond falls in its bucket, so it
    answers a range whose bounds sit on its bucket edges (and, when the caller buckets by
    `granularity_ms`, whose bucket divides it); anything else reads the intervals. With no
    granularity (one total over the range) the bucket expression is 0.
    """
    g = granularity_ms or 0
    for table, col, size in ((T_USAGE_HOUR, "hour_ms", HOUR_MS), (T_USAGE_MINUTE, "minute_ms", MINUTE_MS)):
        if g % size == 0 and from_ms % size == 0 and to_ms % size == 0:
            bucket = f"intDiv({col}, {g}) * {g}" if g else "0"
            return table, bucket, f"{col} >= %(from_ms)s AND {col} < %(to_ms)s"
    bucket = f"intDiv(end_ms - 1, {g}) * {g}" if g else "0"
    return T_USAGE, bucket, "end_ms > %(from_ms)s AND end_ms <= %(to_ms)s"


def run_usage(ch: Any, q: UsageQuery) -> list[dict[str, Any]]:
    """Intervals count whole in the bucket holding their last millisecond (docs/metering.md)."""
    g = GRANULARITY_MS[q.granularity]
    table, bucket, cond = source(q.from_ms, q.to_ms, g)
    sums = ", ".join(f"toString(sum(toDecimal128({METRICS[m][0]}, 0))) AS {m}" for m in q.metrics)
    by = ", sandbox_id" if q.group_by_sandbox else ""
    sql = (
        f"SELECT {bucket} AS bucket{by}, {sums} "
        f"FROM {table} FINAL "
        f"WHERE tenant = %(tenant)s AND {cond} "
        f"GROUP BY bucket{by} ORDER BY bucket{by}"
    )
    rows = ch.execute(sql, {"tenant": q.tenant, "from_ms": q.from_ms, "to_ms": q.to_ms})
    out = []
    for r in rows:
        item: dict[str, Any] = {"bucket_ms": int(r[0])}
        vals = r[1:]
        if q.group_by_sandbox:
            item["sandbox_id"] = r[1]
            vals = r[2:]
        for m, v in zip(q.metrics, vals, strict=True):
            item[m] = int(v)  # the column's integer sum; `scaled` turns it into the API unit
        out.append(item)
    return out


def scaled(total: int, metric: str) -> str:
    """An integer column sum in the metric's API unit, exactly, as the shortest decimal string
    (1500 us -> "1.5" ms); plain integer arithmetic, no Decimal per value."""
    div = METRICS[metric][1]
    if div == 1:
        return str(total)
    q, r = divmod(total, div)
    if not r:
        return str(q)
    return f"{q}.{str(r).rjust(len(str(div)) - 1, '0').rstrip('0')}"


def list_tenants(ch: Any, from_ms: int, to_ms: int) -> list[str]:
    rows = ch.execute(
        f"SELECT DISTINCT tenant FROM {T_USAGE} WHERE end_ms > %(f)s AND end_ms <= %(t)s ORDER BY tenant",
        {"f": from_ms, "t": to_ms},
    )
    return [str(r[0]) for r in rows]
