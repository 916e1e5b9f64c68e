"""Pure ASGI middleware around the edge: the request id, request metrics and the request log line.

It sits on every request of the hot read path, so it does little: one pass over the header list, a
clock read at each end, two metric updates through cached label children, and a log record only when
request lines are on. What it records is bounded and value-free: the route is its template (never the
path, never the query string: names are data), the actor is a token accessor, never the token.
"""

from __future__ import annotations

import logging
import re
import uuid
from time import perf_counter

from starlette.routing import Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from broker.api.edge import UNAUDITED_PATHS, Edge, match_template
from broker.domain.request import RequestContext
from broker.services.metrics import Metrics
from broker.services.runtime import Runtime

log = logging.getLogger("strongroom.request")

# An inbound X-Request-Id is a caller's (or a proxy's) correlation id: logged beside the broker's own id when it
# is a plain token; anything else (too long, spaces, quotes, control characters) is dropped. The broker's id,
# the one in the audit trail, the problem bodies and the X-Request-Id answer, is always its own, so it is unique
# (catalogue 30 links request and response entries by it) and no caller can pass for a system event's `sys-`.
_REQUEST_ID = re.compile(rb"[A-Za-z0-9][A-Za-z0-9._:=-]{0,63}")
UNMATCHED = "unmatched"


def client_request_id(scope: Scope) -> str | None:
    """The inbound X-Request-Id if well-formed, else None."""
    key: bytes
    value: bytes
    for key, value in scope.get("headers") or ():
        if key == b"x-request-id":
            return value.decode("ascii") if _REQUEST_ID.fullmatch(value) else None
    return None


def route_template(scope: Scope) -> str:
    """The template of the route a request reached (`unmatched` when none): bounded label values."""
    route = scope.get("route")
    template = getattr(route, "path", None) if route is not None else None
    if isinstance(template, str) and not isinstance(route, Mount):
        # A mounted app's routes (the console's) are relative to its mount: put the mount's path back.
        mount: str = scope.get("root_path", "")[len(scope.get("app_root_path", scope.get("root_path", ""))) :]
        return mount + template
    # Answered before routing (a body over the limit, a read-only refusal): the route it was meant for.
    found, _ = match_template(scope["method"], scope["path"])
    return found or UNMATCHED


class ObservedEdge(Edge):
    """The edge, observed: sets the request id the edge and the audit event use, then runs the edge, then
    counts and times the request and logs a line.

    A subclass rather than one more wrapper, so the application stays one layer around FastAPI (`.app`)
    for everything that inspects it; the observing part runs around the whole edge all the same."""

    def __init__(self, app: ASGIApp, runtime: Runtime, metrics: Metrics, *, log_requests: bool) -> None:
        super().__init__(app, runtime)
        self.metrics = metrics
        self.log_requests = log_requests

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        start = perf_counter()
        rid = uuid.uuid4().hex
        cid = client_request_id(scope)
        scope.setdefault("state", {})["request_id"] = rid
        status = 500

        async def observed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await super().__call__(scope, receive, observed_send)
        finally:
            seconds = perf_counter() - start
            route = route_template(scope)
            self.metrics.request(scope["method"], route, status, seconds)
            ctx = scope["state"].get("ctx")
            if (
                status == 503
                and isinstance(ctx, RequestContext)
                and not ctx.audited
                and scope["path"] not in UNAUDITED_PATHS
            ):
                # The edge records every audited request's event before answering; a 503 without one
                # is a request no sink could record.
                self.metrics.audit_append_failures.inc()
            if self.log_requests:
                actor = ctx.actor.accessor if isinstance(ctx, RequestContext) and ctx.actor else None
                log.info(
                    "%s %s %d",
                    scope["method"],
                    route,
                    status,
                    extra={
                        "request_id": rid,
                        "client_request_id": cid,
                        "method": scope["method"],
                        "route": route,
                        "status": status,
                        "duration_ms": round(seconds * 1000, 3),
                        "actor": actor,
                    },
                )
