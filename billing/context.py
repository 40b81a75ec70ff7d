"""What every route needs (settings, the read-only store, keys, plans, clock) and who is asking.

Authentication is an HTTP bearer security scheme, so the OpenAPI spec declares it and
Swagger UI's Authorize button sends the key; the scheme word is matched in any case.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from billing.db import ReadOnly
from billing.errors import forbidden
from billing.invoices import Invoices
from billing.keys import OPERATOR, KeyCache, Principal
from billing.plans import PlanBook
from billing.settings import ApiSettings
from billing.usage import RangeCaps

DEFAULT_PAGE = 10_000  # rows of usage per page unless `limit` says otherwise (a day of minutes fits)


@dataclass(frozen=True)
class Context:
    settings: ApiSettings
    db: Callable[[], ReadOnly]
    billing_db: Callable[[], ReadOnly]  # API keys and invoices: another user on ClickHouse 18.16
    keys: KeyCache
    book: PlanBook
    invoices: Invoices
    clock_ms: Callable[[], int]
    caps: RangeCaps


bearer = HTTPBearer(
    auto_error=False, scheme_name="apiKey", bearerFormat="smk_<id>_<secret>",
    description="`Authorization: Bearer <api key>`; keys come from `sandmeter api keys create`",
)  # fmt: skip


def _principal(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> Principal:
    ctx: Context = request.app.state.ctx
    return ctx.keys.authenticate(credentials.credentials if credentials is not None else None)


Auth = Annotated[Principal, Depends(_principal)]


def may_read(who: Principal, tenant: str) -> str:
    if not who.may_read(tenant):
        raise forbidden("this key reads only its own tenant")
    return tenant


def operator_only(who: Principal) -> None:
    if who.role != OPERATOR:
        raise forbidden("operator key required")
