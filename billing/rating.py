"""Rating: usage quantities -> priced lines, in Decimal, rounded once per line (docs/metering.md).

Quantities keep full precision (60 significant digits) through allowance and tiers; each
line's amount is rounded once to the currency's minor unit with ROUND_HALF_EVEN; a total is
the sum of rounded lines.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import ROUND_HALF_EVEN, Context, Decimal, localcontext
from typing import Any, Final

from billing.plans import PLAN_METRICS, Plan, PlanLine
from contracts.quantities import PLAN_METRIC, PRICED_COLUMNS

PRECISION: Final = 60
ROUNDING: Final = ROUND_HALF_EVEN
USAGE_SUMS: Final = PRICED_COLUMNS  # the usage columns rating reads


def fmt(d: Decimal) -> str:
    """A Decimal as plain digits (no exponent), trailing zeros kept as the value carries them."""
    return format(d, "f")


def quantities(sums: Mapping[str, int]) -> dict[str, Decimal]:
    """Plan metrics from the integer sums of usage columns, exactly."""
    with localcontext(Context(prec=PRECISION)):
        return {name: Decimal(sum(sums[c] for c in m.columns)) / m.divisor for name, m in PLAN_METRIC.items()}


def _part(low: Decimal, up_to: Decimal | None, quantity: Decimal, price: Decimal) -> dict[str, str]:
    return {
        "from": fmt(low), "to": "" if up_to is None else fmt(up_to), "quantity": fmt(quantity),
        "unit_price": fmt(price), "amount": fmt(quantity * price),
    }  # fmt: skip


def rate_line(line: PlanLine, quantity: Decimal, minor_unit: Decimal) -> dict[str, Any]:
    """One priced line with its tier breakdown; `amount` rounded once, `exact` not."""
    with localcontext(Context(prec=PRECISION)):
        billable = max(quantity - line.free, Decimal(0))
        parts: list[dict[str, str]] = []
        exact = Decimal(0)
        if line.model == "volume":
            tier = next(t for t in line.tiers if t.up_to is None or billable <= t.up_to)
            exact = billable * tier.price
            parts.append(_part(Decimal(0), tier.up_to, billable, tier.price))
        else:  # per_unit is one unbounded tier; graduated prices each slice at its own tier
            low = Decimal(0)
            for tier in line.tiers:
                high = billable if tier.up_to is None else min(billable, tier.up_to)
                part = max(high - low, Decimal(0))
                if part or not parts:
                    parts.append(_part(low, tier.up_to, part, tier.price))
                exact += part * tier.price
                if tier.up_to is None or billable <= tier.up_to:
                    break
                low = tier.up_to
    unit, what = PLAN_METRICS[line.metric]
    amount = exact.quantize(minor_unit, rounding=ROUNDING)
    return {
        "metric": line.metric, "description": what, "unit": unit, "quantity": fmt(quantity),
        "free": fmt(line.free), "model": line.model,
        "unit_price": fmt(line.tiers[0].price) if len(line.tiers) == 1 else "tiered",
        "tiers": parts, "exact_amount": fmt(exact), "amount": fmt(amount),
    }  # fmt: skip


def rounding_note(plan: Plan) -> str:
    return (
        f"each line's amount once, to {fmt(plan.minor_unit)} {plan.currency}, {ROUNDING}; "
        "the total is the sum of rounded amounts"
    )


def rate(plan: Plan, qty: Mapping[str, Decimal]) -> tuple[list[dict[str, Any]], Decimal]:
    """Every line of the plan priced; the subtotal is the sum of the rounded line amounts."""
    lines = [rate_line(pl, qty.get(pl.metric, Decimal(0)), plan.minor_unit) for pl in plan.lines]
    return lines, sum((Decimal(ln["amount"]) for ln in lines), Decimal(0))
