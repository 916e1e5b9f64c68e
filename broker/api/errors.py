"""The only place that maps errors to HTTP status codes; bodies are problem JSON and never echo input."""

from __future__ import annotations

import logging
import traceback
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse

from broker.domain.request import RequestContext
from broker.errors import (
    BrokerError,
    Conflict,
    Forbidden,
    IntegrityError,
    Invalid,
    NotFound,
    RateLimited,
    Throttled,
    Unauthenticated,
    Unavailable,
)

log = logging.getLogger("strongroom.api")

STATUS: list[tuple[type[BrokerError], int, str]] = [
    (Invalid, 400, "Bad Request"),
    (Unauthenticated, 401, "Unauthorized"),
    (Forbidden, 403, "Forbidden"),
    (NotFound, 404, "Not Found"),
    (Conflict, 409, "Conflict"),
    (RateLimited, 429, "Too Many Requests"),
    (IntegrityError, 500, "Internal Server Error"),
    (Unavailable, 503, "Service Unavailable"),
]


def _ctx(request: Request) -> RequestContext | None:
    ctx = request.scope.get("state", {}).get("ctx")
    return ctx if isinstance(ctx, RequestContext) else None


def problem(
    request: Request, status: int, title: str, detail: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    """A problem-JSON response carrying the request id."""
    ctx = _ctx(request)
    if ctx is not None and ctx.reason is None:
        ctx.reason = detail
    body = {
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
        "request_id": ctx.request_id if ctx else None,
    }
    return JSONResponse(
        body,
        status_code=status,
        media_type="application/problem+json",
        headers={"Cache-Control": "no-store", **(headers or {})},
    )


def _field_path(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or str(loc[0] if loc else "request")


async def on_broker_error(request: Request, exc: Exception) -> JSONResponse:
    """BrokerError -> status by type, the error's own sentence as detail."""
    assert isinstance(exc, BrokerError)
    for kind, status, title in STATUS:
        if isinstance(exc, kind):
            headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, RateLimited) else None
            if isinstance(exc, Unavailable):
                headers = {"Retry-After": str(exc.retry_after) if isinstance(exc, Throttled) else "5"}
            if isinstance(exc, Unauthenticated):
                headers = {"WWW-Authenticate": "Bearer"}
            return problem(request, status, title, exc.message, headers)
    return problem(request, 500, "Internal Server Error", "internal error")


async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    """Pydantic validation -> 400 naming the field and the rule; never the submitted input."""
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    first = errors[0] if errors else {"loc": ("body",), "msg": "invalid request"}
    detail = f"{_field_path(tuple(first.get('loc', ())))}: {first.get('msg', 'invalid')}"
    if len(errors) > 1:
        detail += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return problem(request, 400, "Bad Request", detail)


async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
    """Starlette's own errors (unknown route, wrong method) as problem JSON."""
    assert isinstance(exc, StarletteHTTPException)
    titles = {404: "Not Found", 405: "Method Not Allowed"}
    detail = {404: "no such route", 405: "method not allowed on this route"}.get(
        exc.status_code, "request refused"
    )
    return problem(request, exc.status_code, titles.get(exc.status_code, "Error"), detail)


async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    """Anything else: a generic 500; the log gets the type and frames but not the message (it may hold input)."""
    frames = "".join(traceback.format_tb(exc.__traceback__))
    ctx = _ctx(request)
    log.error("unhandled %s in request %s\n%s", type(exc).__name__, ctx.request_id if ctx else "-", frames)
    if ctx is not None:
        ctx.reason = f"internal error ({type(exc).__name__})"
        # The service's event may have gone with its transaction (a failed commit): have the edge
        # record this failure; after a crash past the commit the request has an `ok` and an `error` event.
        ctx.audited = False
    return problem(
        request, 500, "Internal Server Error", "internal error; the request id identifies it in the logs"
    )


def _publish_400_not_422(app: FastAPI) -> None:
    """Validation errors answer 400 (above), so drop FastAPI's default 422 from the OpenAPI document."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        doc = generate()
        for item in doc.get("paths", {}).values():
            for operation in item.values():
                if isinstance(operation, dict):
                    operation.get("responses", {}).pop("422", None)
        schemas = doc.get("components", {}).get("schemas", {})
        for name in ("HTTPValidationError", "ValidationError"):
            schemas.pop(name, None)
        return doc

    app.openapi = openapi  # type: ignore[method-assign]


def install(app: FastAPI) -> None:
    """Register every handler on the app."""
    app.add_exception_handler(BrokerError, on_broker_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)
    _publish_400_not_422(app)
