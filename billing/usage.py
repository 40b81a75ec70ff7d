"""Usage queries over `usage_intervals` and its rollups, deduplicated at read time (FINAL).

Pages are keyset pages: a cursor is the last row's (bucket, sandbox), and the next page is
the rows after it in (bucket, sandbox) order, so any cursor is a valid position and a page
costs the same wherever it starts. Sandbox ids and tenants are compared as upper-case hex
of their bytes (the same order as the bytes), so a cursor never carries raw stored text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from billing.errors import invalid
from contracts.clickhouse import tables
from contracts.names import T_USAGE, T_USAGE_HOUR, T_USAGE_MINUTE, T_USAGE_TENANT_MINUTE
from contracts.quantities import BY_API_NAME, HOUR_MS, MINUTE_MS, exact_sum

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


def source(from_ms: int, to_ms: int, granularity_ms: int | None, *, per_sandbox: bool) -> tuple[str, str, str]:
    """(table, bucket expression, range condition): the smallest table that answers exactly.

    A rollup row holds the intervals whose last millisecond falls in its bucket, so it
    answers a range whose bounds sit on its bucket edges (and, when the caller buckets by
    `granularity_ms`, whose bucket divides it); anything else reads the intervals. A read not
    split by sandbox (`per_sandbox` false) on minutes reads the tenant-minute rollup, one row
    per minute however many sandboxes the tenant runs; on hours it keeps the per-sandbox hour
    rollup (a tenant with fewer than 60 sandboxes has fewer hour rows than tenant-minute rows).
    With no granularity (one total over the range) the bucket expression is 0. The condition
    reads its lower bound from %(lo)s, which is `from` or a page's later start.
    """
    g = granularity_ms or 0
    minute = T_USAGE_MINUTE if per_sandbox else T_USAGE_TENANT_MINUTE
    for table, col, size in ((T_USAGE_HOUR, "hour_ms", HOUR_MS), (minute, "minute_ms", MINUTE_MS)):
        if g % size == 0 and from_ms % size == 0 and to_ms % size == 0:
            bucket = f"intDiv({col}, {g}) * {g}" if g else "0"
            return table, bucket, f"{col} >= %(lo)s AND {col} < %(to_ms)s"
    bucket = f"intDiv(end_ms - 1, {g}) * {g}" if g else "0"
    return T_USAGE, bucket, "end_ms > %(lo)s AND end_ms <= %(to_ms)s"


def check_range(from_ms: int, to_ms: int, granularity_ms: int | None, caps: RangeCaps) -> None:
    """`from` before `to`, and the range within its cap (422 otherwise)."""
    if from_ms >= to_ms:
        raise invalid("bad_range", "`from` must be before `to`", "query.to")
    exact = source(from_ms, to_ms, granularity_ms, per_sandbox=True)[0] == T_USAGE  # the same either way
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
    return ", ".join(f"toString({exact_sum(METRICS[m][0])}) AS {m}" for m in metrics)


@dataclass(frozen=True)
class Page:
    """A page of usage, by column: bucket starts (ms), sandboxes when grouped, each metric's values
    in its API unit (exact decimal strings), the range's totals, and whether more rows follow."""

    buckets: list[int]
    sandbox_hex: list[str] | None
    sandboxes: list[str] | None
    values: dict[str, list[str]]
    totals: dict[str, str]
    more: bool

    def starts(self) -> list[str]:
        """RFC 3339 with ms, for the whole column at once."""
        ms = np.asarray(self.buckets, dtype=np.int64).astype("datetime64[ms]")
        return list(np.datetime_as_string(ms, unit="ms", timezone="UTC").tolist())

    def series_json(self) -> str:
        """The series as a JSON array, rendered through one row template rather than a dict per
        row and json.dumps (a third of the day-of-minutes request): every value but a sandbox id
        is digits, `.`, `-`, `:`, `T` or `Z`, and sandbox ids, which may hold anything, are
        encoded by json.dumps. tests/billing/test_params.py holds it equal to json.dumps."""
        fields = ['"start":"%s"', *(['"sandbox_id":%s'] if self.sandboxes is not None else [])]
        row = "{" + ",".join([*fields, *(f'"{m}":"%s"' for m in self.values)]) + "}"  # metric names: a Literal
        ids = [[json.dumps(s) for s in self.sandboxes]] if self.sandboxes is not None else []
        return "[" + ",".join(row % r for r in zip(self.starts(), *ids, *self.values.values(), strict=True)) + "]"

    def next_cursor(self) -> str | None:
        if not self.more:
            return None
        return str(Position(self.buckets[-1], self.sandbox_hex[-1] if self.sandbox_hex is not None else ""))


