"""/v1/health/sandboxes, /v1/tenants/{tenant}/health and /v1/scale/{tenant}/{function}."""

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from billing.context import Auth, Context, may_read, operator_only
from billing.errors import ApiError, responses, unavailable
from billing.health import incidents
from billing.models import IncidentPage, Recommendation
from billing.params import FunctionName, IncidentCursor, IncidentState, TenantId
from billing.timeparse import format_ms
from scaling import Stale, UnknownFunction, recommend

ERRORS = responses(401, 403, 422, 500, 503)
Limit = Annotated[int, Query(ge=1, le=1000, description="incidents per page")]


def routes(ctx: Context) -> APIRouter:
    router = APIRouter(prefix="/v1")

    @router.get("/health/sandboxes", response_model=IncidentPage, responses=ERRORS, tags=["health"])
    def fleet_health(
        who: Auth, state: IncidentState = "open", limit: Limit = 100, cursor: IncidentCursor | None = None
    ) -> Any:
        """Incidents of every sandbox and host disk (operator key), newest first."""
        operator_only(who)
        page, nxt = incidents(ctx.db(), state, limit, cursor)
        return {"state": state, "incidents": page, "next_cursor": nxt}

    @router.get("/tenants/{tenant}/health", response_model=IncidentPage, responses=ERRORS, tags=["health"])
    def tenant_health(
        who: Auth,
        tenant: Annotated[TenantId, Path()],
        state: IncidentState = "open",
        limit: Limit = 100,
        cursor: IncidentCursor | None = None,
    ) -> Any:
        """Incidents of the tenant's sandboxes, newest first (never a host disk's: see /v1/health/sandboxes)."""
        may_read(who, tenant)
        page, nxt = incidents(ctx.db(), state, limit, cursor, tenant)
        return {"state": state, "tenant": tenant, "incidents": page, "next_cursor": nxt}

    @router.get(
        "/scale/{tenant}/{function}", response_model=Recommendation, responses=responses(401, 403, 404, 422, 500, 503),
        tags=["scale"],
    )  # fmt: skip
    def scale(who: Auth, tenant: Annotated[TenantId, Path()], function: Annotated[FunctionName, Path()]) -> Any:
        """A KPA-style recommendation for KEDA's metrics-api scaler (`valueLocation: desired_replicas`).

        503 (with Retry-After) when the newest load data is stale: never a 0 that would scale to zero.
        """
        may_read(who, tenant)
        try:
            rec = recommend(ctx.db(), tenant, function, ctx.clock_ms(), ctx.settings.scale_stale_s)
        except Stale as exc:
            raise unavailable("stale", str(exc)) from None
        except UnknownFunction as exc:
            raise ApiError(404, "unknown_function", str(exc)) from None
        stamp = format_ms(rec.pop("timestamp_ms"))
        return {**rec, "timestamp": stamp}

    return router
