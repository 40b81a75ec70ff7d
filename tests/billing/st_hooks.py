"""Schemathesis hooks (SCHEMATHESIS_HOOKS=st_hooks): the rules the spec cannot state, for valid cases.

The spec says `from` and `to` are date-times; it cannot say that `from` comes first, that
both lie in 1970..9999, or that a range is at most 31 days when it reads the raw intervals
(billing/usage.py). A case schemathesis generates as valid is brought inside those rules
before it is sent, so `positive_data_acceptance` expects (and checks) a 2xx for it; cases
generated as invalid are sent as generated. With ST_TENANT set (the tenant-key run), valid
cases name that tenant, so they read its data instead of drawing 403s; half of the valid
scale cases name the one function with load data, so they reach the recommendation.
"""

from __future__ import annotations

import os
from datetime import datetime
from typing import Any

import schemathesis

from billing.timeparse import format_ms, to_ms

LO = to_ms(datetime.fromisoformat("1970-01-01T00:00:00+00:00"))
HI = to_ms(datetime.fromisoformat("9999-01-01T00:00:00+00:00"))
CAP = 31 * 86_400_000
SCALE = ("acme", "fn")  # tests/billing/test_fuzz.py writes load for it


def _ms(value: Any) -> int | None:
    try:
        return to_ms(datetime.fromisoformat(str(value)))
    except (ValueError, OverflowError):
        return None


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive:
        return
    path = case.path_parameters or {}
    tenant = os.environ.get("ST_TENANT")
    if tenant and "tenant" in path:
        path["tenant"] = tenant
    if "function" in path and len(path["function"]) % 2:  # half of them: the function with load data
        path["tenant"], path["function"] = SCALE
    query = case.query
    if not query or "from" not in query or "to" not in query:
        return
    a, b = _ms(query["from"]), _ms(query["to"])
    if a is None or b is None:
        return
    if LO <= a < b <= min(a + CAP, HI):
        return  # as generated
    a, b = sorted((a, b))
    a = LO + (a - LO) % (HI - LO - CAP)  # a start inside the supported range, then a range within the cap
    b = a + 1 + (b - a) % CAP
    query["from"], query["to"] = format_ms(a), format_ms(b)
