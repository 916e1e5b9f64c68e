"""The only place that maps errors to HTTP status codes; bodies are problem JSON and never echo input."""

from __future__ import annotations

import logging
import traceback
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse

from broker.domain.names import NOT_SHOWN, shown
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


_SOURCES = ("body", "query", "path", "header")


def _field_path(loc: tuple[Any, ...]) -> str:
    parts = [shown(p) for p in loc if p not in _SOURCES]
    if parts:
        return ".".join(parts)
    return loc[0] if loc and loc[0] in _SOURCES else "request"


def _position(body: Any, parent: tuple[Any, ...], key: object) -> tuple[int, int] | None:
    """(1-based position of `key` among the keys of the object at `parent` in the parsed body, keys)."""
    node = body
    for part in parent:
        found = (isinstance(node, Mapping) and part in node) or (
            isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        )
        if not found:
            return None
        node = node[part]
    if not isinstance(node, Mapping):
        return None
    keys = list(node)
    return (keys.index(key) + 1, len(keys)) if key in keys else None


def describe_validation_error(error: Mapping[str, Any], body: Any) -> tuple[str, str]:
    """One validation problem as (the sentence the client gets, the sentence the audit trail records),
    each naming where the problem is and neither repeating the request's own text beyond a bounded
    plain name (`shown`).

    An unknown field's name goes back to the client that sent it only when it is such a plain name;
    the audit trail, which others read for years, names it by position only: a client that pasted a
    value where a name goes must not find it on record. Pydantic's messages name the rule, not the input.
    """
    loc = tuple(error.get("loc", ()))
    if error.get("type") == "extra_forbidden" and loc:
        parent = loc[:-1]
        where = _field_path(parent) if [p for p in parent if p not in _SOURCES] else "body"
        at = _position(body, tuple(p for p in parent if p not in _SOURCES), loc[-1])
        which = f"key {at[0]} of {at[1]}" if at is not None else "a key"
        recorded = f"{where}: {which} is not a field of this request (unknown names are not recorded)"
        if shown(loc[-1]) == NOT_SHOWN:
            return f"{where}: {which} is not a field of this request (its name is not shown)", recorded
        return f"{_field_path(loc)}: {error.get('msg', 'unknown field')}", recorded
    message = str(error.get("msg", "invalid"))
    given = error.get("input")
    if isinstance(given, str) and len(given) >= 4 and given in message:
        message = "invalid value"  # a rule whose message quotes the input (none today): keep the rule's place
    detail = f"{_field_path(loc)}: {message}"
    return detail, detail


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
    detail, recorded = describe_validation_error(first, exc.body)
    if len(errors) > 1:
        more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
        detail, recorded = detail + more, recorded + more
    ctx = _ctx(request)
    if ctx is not None and ctx.reason is None:
        ctx.reason = recorded
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
