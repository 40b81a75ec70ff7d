"""`sandmeter api`: usage, rated cost, invoices, health and scale recommendations, read-only.

Every /v1 route needs `Authorization: Bearer <api key>` (the spec's `apiKey` bearer scheme);
a tenant key reads only its own tenant (403 otherwise), the operator key reads everything.
Every error is an RFC 9457 problem (billing/errors.py); a request the schema accepts gets a
2xx or a 4xx, ClickHouse away a 503 with Retry-After, never another 5xx (tests/billing hold
that with schemathesis). No route writes: the API's queries are read-only at the server, and
invoices are finalized by `sandmeter invoices finalize` (billing/finalize.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic.json_schema import models_json_schema

from billing import errors, routes_fleet, routes_invoices, routes_usage
from billing.context import Context
from billing.db import read_only
from billing.invoices import Invoices
from billing.keys import KeyCache
from billing.observe import Observe, request_metrics
from billing.plans import PlanBook, load_book
from billing.settings import ApiSettings
from billing.usage import RangeCaps
from contracts.clock import wall_ms

TEXT = {"content": {"text/plain": {"schema": {"type": "string"}}}}


def create_app(
    settings: ApiSettings,
    ch_factory: Callable[[], Any],
    registry: CollectorRegistry | None = None,
    book: PlanBook | None = None,
    clock_ms: Callable[[], int] = wall_ms,
    billing_factory: Callable[[], Any] | None = None,
) -> FastAPI:
    """`billing_factory`: connections for the API keys and invoices (default `ch_factory`'s)."""
    registry = registry or CollectorRegistry()
    book = book or load_book(settings.plans_dir)  # a bad plan file stops the start-up, naming file:line
    db = read_only(ch_factory, settings.query_timeout_s)
    bill = db if billing_factory is None else read_only(billing_factory, settings.query_timeout_s)
    ctx = Context(
        settings, db, bill, KeyCache(bill, settings.key_cache_s), book,
        Invoices(book, int(settings.invoice_grace_s * 1000)), clock_ms,
        RangeCaps(settings.max_range_days, settings.max_exact_range_days),
    )  # fmt: skip
    app = FastAPI(
        title="sandmeter billing API", version="1",
        description="Usage, cost, invoices, health and scale recommendations. Errors are RFC 9457 problems.",
    )  # fmt: skip
    app.state.requests = app.state.errors = 0  # for the periodic status line
    app.state.ctx = ctx
    app.add_middleware(Observe, metrics=request_metrics(registry), state=app.state)
    errors.install(app)

    @app.get("/healthz", response_class=PlainTextResponse, responses={200: TEXT}, tags=["service"])
    def healthz() -> str:
        """The process answers."""
        return "ok"

    @app.get(
        "/readyz", response_class=PlainTextResponse, responses={200: TEXT, **errors.responses(503)}, tags=["service"]
    )
    def readyz() -> Response:
        """Ready to serve: the usage store answers. Says nothing else (no addresses, no messages)."""
        try:
            ctx.db().execute("SELECT 1")
        except Exception:
            return errors.problem(503, "not_ready", "not ready; retry later", {"Retry-After": "5"})
        return PlainTextResponse("ready")

    @app.get("/metrics", response_class=PlainTextResponse, responses={200: TEXT}, tags=["service"])
    def metrics() -> Response:
        """Prometheus metrics."""
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    for module in (routes_usage, routes_invoices, routes_fleet):
        app.include_router(module.routes(ctx))
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """The generated spec, plus the problem schema every error response refers to."""
    if app.openapi_schema is None:
        spec = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        _, defs = models_json_schema([(errors.Problem, "serialization")], ref_template="#/components/schemas/{model}")
        spec.setdefault("components", {}).setdefault("schemas", {}).update(defs.get("$defs", {}))
        for path in spec["paths"].values():
            for op in path.values():
                for param in op.get("parameters", []):
                    _drop_null(param["schema"])
        app.openapi_schema = spec
    return app.openapi_schema


def _drop_null(schema: dict[str, Any]) -> None:
    """An absent query parameter is not a null one: `X | None = None` is stated as X, not required."""
    options = schema.get("anyOf")
    if options and {"type": "null"} in options:
        rest = [o for o in options if o != {"type": "null"}]
        del schema["anyOf"]
        if len(rest) == 1:
            schema.update(rest[0])
        else:
            schema["anyOf"] = rest
