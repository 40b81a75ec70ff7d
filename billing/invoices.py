"""Monthly invoices: a draft until the grace period after the month ends, then final and frozen.

A finalized invoice's JSON is stored byte for byte and served as stored. Usage that arrives
for a finalized month is booked on the next invoice built after it arrives, as a labelled
`late_usage` adjustment for that month (the difference between rating everything now known
for the month and rating what was already booked for it). A minimum commitment tops the
month's usage lines up as an invoice-level adjustment.
"""

from __future__ import annotations

import calendar
import hashlib
import json
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final

from billing.errors import ApiError, bad_request
from billing.plans import Plan, PlanBook
from billing.rating import USAGE_SUMS, fmt, quantities, rate, rounding_note
from billing.timeparse import format_ms
from billing.usage import source
from contracts.names import T_INVOICES

PERIOD_RE: Final = re.compile(r"^(\d{4})-(\d{2})$")
KEEP_BASE: Final = 1 << 63
LOOKBACK_MONTHS: Final = 12  # finalized months checked for late usage


@dataclass(frozen=True)
class Period:
    year: int
    month: int

    @classmethod
    def parse(cls, text: str) -> Period:
        m = PERIOD_RE.match(text)
        if not m or not (1970 <= int(m[1]) <= 9999 and 1 <= int(m[2]) <= 12):
            raise bad_request("bad_period", f"{text!r} is not a month as YYYY-MM (1970-01 .. 9999-12)")
        return cls(int(m[1]), int(m[2]))

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


def usage_sums(ch: Any, tenant: str, from_ms: int, to_ms: int) -> dict[str, int]:
    """Integer sums of the billed usage columns over [from, to), from the coarsest exact table."""
    table, _, cond = source(from_ms, to_ms, None)
    cols = ", ".join(f"toString(sum({c}))" for c in USAGE_SUMS)
    rows = ch.execute(
        f"SELECT {cols} FROM {table} FINAL WHERE tenant = %(tenant)s AND {cond}",
        {"tenant": tenant, "from_ms": from_ms, "to_ms": to_ms},
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


class Invoices:
    def __init__(self, book: PlanBook, grace_ms: int) -> None:
        self.book, self.grace_ms = book, grace_ms

    def stored(self, ch: Any, tenant: str, periods: list[str] | None = None) -> dict[str, bytes]:
        """Final bodies of these months (all when None), the earliest finalization of each."""
        if periods == []:
            return {}
        rows = ch.execute(
            f"SELECT period, body FROM {T_INVOICES} WHERE tenant = %(t)s "
            + ("AND period IN %(p)s " if periods else "")
            + "ORDER BY period, finalized_ms LIMIT 1 BY period",
            {"t": tenant, "p": tuple(periods or ())},
            settings={"use_numpy": False},
        )
        return {str(p): str(b).encode() for p, b in rows}

    def get(self, ch: Any, tenant: str, period: Period, now_ms: int) -> tuple[str, bytes]:
        """(status, body): the frozen final invoice, or a fresh draft, finalizing when due."""
        if period.start_ms > now_ms:
            raise ApiError(400, "period_in_future", f"{period} has not started")
        frozen = self.stored(ch, tenant, [str(period)]).get(str(period))
        if frozen is not None:
            return "final", frozen
        final = now_ms >= period.end_ms + self.grace_ms
        body = self.build(ch, tenant, period, now_ms, final)
        if not final:
            return "draft", dumps(body)
        data = dumps(body)
        ch.execute(
            f"INSERT INTO {T_INVOICES} (tenant, period, finalized_ms, keep, body, sha256) VALUES",
            [
                {
                    "tenant": tenant,
                    "period": str(period),
                    "finalized_ms": now_ms,
                    "keep": KEEP_BASE - now_ms,
                    "body": data.decode(),
                    "sha256": hashlib.sha256(data).hexdigest(),
                }
            ],
            settings={"use_numpy": False},
        )
        # another replica may have finalized first: serve whichever is stored earliest
        return "final", self.stored(ch, tenant, [str(period)])[str(period)]

    def build(self, ch: Any, tenant: str, period: Period, now_ms: int, final: bool) -> dict[str, Any]:
        r = rate_range(ch, self.book, tenant, period.start_ms, period.end_ms)
        plan, subtotal = r.plan, r.subtotal
        adjustments = self._late_usage(ch, tenant, period)
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
            ("finalized_at" if final else "generated_at"): format_ms(now_ms),
        }
        return body

    def _late_usage(self, ch: Any, tenant: str, period: Period) -> list[dict[str, Any]]:
        """An adjustment per earlier finalized month whose usage grew after it was finalized."""
        months, p = set(), period
        for _ in range(LOOKBACK_MONTHS):
            p = p.prev()
            months.add(str(p))
        stored = {k: json.loads(v) for k, v in self.stored(ch, tenant).items()}
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
