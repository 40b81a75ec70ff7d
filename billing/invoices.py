"""Monthly invoices, read side: a final invoice as stored, or a draft computed on read.

An invoice exists for a tenant and month when the month ends after the tenant's plan starts
and the tenant has usage in it or is assigned a plan in assignments.toml (then every month
from its start has one, usage or not). Reads never store anything: a draft is computed on
each request, and only the finalize job (billing/finalize.py) writes a final invoice, once
the grace period after the month is over. A final invoice's JSON is stored byte for byte
and served as stored.

Usage that arrives for a finalized month is booked on the next invoice built after it
arrives, as a labelled `late_usage` adjustment for that month (the difference between
rating everything now known for the month and rating what was already booked for it). A
minimum commitment tops the month's usage lines up as an invoice-level adjustment.
"""

from __future__ import annotations

import calendar
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final

from billing.errors import ApiError
from billing.plans import Plan, PlanBook
from billing.rating import USAGE_SUMS, fmt, quantities, rate, rounding_note
from billing.timeparse import format_ms
from billing.usage import DAY_MS, source
from contracts.clickhouse import tables
from contracts.quantities import exact_sum

PERIOD_RE: Final = re.compile(r"([0-9]{4})-([0-9]{2})")
LOOKBACK_MONTHS: Final = 12  # finalized months checked for late usage


