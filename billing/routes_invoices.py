"""/v1/tenants/{tenant}/invoices and /invoices/{period}: reads only (billing/finalize.py writes)."""

import json
from typing import Annotated, Any, get_args

from fastapi import APIRouter, Path, Query
from fastapi.responses import Response

from billing.context import Auth, Context, may_read
from billing.errors import responses
from billing.exports import MEDIA, invoice_csv, invoice_parquet
from billing.invoices import Period
from billing.models import Invoice, InvoicePage
from billing.params import Format, InvoiceStatus, PeriodText, TenantId

STATUS_HEADER = {
    "X-Invoice-Status": {
        "description": "draft or final", "required": True,
        "schema": {"type": "string", "enum": list(get_args(InvoiceStatus))},
    }
}  # fmt: skip


def routes(ctx: Context) -> APIRouter:
    router = APIRouter(prefix="/v1/tenants/{tenant}", tags=["invoices"])

    @router.get("/invoices", response_model=InvoicePage, responses=responses(401, 403, 422, 500, 503))
    def invoices(
        who: Auth,
        tenant: Annotated[TenantId, Path()],
        limit: Annotated[int, Query(ge=1, le=100)] = 24,
        cursor: Annotated[PeriodText | None, Query(description="`next_cursor` of the previous page")] = None,
    ) -> Any:
        """The tenant's invoices, newest month first: final ones as stored, drafts as of now."""
        may_read(who, tenant)
        before = Period.parse(cursor) if cursor else None
        page, nxt = ctx.invoices.summaries(ctx.db(), tenant, ctx.clock_ms(), limit, before, bill=ctx.billing_db())
        return {"tenant": tenant, "invoices": page, "next_cursor": nxt}

    @router.get(
        "/invoices/{period}", response_model=None, responses={
            **responses(401, 403, 404, 422, 500, 503), 200: {
                "model": Invoice, "headers": STATUS_HEADER, "content": {
                    "text/csv": {"schema": {"type": "string"}},
                    "application/vnd.apache.parquet": {"schema": {"type": "string", "format": "binary"}},
                },
            },
        },
    )  # fmt: skip
    def invoice(
        who: Auth,
        tenant: Annotated[TenantId, Path()],
        period: Annotated[PeriodText, Path(description="YYYY-MM, a calendar month in UTC")],
        format: Format = "json",
    ) -> Response:
        """The month's final invoice, byte for byte as finalized, or a draft computed now (never stored).

        404 when the tenant has no invoice for the month: no usage and no plan assignment in it,
        a month before its plan starts, or one that has not started.
        """
        may_read(who, tenant)
        status, body = ctx.invoices.get(ctx.db(), tenant, Period.parse(period), ctx.clock_ms(), bill=ctx.billing_db())
        headers = {"X-Invoice-Status": status}  # "draft" or "final", set by the code
        if format == "json":
            return Response(body, media_type="application/json", headers=headers)
        doc = json.loads(body)
        data = invoice_csv(doc) if format == "csv" else invoice_parquet(doc)
        headers["Content-Disposition"] = f'attachment; filename="invoice-{tenant}-{period}.{format}"'  # validated
        return Response(data, media_type=MEDIA[format], headers=headers)

    return router
