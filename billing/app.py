"""`sandmeter api`: the billing API over what the processor wrote to ClickHouse."""

from __future__ import annotations

import time
from collections.abc import Callable
from decimal import Decimal
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest

from billing.errors import ApiError
from billing.timeparse import format_ms, parse_ms
from billing.usage import METRICS, UsageQuery, list_tenants, run_usage
from sandmeter.settings import ApiSettings

REQUEST_SECONDS = "sandmeter_api_request_duration_seconds"


def _dec(d: Decimal) -> str:
    return format(d.normalize(), "f") if d == d.to_integral() else format(d, "f")


def create_app(
    settings: ApiSettings, ch_factory: Callable[[], Any], registry: CollectorRegistry | None = None
) -> FastAPI:
    registry = registry or CollectorRegistry()
    latency = Histogram(REQUEST_SECONDS, "Request latency", ["route", "status"], registry=registry)
    app = FastAPI(title="sandmeter billing API", version="1")

    @app.middleware("http")
    async def timing(request: Request, call_next: Callable[[Request], Any]) -> Response:
        t0 = time.perf_counter()
        resp: Response = await call_next(request)
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

    @app.get("/healthz", response_class=PlainTextResponse)
    def healthz() -> str:
        return "ok"

    @app.get("/readyz", response_class=PlainTextResponse)
    def readyz() -> Response:
        try:
            ch_factory().execute("SELECT 1")
        except Exception as exc:
            return JSONResponse({"code": "clickhouse_unreachable", "message": str(exc)[:200]}, 503)
        return PlainTextResponse("ready")

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/tenants")
    def tenants(from_: Annotated[str, Query(alias="from")], to: Annotated[str, Query()]) -> dict[str, Any]:
        f, t = parse_ms(from_, "from"), parse_ms(to, "to")
        return {"tenants": list_tenants(ch_factory(), f, t)}

    @app.get("/v1/tenants/{tenant}/usage")
    def usage(
        tenant: str,
        from_: Annotated[str, Query(alias="from")],
        to: Annotated[str, Query()],
        granularity: Annotated[str, Query()] = "hour",
        metric: Annotated[list[str] | None, Query()] = None,
        group_by: Annotated[str | None, Query()] = None,
    ) -> dict[str, Any]:
        if group_by not in (None, "sandbox"):
            raise ApiError(400, "bad_group_by", "group_by is `sandbox` or absent")
        q = UsageQuery(
            tenant=tenant,
            from_ms=parse_ms(from_, "from"),
            to_ms=parse_ms(to, "to"),
            granularity=granularity,
            metrics=tuple(metric or METRICS),
            group_by_sandbox=group_by == "sandbox",
        )
        q.validate(settings.max_rows)
        rows = run_usage(ch_factory(), q)
        series = [
            {
                **{k: (_dec(v) if isinstance(v, Decimal) else v) for k, v in r.items() if k != "bucket_ms"},
                "start": format_ms(r["bucket_ms"]),
            }
            for r in rows
        ]
        totals = {m: _dec(sum((r[m] for r in rows), Decimal(0))) for m in q.metrics}
        return {
            "tenant": tenant,
            "from": format_ms(q.from_ms),
            "to": format_ms(q.to_ms),
            "granularity": granularity,
            "totals": totals,
            "series": series,
        }

    return app
