"""Usage queries over `usage_intervals` and its rollups, deduplicated at read time (FINAL).

Pages are keyset pages: a cursor is the last row's (bucket, sandbox), and the next page is
the rows after it in (bucket, sandbox) order, so any cursor is a valid position and a page
costs the same wherever it starts. Sandbox ids and tenants are compared as upper-case hex
of their bytes (the same order as the bytes), so a cursor never carries raw stored text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from billing.errors import invalid
from contracts.names import T_USAGE, T_USAGE_HOUR, T_USAGE_MINUTE
from contracts.quantities import BY_API_NAME, HOUR_MS, MINUTE_MS

DAY_MS: Final = 24 * HOUR_MS
# API metric -> (column, divisor to the API unit, a power of ten). Values are exact.
METRICS: Final[dict[str, tuple[str, int]]] = {m: (q.column, q.api_divisor) for m, q in BY_API_NAME.items()}
GRANULARITY_MS: Final = {"second": 1000, "minute": MINUTE_MS, "hour": HOUR_MS, "day": DAY_MS}


@dataclass(frozen=True)
class RangeCaps:
    """How long a range may be: reading the raw intervals (an exact range) costs far more per day
    than reading the minute or hour rollups, so it has its own, smaller cap."""

    max_days: int
    max_exact_days: int


def source(from_ms: int, to_ms: int, granularity_ms: int | None) -> tuple[str, str, str]:
    """(table, bucket expression, range condition): the coarsest table that answers exactly.

    A rollup row holds the intervals whose last millisecond falls in its bucket, so it
    answers a range whose bounds sit on its bucket edges (and, when the caller buckets by
    `granularity_ms`, whose bucket divides it); anything else reads the intervals. With no
    granularity (one total over the range) the bucket expression is 0. The condition reads
    its lower bound from %(lo)s, which is `from` or a page's later start.
    """
    g = granularity_ms or 0
    for table, col, size in ((T_USAGE_HOUR, "hour_ms", HOUR_MS), (T_USAGE_MINUTE, "minute_ms", MINUTE_MS)):
        if g % size == 0 and from_ms % size == 0 and to_ms % size == 0:
            bucket = f"intDiv({col}, {g}) * {g}" if g else "0"
            return table, bucket, f"{col} >= %(lo)s AND {col} < %(to_ms)s"
    bucket = f"intDiv(end_ms - 1, {g}) * {g}" if g else "0"
    return T_USAGE, bucket, "end_ms > %(lo)s AND end_ms <= %(to_ms)s"


def check_range(from_ms: int, to_ms: int, granularity_ms: int | None, caps: RangeCaps) -> None:
    """`from` before `to`, and the range within its cap (422 otherwise)."""
    if from_ms >= to_ms:
        raise invalid("bad_range", "`from` must be before `to`", "query.to")
    exact = source(from_ms, to_ms, granularity_ms)[0] == T_USAGE
    cap = caps.max_exact_days if exact else caps.max_days
    if to_ms - from_ms > cap * DAY_MS:
        why = (
            "bounds or granularity finer than a minute read the raw intervals"
            if exact
            else "ranges on whole minutes read the rollups"
        )
        raise invalid("range_too_long", f"at most {cap} days per request ({why}); split the range", "query.to")


@dataclass(frozen=True)
class UsageQuery:
    tenant: str
    from_ms: int
    to_ms: int
    granularity: str
    metrics: tuple[str, ...]
    group_by_sandbox: bool


@dataclass(frozen=True)
class Position:
    """Where a page starts: after this bucket (and, grouped by sandbox, this sandbox's hex)."""

    bucket_ms: int
    sandbox_hex: str = ""

    @classmethod
    def parse(cls, cursor: str) -> Position:  # the cursor matched params.USAGE_CURSOR already
        ms, _, hx = cursor.partition("-")
        return cls(int(ms), hx.upper())

    def __str__(self) -> str:
        return f"{self.bucket_ms}-{self.sandbox_hex}" if self.sandbox_hex else str(self.bucket_ms)


def _sums(metrics: tuple[str, ...]) -> str:
    return ", ".join(f"toString(sum(toDecimal128({METRICS[m][0]}, 0))) AS {m}" for m in metrics)


def run_usage(ch: Any, q: UsageQuery, limit: int, after: Position | None) -> tuple[list[tuple[Any, ...]], bool]:
    """Up to `limit` rows after `after` as (bucket ms, [sandbox hex, sandbox id,] sums as text...),
    and whether more follow. Intervals count whole in the bucket holding their last ms."""
    g = GRANULARITY_MS[q.granularity]
    table, bucket, cond = source(q.from_ms, q.to_ms, g)
    by = ", hex(sandbox_id) AS sbx, sandbox_id" if q.group_by_sandbox else ""
    keyset = ""
    if after is not None:
        keyset = (
            "AND (bucket > %(ab)s OR (bucket = %(ab)s AND sbx > %(ax)s)) " if q.group_by_sandbox
            else "AND bucket > %(ab)s "
        )  # fmt: skip
    sql = (
        f"SELECT {bucket} AS bucket{by}, {_sums(q.metrics)} FROM {table} FINAL "
        f"WHERE tenant = %(tenant)s AND {cond} {keyset}"
        f"GROUP BY bucket{', sandbox_id' if by else ''} "
        f"ORDER BY bucket{', sandbox_id' if by else ''} LIMIT {limit + 1}"
    )
    lo = max(q.from_ms, after.bucket_ms) if after is not None else q.from_ms  # a bucket starts at or before its rows
    params = {"tenant": q.tenant, "lo": lo, "to_ms": q.to_ms}
    if after is not None:
        params |= {"ab": after.bucket_ms, "ax": after.sandbox_hex}
    rows = ch.execute(sql, params, settings={"use_numpy": False})
    return rows[:limit], len(rows) > limit


def totals(ch: Any, q: UsageQuery) -> tuple[str, ...]:
    """Each metric's integer column sum over the whole range, as text."""
    table, _, cond = source(q.from_ms, q.to_ms, GRANULARITY_MS[q.granularity])
    rows = ch.execute(
        f"SELECT {_sums(q.metrics)} FROM {table} FINAL WHERE tenant = %(tenant)s AND {cond}",
        {"tenant": q.tenant, "lo": q.from_ms, "to_ms": q.to_ms},
        settings={"use_numpy": False},
    )
    return tuple(str(v) for v in rows[0])


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


def list_tenants(ch: Any, from_ms: int, to_ms: int, limit: int, after_hex: str | None) -> tuple[list[str], bool]:
    """Tenants with usage in [from, to), in byte order, after the one whose hex is `after_hex`."""
    table, _, cond = source(from_ms, to_ms, None)
    rows = ch.execute(
        f"SELECT DISTINCT tenant FROM {table} WHERE {cond} "
        + ("AND hex(tenant) > %(after)s " if after_hex else "")
        + f"ORDER BY tenant LIMIT {limit + 1}",
        {"lo": from_ms, "to_ms": to_ms, "after": (after_hex or "").upper()},
        settings={"use_numpy": False},
    )
    names = [str(r[0]) for r in rows]
    return names[:limit], len(names) > limit
