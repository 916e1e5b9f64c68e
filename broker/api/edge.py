"""Pure ASGI middleware at the edge: request context, body limit, and the audit safety net."""

from __future__ import annotations

import ipaddress
import json
import logging
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from broker.domain.request import RequestContext
from broker.services import audit
from broker.services.runtime import Runtime

log = logging.getLogger("strongroom.edge")

UNAUDITED_PATHS = frozenset({"/up", "/healthz"})


def _problem(status: int, title: str, detail: str, request_id: str) -> tuple[dict[str, Any], bytes]:
    body = json.dumps(
        {"type": "about:blank", "title": title, "status": status, "detail": detail, "request_id": request_id}
    ).encode()
    start = {
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", b"application/problem+json"),
            (b"content-length", str(len(body)).encode()),
            (b"cache-control", b"no-store"),
            (b"x-request-id", request_id.encode()),
        ],
    }
    return start, body


class _BodyTooLarge(Exception):
    pass


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def client_address(scope: Scope, headers: dict[bytes, bytes], trusted: list[Network]) -> str | None:
    """The caller's address; X-Forwarded-For is believed only when the peer is a trusted proxy."""
    client = scope.get("client")
    peer: str | None = str(client[0]) if client else None
    if not trusted or peer is None or b"x-forwarded-for" not in headers:
        return peer

    def is_trusted(addr: str) -> bool:
        try:
            ip = ipaddress.ip_address(addr)
        except ValueError:
            return False
        return any(ip in net for net in trusted)

    if not is_trusted(peer):
        return peer
    hops = [h.strip() for h in headers[b"x-forwarded-for"].decode("latin-1").split(",")]
    # Walk from the nearest hop back; the first address not a trusted proxy is the client.
    for hop in reversed(hops):
        if not is_trusted(hop):
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:
                return peer
    return peer


class Edge:
    """Sets up the request context, enforces the body limit and guarantees one audit event per request.

    Services record the event inside their own transaction; whatever they did not record (failures,
    unknown routes) is recorded here before the response starts. If that fails the client gets 503
    and nothing else: no value leaves without its audit event.
    """

    def __init__(self, app: ASGIApp, runtime: Runtime) -> None:
        self.app = app
        self.rt = runtime
        self.max_body = runtime.settings.max_body_bytes
        self.trusted: list[Network] = [
            ipaddress.ip_network(c, strict=False) for c in runtime.settings.trusted_proxies
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        request_id = uuid.uuid4().hex
        ctx = RequestContext(
            request_id=request_id,
            method=scope["method"],
            route=scope["path"][:256],
            source_addr=client_address(scope, headers, self.trusted),
            user_agent=headers.get(b"user-agent", b"").decode("latin-1")[:512] or None,
        )
        scope.setdefault("state", {})["ctx"] = ctx
        audited_path = scope["path"] not in UNAUDITED_PATHS

        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_body):
            ctx.reason = "request body over the size limit"
            await self._reply(send, ctx, 413, "Content Too Large", f"body: larger than {self.max_body} bytes")
            return

        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    state["too_large"] = True
                    raise _BodyTooLarge
            return message

        state = {"started": False, "swallow": False, "too_large": False}

        async def audited_send(message: Message) -> None:
            if state["swallow"]:
                return
            if message["type"] == "http.response.start" and state["too_large"] and not state["started"]:
                # FastAPI turns any error while reading the body into its own 400; the answer is 413.
                state["started"] = state["swallow"] = True
                ctx.reason = "request body over the size limit"
                await self._reply(
                    send, ctx, 413, "Content Too Large", f"body: larger than {self.max_body} bytes"
                )
                return
            if message["type"] == "http.response.start":
                state["started"] = True
                message.setdefault("headers", []).append((b"x-request-id", request_id.encode()))
                if audited_path and not ctx.audited:
                    try:
                        await audit.record_alone(self.rt, ctx, status=message["status"])
                    except Exception:
                        log.exception("audit write failed; answering 503 (request %s)", request_id)
                        state["swallow"] = True
                        start, body = _problem(
                            503,
                            "Service Unavailable",
                            "the audit trail is unavailable; retry later",
                            request_id,
                        )
                        start["headers"].append((b"retry-after", b"5"))
                        await send(start)
                        await send({"type": "http.response.body", "body": body})
                        return
            await send(message)

        try:
            await self.app(scope, limited_receive, audited_send)
        except _BodyTooLarge:
            if state["started"]:
                raise
            ctx.reason = "request body over the size limit"
            await self._reply(send, ctx, 413, "Content Too Large", f"body: larger than {self.max_body} bytes")
        except Exception as exc:
            # Starlette re-raises after it has answered 500; the server would then log the exception's
            # message, which may quote input. api/errors.py already logged the type and frames.
            if not state["started"]:
                ctx.reason = f"internal error ({type(exc).__name__})"
                await self._reply(send, ctx, 500, "Internal Server Error", "internal error")

    async def _reply(self, send: Send, ctx: RequestContext, status: int, title: str, detail: str) -> None:
        try:
            await audit.record_alone(self.rt, ctx, status=status)
        except Exception:
            log.exception("audit write failed; answering 503 (request %s)", ctx.request_id)
            status, title, detail = 503, "Service Unavailable", "the audit trail is unavailable; retry later"
        start, body = _problem(status, title, detail, ctx.request_id)
        await send(start)
        await send({"type": "http.response.body", "body": body})