@dataclass(frozen=True, order=True)
class Period:
    year: int
    month: int

    @classmethod
    def parse(cls, text: str) -> Period:
        m = PERIOD_RE.fullmatch(text)
        if not m or not (1970 <= int(m[1]) <= 9999 and 1 <= int(m[2]) <= 12):
            raise ValueError(f"{text!r} is not a month as YYYY-MM (1970-01 .. 9999-12)")
        return cls(int(m[1]), int(m[2]))

    @classmethod
    def of_ms(cls, ms: int) -> Period:
        t = datetime.fromtimestamp(ms // 1000, UTC)
        return cls(t.year, t.month)

    def __str__(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"

    @property
    def start_ms(self) -> int:
        return calendar.timegm((self.year, self.month, 1, 0, 0, 0)) * 1000

    @property
    def end_ms(self) -> int:
        return self.next().start_ms

    def next(self) -> Period:
        return Period(self.year + self.month // 12, self.month % 12 + 1)

    def prev(self) -> Period:
        return Period(self.year - (self.month == 1), (self.month - 2) % 12 + 1)


def no_invoice(tenant: str, period: Period) -> ApiError:
    return ApiError(404, "no_invoice", f"{tenant} has no invoice for {period}: no usage or plan assignment in it, "
                    "or the month is before the plan starts or has not started")  # fmt: skip


def usage_sums(ch: Any, tenant: str, from_ms: int, to_ms: int) -> dict[str, int]:
    """Integer sums of the billed usage columns over [from, to), from the coarsest exact table."""
    table, _, cond = source(from_ms, to_ms, None, per_sandbox=False)
    cols = ", ".join(f"toString({exact_sum(c)})" for c in USAGE_SUMS)
    rows = ch.execute(
        f"SELECT {cols} FROM {tables(ch)(table)} FINAL WHERE tenant = %(tenant)s AND {cond}",
        {"tenant": tenant, "lo": from_ms, "to_ms": to_ms},
        settings={"use_numpy": False},
    )
    return {c: int(v) for c, v in zip(USAGE_SUMS, rows[0], strict=True)}


@dataclass(frozen=True)
class Rated:
    plan: Plan
    quantities: dict[str, Decimal]
    lines: list[dict[str, Any]]
    subtotal: Decimal


def rate_range(ch: Any, book: PlanBook, tenant: str, from_ms: int, to_ms: int) -> Rated:
    """[from, to) priced by the tenant's plan version in effect at `from_ms`."""
    plan = book.plan_for(tenant, from_ms)
    qty = quantities(usage_sums(ch, tenant, from_ms, to_ms))
    lines, subtotal = rate(plan, qty)
    return Rated(plan, qty, lines, subtotal)


def dumps(body: dict[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def months_with_usage(ch: Any, tenant: str | None, before_ms: int) -> dict[str, set[Period]]:
    """Tenant -> the months before `before_ms` in which it has usage (from the hour rollup)."""
    rows = ch.execute(
        f"SELECT tenant, intDiv(hour_ms, {DAY_MS}) AS d FROM {tables(ch).usage_hour} WHERE hour_ms < %(before)s "
        + ("AND tenant = %(tenant)s " if tenant is not None else "")
        + "GROUP BY tenant, d",
        {"before": before_ms, "tenant": tenant},
        settings={"use_numpy": False},
    )
    out: dict[str, set[Period]] = {}
    for t, d in rows:
        out.setdefault(str(t), set()).add(Period.of_ms(int(d) * DAY_MS))
    return out


class Invoices:
    def __init__(self, book: PlanBook, grace_ms: int) -> None:
        self.book, self.grace_ms = book, grace_ms

    def stored(self, bill: Any, tenant: str, periods: list[str] | None = None) -> dict[str, bytes]:
        """Final bodies of these months (all when None), the earliest finalization of each;
        `bill`: the connection for the billing tables (the usage one where a user may do both)."""
        if periods == []:
            return {}
        rows = bill.execute(
            f"SELECT period, body FROM {tables(bill).invoices} WHERE tenant = %(t)s "
            + ("AND period IN %(p)s " if periods else "")
            + "ORDER BY period, finalized_ms LIMIT 1 BY period",
            {"t": tenant, "p": tuple(periods or ())},
            settings={"use_numpy": False},
        )
        return {str(p): str(b).encode() for p, b in rows}

    def periods(self, ch: Any, tenant: str, now_ms: int, *, bill: Any = None) -> set[Period]:
        """The months up to now for which the tenant has an invoice, final or not."""
        start = self.book.starts_ms(tenant)
        used = months_with_usage(ch, tenant, now_ms).get(tenant, set())
        out = {p for p in used if p.end_ms > start}
        if self.book.is_assigned(tenant):
            p = Period.of_ms(start)
            while p.start_ms <= now_ms:
                out.add(p)
                p = p.next()
        return out | {Period.parse(p) for p in self.stored(bill or ch, tenant)}

    def exists(self, ch: Any, tenant: str, period: Period) -> bool:
        if period.end_ms <= self.book.starts_ms(tenant):
            return False
        if self.book.is_assigned(tenant):
            return True
        rows = ch.execute(
            f"SELECT count() FROM {tables(ch).usage_hour} "
            "WHERE tenant = %(t)s AND hour_ms >= %(a)s AND hour_ms < %(b)s",
            {"t": tenant, "a": period.start_ms, "b": period.end_ms},
            settings={"use_numpy": False},
        )
        return int(rows[0][0]) > 0

    def get(self, ch: Any, tenant: str, period: Period, now_ms: int, *, bill: Any = None) -> tuple[str, bytes]:
        """(status, body): the final invoice as stored, or a draft computed now and not kept."""
        if period.start_ms > now_ms:
            raise no_invoice(tenant, period)
        frozen = self.stored(bill or ch, tenant, [str(period)]).get(str(period))
        if frozen is not None:
            return "final", frozen
        if not self.exists(ch, tenant, period):
            raise no_invoice(tenant, period)
        return "draft", dumps(self.build(ch, tenant, period, now_ms, final=False, bill=bill))

    def summaries(
        self, ch: Any, tenant: str, now_ms: int, limit: int, before: Period | None, *, bill: Any = None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """A page of the tenant's invoices, newest month first, and the next page's cursor."""
        mine = self.periods(ch, tenant, now_ms, bill=bill)
        periods = sorted((p for p in mine if before is None or p < before), reverse=True)
        page = periods[:limit]
        finals = self.stored(bill or ch, tenant, [str(p) for p in page])
        out = []
        for p in page:
            doc = (
                json.loads(finals[str(p)]) if str(p) in finals
                else self.build(ch, tenant, p, now_ms, final=False, bill=bill)
            )  # fmt: skip
            out.append({"period": str(p), "status": doc["status"], "currency": doc["currency"],
                        "total": doc["total"], "finalized_at": doc.get("finalized_at")})  # fmt: skip
        return out, (str(page[-1]) if len(periods) > limit else None)

    def build(
        self, ch: Any, tenant: str, period: Period, now_ms: int, final: bool, *, bill: Any = None
    ) -> dict[str, Any]:
        r = rate_range(ch, self.book, tenant, period.start_ms, period.end_ms)
        plan, subtotal = r.plan, r.subtotal
        adjustments = self._late_usage(ch, bill or ch, tenant, period)
        if subtotal < plan.minimum_commitment:
            adjustments.append({
                "kind": "minimum_commitment",
                "label": f"minimum commitment {fmt(plan.minimum_commitment)} {plan.currency}",
                "amount": fmt(plan.minimum_commitment - subtotal),
            })  # fmt: skip
        total = subtotal + sum((Decimal(a["amount"]) for a in adjustments), Decimal(0))
        body: dict[str, Any] = {
            "tenant": tenant,
            "period": str(period),
            "period_start": format_ms(period.start_ms),
            "period_end": format_ms(period.end_ms),
            "status": "final" if final else "draft",
            "plan": {"id": plan.id, "version": plan.version},
            "currency": plan.currency,
            "quantities": {k: fmt(v) for k, v in r.quantities.items()},
            "lines": r.lines,
            "subtotal": fmt(subtotal),
            "adjustments": adjustments,
            "total": fmt(total),
            "rounding": rounding_note(plan),
        }
        if final:
            body["finalized_at"] = format_ms(now_ms)
        else:
            body["generated_at"] = format_ms(now_ms)
            body["finalizes_after"] = format_ms(period.end_ms + self.grace_ms)
        return body

    def _late_usage(self, ch: Any, bill: Any, tenant: str, period: Period) -> list[dict[str, Any]]:
        """An adjustment per earlier finalized month whose usage grew after it was finalized."""
        months, p = set(), period
        for _ in range(LOOKBACK_MONTHS):
            p = p.prev()
            months.add(str(p))
        stored = {k: json.loads(v) for k, v in self.stored(bill, tenant).items()}
        out = []
        for month in sorted(months & set(stored)):
            inv = stored[month]
            booked = {k: Decimal(v) for k, v in inv["quantities"].items()}
            for later in stored.values():  # adjustments for `month` on any finalized invoice
                for a in later.get("adjustments", []):
                    if a.get("kind") == "late_usage" and a.get("period") == month:
                        for k, v in a["quantities"].items():
                            booked[k] += Decimal(v)
            p = Period.parse(month)
            now = rate_range(ch, self.book, tenant, p.start_ms, p.end_ms)
            delta = {k: v - booked.get(k, Decimal(0)) for k, v in now.quantities.items()}
            if not any(delta.values()):
                continue
            _, then = rate(now.plan, booked)
            amount = now.subtotal - then  # each side a sum of rounded lines
            out.append({
                "kind": "late_usage", "period": month, "label": f"late usage for {month}",
                "quantities": {k: fmt(v) for k, v in delta.items()}, "amount": fmt(amount),
            })  # fmt: skip
        return out