def to_api_unit(values: list[Any] | tuple[Any, ...], metric: str) -> list[str]:
    """Integer sums as text -> the API unit (moving the decimal point of the text)."""
    places = len(str(METRICS[metric][1])) - 1
    return [_shift(str(v), places) for v in values] if places else [str(v) for v in values]


def run_usage(ch: Any, q: UsageQuery, limit: int, after: Position | None) -> Page:
    """Up to `limit` rows after `after`. Intervals count whole in the bucket holding their last ms.
    The first page's query also returns the range's totals (WITH TOTALS, which ignores LIMIT)."""
    g = GRANULARITY_MS[q.granularity]
    table, bucket, cond = source(q.from_ms, q.to_ms, g, per_sandbox=q.group_by_sandbox)
    by = ", hex(sandbox_id) AS sbx, sandbox_id" if q.group_by_sandbox else ""
    keyset = ""
    if after is not None:
        keyset = (
            "AND (bucket > %(ab)s OR (bucket = %(ab)s AND sbx > %(ax)s)) " if q.group_by_sandbox
            else "AND bucket > %(ab)s "
        )  # fmt: skip
    sql = (
        f"SELECT {bucket} AS bucket{by}, {_sums(q.metrics)} FROM {tables(ch)(table)} FINAL "
        f"WHERE tenant = %(tenant)s AND {cond} {keyset}"
        f"GROUP BY bucket{', sandbox_id' if by else ''} {'WITH TOTALS ' if after is None else ''}"
        f"ORDER BY bucket{', sandbox_id' if by else ''} LIMIT {limit + 1}"
    )
    lo = max(q.from_ms, after.bucket_ms) if after is not None else q.from_ms  # a bucket starts at or before its rows
    params = {"tenant": q.tenant, "lo": lo, "to_ms": q.to_ms}
    if after is not None:
        params |= {"ab": after.bucket_ms, "ax": after.sandbox_hex}
    skip = 3 if q.group_by_sandbox else 1
    cols = ch.execute(sql, params, settings={"use_numpy": False}, columnar=True) or [()] * (skip + len(q.metrics))
    if after is None:  # the totals row comes last (a row of zeros when nothing matched, or none at all)
        sums = [c[-1] for c in cols[skip:]] if cols[0] else ["0"] * len(q.metrics)
        cols = [c[:-1] for c in cols]
    else:
        sums = list(totals(ch, q))
    more = len(cols[0]) > limit
    cols = [list(c[:limit]) for c in cols]
    return Page(
        buckets=[int(b) for b in cols[0]],
        sandbox_hex=[str(x) for x in cols[1]] if q.group_by_sandbox else None,
        sandboxes=[str(x) for x in cols[2]] if q.group_by_sandbox else None,
        values={m: to_api_unit(cols[skip + i], m) for i, m in enumerate(q.metrics)},
        totals={m: to_api_unit([v], m)[0] for m, v in zip(q.metrics, sums, strict=True)},
        more=more,
    )


def totals(ch: Any, q: UsageQuery) -> tuple[str, ...]:
    """Each metric's integer column sum over the whole range, as text."""
    table, _, cond = source(q.from_ms, q.to_ms, GRANULARITY_MS[q.granularity], per_sandbox=q.group_by_sandbox)
    rows = ch.execute(
        f"SELECT {_sums(q.metrics)} FROM {tables(ch)(table)} FINAL WHERE tenant = %(tenant)s AND {cond}",
        {"tenant": q.tenant, "lo": q.from_ms, "to_ms": q.to_ms},
        settings={"use_numpy": False},
    )
    return tuple(str(v) for v in rows[0])


def _shift(digits: str, places: int) -> str:
    """A non-negative integer's text divided by 10**places, by moving the point: no arithmetic."""
    if not places:
        return digits
    digits = digits.rjust(places + 1, "0")
    whole, frac = digits[:-places], digits[-places:].rstrip("0")
    return f"{whole}.{frac}" if frac else whole


def list_tenants(ch: Any, from_ms: int, to_ms: int, limit: int, after_hex: str | None) -> tuple[list[str], bool]:
    """Tenants with usage in [from, to), in byte order, after the one whose hex is `after_hex`."""
    table, _, cond = source(from_ms, to_ms, None, per_sandbox=False)
    rows = ch.execute(
        f"SELECT DISTINCT tenant FROM {tables(ch)(table)} WHERE {cond} "
        + ("AND hex(tenant) > %(after)s " if after_hex else "")
        + f"ORDER BY tenant LIMIT {limit + 1}",
        {"lo": from_ms, "to_ms": to_ms, "after": (after_hex or "").upper()},
        settings={"use_numpy": False},
    )
    names = [str(r[0]) for r in rows]
    return names[:limit], len(names) > limit
