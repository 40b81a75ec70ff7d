"""`sandmeter api`: usage, rated cost, invoices and health over what the processor wrote.

Every /v1 route needs `Authorization: Bearer <api key>`; a tenant key reads only its own
tenant (403 otherwise), the operator key reads everything. Errors are `{code, message}` with a
4xx status; nothing a client sends can cause a 5xx (a fuzzing test holds that).
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable
from typing import Annotated, Any, Literal

import pandas as pd
from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from pydantic import BaseModel

from billing.errors import ApiError
from billing.health import incidents
from billing.invoices import Invoices, Period, rate_range
from billing.keys import OPERATOR, KeyCache, Principal
from billing.plans import PlanBook, load_book
from billing.rating import fmt, rounding_note
from billing.settings import ApiSettings
from billing.timeparse import format_ms, parse_ms
from billing.usage import METRICS, UsageQuery, check_tenant, list_tenants, run_usage, scaled
from contracts.clock import wall_ms
from contracts.names import API_REQUEST_SECONDS, FUNCTION_RE
from scaling import Stale, UnknownFunction, recommend

Format = Literal["json", "csv", "parquet"]
MEDIA = {"csv": "text/csv", "parquet": "application/vnd.apache.parquet"}


class ErrorBody(BaseModel):
    code: str
    message: str


ERRORS: dict[int | str, dict[str, Any]] = {
    s: {"model": ErrorBody} for s in (400, 401, 403, 404, 422, 503)
}  # documented on every /v1 route, so clients and the fuzzer know them
EXPORTS: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    200: {"content": {"application/json": {}, "text/csv": {}, "application/vnd.apache.parquet": {}}},
}


def _principal(request: Request, authorization: Annotated[str | None, Header()] = None) -> Principal:
    keys: KeyCache = request.app.state.keys
    return keys.authenticate(authorization)


Auth = Annotated[Principal, Depends(_principal)]


def export(rows: list[dict[str, Any]], fmt_: Format, name: str, body: bytes | None = None) -> Response:
    """JSON (`body` as is when given), or the rows as CSV / Parquet through pandas."""
    if fmt_ == "json":
        assert body is not None
        return Response(body, media_type="application/json")
    df = pd.DataFrame(rows)
    if fmt_ == "csv":
        data = df.to_csv(index=False).encode()
    else:
        buf = io.BytesIO()
        df.astype(str).to_parquet(buf, index=False)
        data = buf.getvalue()
    return Response(
        data, media_type=MEDIA[fmt_], headers={"Content-Disposition": f'attachment; filename="{name}.{fmt_}"'}
    )


def create_app(
    settings: ApiSettings,
    ch_factory: Callable[[], Any],
    registry: CollectorRegistry | None = None,
    book: PlanBook | None = None,
    clock_ms: Callable[[], int] = wall_ms,
) -> FastAPI:
    registry = registry or CollectorRegistry()
    book = book or load_book(settings.plans_dir)  # a bad plan file stops the start-up, naming file:line
    invoices = Invoices(book, int(settings.invoice_grace_s * 1000))
    keys = KeyCache(ch_factory, settings.key_cache_s)
    latency = Histogram(API_REQUEST_SECONDS, "Request latency", ["route", "status"], registry=registry)
    app = FastAPI(title="sandmeter billing API", version="1")
    app.state.requests = app.state.errors = 0  # for the periodic status line
    app.state.keys = keys

    @app.middleware("http")
    async def timing(request: Request, call_next: Callable[[Request], Any]) -> Response:
        t0 = time.perf_counter()
        resp: Response = await call_next(request)
        app.state.requests += 1
        app.state.errors += resp.status_code >= 400
        route = request.scope.get("route")
        latency.labels(getattr(route, "path", "unmatched"), str(resp.status_code)).observe(time.perf_counter() - t0)
        return resp

    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({"code": exc.code, "message": exc.message}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ()))
        return JSONResponse({"code": "bad_request", "message": f"{where}: {first.get('msg', 'invalid')}"}, 422)

    def tenant_of(who: Principal, tenant: str) -> str:
        check_tenant(tenant)
        if not who.may_read(tenant):
            raise ApiError(403, "forbidden", "this key reads only its own tenant")
        return tenant

    def operator(who: Principal) -> None:
        if who.role != OPERATOR:
            raise ApiError(403, "forbidden", "operator key required")

    @app.get("/healthz", response_class=PlainTextResponse)
    def healthz() -> str:
        return "ok"

    @app.get("/readyz", response_class=PlainTextResponse, responses={503: {"model": ErrorBody}})
    def readyz() -> Response:
        try:
            ch_factory().execute("SELECT 1")
        except Exception as exc:
            return JSONResponse({"code": "clickhouse_unreachable", "message": str(exc)[:200]}, 503)
        return PlainTextResponse("ready")

    @app.get("/metrics", response_class=PlainTextResponse)
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/tenants", responses=ERRORS)
    def tenants(who: Auth, from_: Annotated[str, Query(alias="from")], to: Annotated[str, Query()]) -> dict[str, Any]:
        operator(who)
        f, t = parse_ms(from_, "from"), parse_ms(to, "to")
        return {"tenants": list_tenants(ch_factory(), f, t)}

    @app.get("/v1/tenants/{tenant}/usage", responses=EXPORTS)
    def usage(
        who: Auth,
        tenant: str,
        from_: Annotated[str, Query(alias="from")],
        to: Annotated[str, Query()],
        granularity: Annotated[str, Query()] = "hour",
        metric: Annotated[list[str] | None, Query()] = None,
        group_by: Annotated[str | None, Query()] = None,
        format: Annotated[Format, Query()] = "json",
    ) -> Response:
        tenant_of(who, tenant)
        if group_by not in (None, "sandbox"):
            raise ApiError(400, "bad_group_by", "group_by is `sandbox` or absent")
        q = UsageQuery(
            tenant=tenant, from_ms=parse_ms(from_, "from"), to_ms=parse_ms(to, "to"), granularity=granularity,
            metrics=tuple(metric or METRICS), group_by_sandbox=group_by == "sandbox",
        )  # fmt: skip
        q.validate(settings.max_rows)
        rows = run_usage(ch_factory(), q)
        series = [
            {"start": format_ms(r["bucket_ms"]),
             **{k: (scaled(v, k) if k in METRICS else v) for k, v in r.items() if k != "bucket_ms"}}
            for r in rows
        ]  # fmt: skip
        totals = {m: scaled(sum(r[m] for r in rows), m) for m in q.metrics}
        body = {
            "tenant": tenant, "from": format_ms(q.from_ms), "to": format_ms(q.to_ms), "granularity": granularity,
            "totals": totals, "series": series,
        }  # fmt: skip
        return export(series, format, f"usage-{tenant}", bytes(JSONResponse(body).body))

    @app.get("/v1/tenants/{tenant}/cost", responses=ERRORS)
    def cost(
        who: Auth, tenant: str, from_: Annotated[str, Query(alias="from")], to: Annotated[str, Query()]
    ) -> dict[str, Any]:
        tenant_of(who, tenant)
        f, t = parse_ms(from_, "from"), parse_ms(to, "to")
        if f >= t:
            raise ApiError(400, "bad_range", "`from` must be before `to`")
        r = rate_range(ch_factory(), book, tenant, f, t)
        return {
            "tenant": tenant, "from": format_ms(f), "to": format_ms(t), "currency": r.plan.currency,
            "plan": {"id": r.plan.id, "version": r.plan.version}, "lines": r.lines, "total": fmt(r.subtotal),
            "rounding": rounding_note(r.plan),
            "note": "allowances and tiers apply to the requested range as a whole; the monthly invoice is the bill",
        }  # fmt: skip

    @app.get("/v1/tenants/{tenant}/invoices/{period}", responses=EXPORTS)
    def invoice(
        who: Auth,
        tenant: str,
        period: str,
        format: Annotated[Format, Query()] = "json",
    ) -> Response:
        tenant_of(who, tenant)
        status, body = invoices.get(ch_factory(), tenant, Period.parse(period), clock_ms())
        if format == "json":
            return Response(body, media_type="application/json", headers={"X-Invoice-Status": status})
        doc = json.loads(body)
        rows = [{"kind": "usage", **{k: ln[k] for k in ("metric", "unit", "quantity", "unit_price", "amount")}}
                for ln in doc["lines"]]  # fmt: skip
        rows += [{"kind": a["kind"], "metric": a.get("period", ""), "unit": "", "quantity": "", "unit_price": "",
                  "amount": a["amount"]} for a in doc["adjustments"]]  # fmt: skip
        rows.append({"kind": "total", "metric": "", "unit": doc["currency"], "quantity": "", "unit_price": "",
                     "amount": doc["total"]})  # fmt: skip
        return export(rows, format, f"invoice-{tenant}-{period}")

    @app.get("/v1/scale/{tenant}/{function}", responses=ERRORS)
    def scale(who: Auth, tenant: str, function: str) -> dict[str, Any]:
        """A KPA-style recommendation for KEDA's metrics-api scaler (`valueLocation: desired_replicas`)."""
        tenant_of(who, tenant)
        if not FUNCTION_RE.match(function):
            raise ApiError(400, "bad_function", "function names are 1-128 of [A-Za-z0-9._-]")
        try:
            rec = recommend(ch_factory(), tenant, function, clock_ms(), settings.scale_stale_s)
        except Stale as exc:
            raise ApiError(503, "stale", str(exc)) from None
        except UnknownFunction as exc:
            raise ApiError(404, "unknown_function", str(exc)) from None
        return {**rec, "timestamp": format_ms(rec.pop("timestamp_ms"))}

    @app.get("/v1/health/sandboxes", responses=ERRORS)
    def fleet_health(who: Auth, state: Annotated[str, Query()] = "open") -> dict[str, Any]:
        operator(who)
        return {"state": state, "incidents": incidents(ch_factory(), state)}

    @app.get("/v1/tenants/{tenant}/health", responses=ERRORS)
    def tenant_health(who: Auth, tenant: str, state: Annotated[str, Query()] = "open") -> dict[str, Any]:
        tenant_of(who, tenant)
        return {"tenant": tenant, "state": state, "incidents": incidents(ch_factory(), state, tenant)}

    return app
