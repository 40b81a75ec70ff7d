"""/v1/tenants, /v1/tenants/{tenant}/usage and /cost."""

import json
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from fastapi.responses import Response

from billing.context import DEFAULT_PAGE, Auth, Context, may_read, operator_only
from billing.errors import responses
from billing.exports import MEDIA, to_csv, usage_parquet
from billing.invoices import rate_range
from billing.models import Cost, TenantPage, UsagePage
from billing.params import (
    MAX_INSTANT,
    MIN_INSTANT,
    Format,
    Granularity,
    GroupBy,
    Instant,
    Metric,
    TenantCursor,
    TenantId,
    UsageCursor,
)
from billing.rating import fmt, rounding_note
from billing.timeparse import format_ms, to_ms
from billing.usage import GRANULARITY_MS, METRICS, Page, Position, UsageQuery, check_range, list_tenants, run_usage

ERRORS = responses(401, 403, 422, 500, 503)
RANGE = f"RFC 3339 with an offset, {MIN_INSTANT} .. {MAX_INSTANT}, ms precision"
From = Annotated[Instant, Query(alias="from", description=f"inclusive; {RANGE}")]
To = Annotated[Instant, Query(description=f"exclusive; {RANGE}")]
NEXT_CURSOR = {"X-Next-Cursor": {"description": "CSV and Parquet: the next page's cursor, when there is one",
                                 "schema": {"type": "string"}}}  # fmt: skip


def routes(ctx: Context) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["usage"])
    Limit = Annotated[int, Query(ge=1, le=ctx.settings.max_rows, description="rows per page")]

    @router.get("/tenants", response_model=TenantPage, responses=ERRORS)
    def tenants(who: Auth, from_: From, to: To, limit: Limit = 1000, cursor: TenantCursor | None = None) -> Any:
        """Tenants with usage in [from, to) (operator key)."""
        operator_only(who)
        f, t = to_ms(from_), to_ms(to)
        check_range(f, t, None, ctx.caps)
        names, more = list_tenants(ctx.db(), f, t, limit, cursor)
        return {"tenants": names, "next_cursor": names[-1].encode().hex().upper() if more else None}

    @router.get(
        "/tenants/{tenant}/usage", response_model=None, responses={**ERRORS, 200: {
            "model": UsagePage, "headers": NEXT_CURSOR, "content": {
                "text/csv": {"schema": {"type": "string"}},
                "application/vnd.apache.parquet": {"schema": {"type": "string", "format": "binary"}},
            },
        }},
    )  # fmt: skip
    def usage(
        who: Auth,
        tenant: Annotated[TenantId, Path()],
        from_: From,
        to: To,
        granularity: Granularity = "hour",
        metric: Annotated[list[Metric] | None, Query(description="repeat for several; all when absent")] = None,
        group_by: GroupBy | None = None,
        format: Format = "json",
        limit: Limit = DEFAULT_PAGE,
        cursor: UsageCursor | None = None,
    ) -> Response:
        """Usage in buckets of `granularity`; an interval counts whole in the bucket of its last ms."""
        may_read(who, tenant)
        metrics = tuple(dict.fromkeys(metric)) if metric else tuple(METRICS)
        q = UsageQuery(tenant, to_ms(from_), to_ms(to), granularity, metrics, group_by is not None)
        check_range(q.from_ms, q.to_ms, GRANULARITY_MS[q.granularity], ctx.caps)
        page = run_usage(ctx.db(), q, limit, Position.parse(cursor) if cursor else None)
        if format != "json":
            return _export(format, q, page)
        head = json.dumps({
            "tenant": tenant, "from": format_ms(q.from_ms), "to": format_ms(q.to_ms), "granularity": q.granularity,
            "totals": page.totals, "next_cursor": page.next_cursor(),
        })  # fmt: skip
        return Response(f'{head[:-1]},"series":{page.series_json()}}}', media_type="application/json")

    @router.get("/tenants/{tenant}/cost", response_model=Cost, responses=ERRORS)
    def cost(who: Auth, tenant: Annotated[TenantId, Path()], from_: From, to: To) -> Any:
        """The range rated as if it were a billing period (allowances and tiers over the range as a whole)."""
        may_read(who, tenant)
        f, t = to_ms(from_), to_ms(to)
        check_range(f, t, None, ctx.caps)
        rated = rate_range(ctx.db(), ctx.book, tenant, f, t)
        return {
            "tenant": tenant, "from": format_ms(f), "to": format_ms(t), "currency": rated.plan.currency,
            "plan": {"id": rated.plan.id, "version": rated.plan.version}, "lines": rated.lines,
            "total": fmt(rated.subtotal), "rounding": rounding_note(rated.plan),
            "note": "allowances and tiers apply to the requested range as a whole; the monthly invoice is the bill",
        }  # fmt: skip

    return router


def _export(format: Format, q: UsageQuery, page: Page) -> Response:
    """A page of usage as CSV or Parquet; the next page's cursor rides in a header."""
    if format == "csv":
        cols = {"start": page.starts(), **({"sandbox_id": page.sandboxes} if page.sandboxes is not None else {}),
                **page.values}  # fmt: skip
        data = to_csv(list(cols), [dict(zip(cols, row, strict=True)) for row in zip(*cols.values(), strict=True)])
    else:
        places = {m: len(str(METRICS[m][1])) - 1 for m in q.metrics}
        data = usage_parquet(page.buckets, page.sandboxes, {m: (v, places[m]) for m, v in page.values.items()})
    headers = {"Content-Disposition": f'attachment; filename="usage-{q.tenant}.{format}"'}  # validated tenant
    nxt = page.next_cursor()
    if nxt is not None:
        headers["X-Next-Cursor"] = nxt  # digits and hex, built here
    return Response(data, media_type=MEDIA[format], headers=headers)
