"""One error format for every status: RFC 9457 `application/problem+json`.

A problem carries `type` (a URN naming the problem), `title`, `status`, `detail` and our
`code`; a 422 adds `errors`, one per invalid parameter. Every invalid request is a 422,
whether the schema or a rule the schema cannot state (`from` before `to`, the range cap)
refused it. Header values set here are constants or validated values only.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any, Final

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

log = logging.getLogger(__name__)
PROBLEM_JSON: Final = "application/problem+json"
INVALID: Final = 422
RETRY_AFTER_S: Final = 5
BEARER_CHALLENGE: Final = 'Bearer realm="sandmeter"'


class ApiError(Exception):
    """An answer other than 2xx; `headers` must hold only constants or validated values."""

    def __init__(
        self, status: int, code: str, detail: str, headers: dict[str, str] | None = None,
        errors: list[dict[str, str]] | None = None,
    ) -> None:  # fmt: skip
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail
        self.headers, self.errors = headers or {}, errors


def invalid(code: str, detail: str, location: str) -> ApiError:
    """A request the schema lets through but a rule refuses: a 422 like any invalid parameter."""
    return ApiError(INVALID, code, detail, errors=[{"location": location, "message": detail}])


def unavailable(code: str, detail: str) -> ApiError:
    """Try again later: a 503 that says when."""
    return ApiError(503, code, detail, {"Retry-After": str(RETRY_AFTER_S)})


def unauthenticated(detail: str) -> ApiError:
    return ApiError(401, "unauthenticated", detail, {"WWW-Authenticate": BEARER_CHALLENGE})


def forbidden(detail: str) -> ApiError:
    return ApiError(403, "forbidden", detail)


class FieldError(BaseModel):
    location: str = Field(examples=["query.from"])
    message: str


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str = Field(examples=["urn:sandmeter:problem:invalid_request"])
    title: str
    status: int = Field(ge=400, le=599)
    detail: str
    code: str = Field(pattern=r"^[a-z_]{1,40}$", description="stable, for programs; `title` is for people")
    errors: list[FieldError] | None = Field(None, description="422 only: each invalid parameter")


def problem(status: int, code: str, detail: str, headers: dict[str, str] | None = None,
            errors: list[dict[str, str]] | None = None) -> JSONResponse:  # fmt: skip
    body: dict[str, Any] = {
        "type": f"urn:sandmeter:problem:{code}", "title": HTTPStatus(status).phrase, "status": status,
        "detail": detail, "code": code,
    }  # fmt: skip
    if errors is not None:
        body["errors"] = errors
    return JSONResponse(body, status, headers=headers, media_type=PROBLEM_JSON)


def _loc(loc: tuple[Any, ...]) -> str:
    return ".".join(str(x) for x in loc) or "request"


def _msg(error: dict[str, Any]) -> str:
    return str(error.get("msg", "invalid")).removeprefix("Value error, ")


def install(app: FastAPI) -> None:
    """Problem handlers for our errors, invalid requests, and the router's 404 and 405."""

    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return problem(exc.status, exc.code, exc.detail, exc.headers, exc.errors)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"location": _loc(tuple(e.get("loc", ()))), "message": _msg(e)} for e in exc.errors()]
        errors = errors or [{"location": "request", "message": "invalid"}]
        detail = "; ".join(f"{e['location']}: {e['message']}" for e in errors[:3])
        return problem(INVALID, "invalid_request", detail, errors=errors)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        status = exc.status_code if 400 <= exc.status_code < 600 else 500
        code = {404: "not_found", 405: "method_not_allowed"}.get(status, "http_error")
        # the router's own headers (`Allow` on a 405) are built from the route table
        return problem(status, code, HTTPStatus(status).description or HTTPStatus(status).phrase,
                       dict(exc.headers) if exc.headers else None)  # fmt: skip


def internal_error() -> JSONResponse:
    return problem(500, "internal", "an unexpected error; it is logged and counted, and not the client's fault")


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for these error statuses, with their headers (`Problem` is added to the
    spec's components by billing/app.py, since no route returns it as a model)."""
    headers = {
        401: {"WWW-Authenticate": {"description": "Bearer", "schema": {"type": "string"}, "required": True}},
        503: {"Retry-After": {"description": "seconds", "schema": {"type": "string", "pattern": "^[0-9]+$"},
                              "required": True}},
    }  # fmt: skip
    out: dict[int | str, dict[str, Any]] = {}
    for s in statuses:
        entry: dict[str, Any] = {
            "description": HTTPStatus(s).phrase,
            "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        if s in headers:
            entry["headers"] = headers[s]
        out[s] = entry
    return out
