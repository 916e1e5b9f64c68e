"""Pure ASGI middleware at the edge: request context, body limit, and the audit safety net."""

from __future__ import annotations

import ipaddress
import json
import logging
import re
import uuid
from functools import lru_cache
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from broker.domain.request import RequestContext
from broker.errors import BrokerError
from broker.services import audit
from broker.services.runtime import Runtime

log = logging.getLogger("strongroom.edge")

UNAUDITED_PATHS = frozenset({"/up", "/healthz", "/readyz"})

_P = "/v1/projects/{project}"
_E = _P + "/environments/{environment}"
_S = _E + "/secrets/{name}"
# The action of each route, for the events the edge records when no service got as far as naming it
# (401s, body validation errors, crashes): the same name the service uses on success, so one filter
# finds every attempt. A test fails when a route is missing here.
ROUTE_ACTIONS: dict[tuple[str, str], str] = {
    ("GET", "/openapi.json"): "api.docs",
    ("GET", "/docs"): "api.docs",
    ("GET", "/docs/oauth2-redirect"): "api.docs",
    ("POST", "/v1/auth/token"): "auth.token",
    ("POST", "/v1/auth/oidc"): "auth.oidc",
    ("GET", "/v1/auth/token/self"): "token.lookup-self",
    ("POST", "/v1/auth/token/renew"): "token.renew-self",
    ("POST", "/v1/auth/token/revoke-self"): "token.revoke-self",
    ("POST", "/v1/tokens"): "token.create",
    ("GET", "/v1/tokens"): "token.list",
    ("POST", "/v1/tokens/lookup"): "token.lookup",
    ("POST", "/v1/tokens/revoke"): "token.revoke",
    ("POST", "/v1/identities"): "identity.create",
    ("GET", "/v1/identities"): "identity.list",
    ("GET", "/v1/identities/{client_id}"): "identity.read",
    ("POST", "/v1/identities/{client_id}/disable"): "identity.disable",
    ("POST", "/v1/identities/{client_id}/enable"): "identity.enable",
    ("POST", "/v1/identities/{client_id}/rotate-secret"): "identity.rotate-secret",
    ("DELETE", "/v1/identities/{client_id}"): "identity.delete",
    ("GET", "/v1/projects"): "project.list",
    ("POST", "/v1/projects"): "project.create",
    ("GET", _P): "project.read",
    ("PATCH", _P): "project.update",
    ("DELETE", _P): "project.delete",
    ("GET", _P + "/environments"): "environment.list",
    ("POST", _P + "/environments"): "environment.create",
    ("GET", _E): "environment.read",
    ("PATCH", _E): "environment.update",
    ("DELETE", _E): "environment.delete",
    ("GET", _E + "/secrets"): "secret.list",
    ("GET", _S): "secret.read",
    ("PUT", _S): "secret.write",
    ("DELETE", _S): "secret.delete",
    ("POST", _S + "/undelete"): "secret.undelete",
    ("GET", _S + "/versions"): "secret.history",
    ("POST", _S + "/versions/{version}/destroy"): "secret.destroy",
    ("POST", _S + "/rollback"): "secret.rollback",
    ("POST", _S + "/generate"): "secret.generate",
    ("GET", _E + "/resolved"): "secret.resolve",
    ("POST", _E + "/compile"): "compile",
    ("POST", _E + "/check"): "compile.check",
    ("POST", _E + "/values"): "secret.read_many",
    ("GET", _P + "/diff"): "secret.diff",
    ("POST", _E + "/import"): "secret.import",
    ("GET", "/v1/audit/events"): "audit.list",
    ("GET", "/v1/audit/export"): "audit.export",
    ("GET", "/v1/audit/checkpoints"): "audit.checkpoints",
    ("POST", "/v1/audit/fingerprint"): "audit.fingerprint",
    ("GET", "/v1/audit/status"): "audit.status",
    ("POST", _E + "/deploys"): "deploy.create",
    ("GET", _E + "/deploys"): "deploy.list",
    ("POST", _E + "/deploys/status"): "deploy.status",
    ("GET", "/v1/deploys/{deploy_id}"): "deploy.read",
    ("POST", "/v1/deploys/{deploy_id}/bundle"): "deploy.bundle",
    ("POST", "/v1/deploys/{deploy_id}/hosts"): "deploy.host",
    ("POST", "/v1/deploys/{deploy_id}/finish"): "deploy.finish",
    # The web console (broker/console): its looks carry the actions of their API twins.
    ("GET", "/console/login"): "console.page",
    ("POST", "/console/login"): "auth.token",
    ("POST", "/console/logout"): "token.revoke-self",
    ("GET", "/console/"): "console.page",
    ("GET", "/console/audit"): "audit.list",
    ("GET", "/console/audit/events/{seq}"): "audit.list",
    ("GET", "/console/audit/chain"): "audit.status",
    ("GET", "/console/audit/fingerprint"): "console.page",
    ("POST", "/console/audit/fingerprint"): "audit.fingerprint",
    ("GET", "/console/audit/export"): "audit.export",
    ("GET", "/console/projects"): "project.list",
    ("GET", "/console/projects/{project}"): "environment.list",
    ("GET", "/console/projects/{project}/environments/{environment}"): "secret.list",
    ("POST", "/console/projects/{project}/environments/{environment}/secrets/{name}/reveal"): "secret.reveal",
    ("GET", "/console/projects/{project}/diff"): "secret.diff",
    ("GET", "/console/projects/{project}/environments/{environment}/deploys"): "deploy.list",
    ("GET", "/console/projects/{project}/environments/{environment}/deploys/status"): "deploy.status",
    ("POST", "/console/projects/{project}/environments/{environment}/deploys/status"): "deploy.status",
    ("GET", "/console/deploys/{deploy_id}"): "deploy.read",
    ("GET", "/console/identities"): "identity.list",
    ("GET", "/console/tokens"): "token.list",
    ("POST", "/console/tokens/revoke"): "token.revoke",
    ("GET", "/console/static/console.css"): "console.asset",
    ("GET", "/console/sso/start"): "auth.sso-start",
    ("GET", "/console/sso/callback"): "auth.sso",
}
UNROUTED = "request.unrouted"
# What a read-only broker (its database is behind the last audit checkpoint) still answers besides reads.
READ_ONLY_ALLOWED = frozenset(
    {
        ("POST", "/v1/auth/token"),
        ("POST", "/v1/auth/oidc"),
        ("POST", "/v1/auth/token/renew"),
        ("POST", "/v1/auth/token/revoke-self"),
        ("POST", "/v1/audit/fingerprint"),
        ("POST", _E + "/values"),
        ("POST", _E + "/check"),
        ("POST", _E + "/compile"),
        ("POST", _E + "/deploys/status"),
        # The console's reads that POST (an auditor needs them most when the broker is read-only).
        ("POST", "/console/login"),
        ("POST", "/console/logout"),
        ("POST", "/console/audit/fingerprint"),
        ("POST", "/console/projects/{project}/environments/{environment}/secrets/{name}/reveal"),
        ("POST", "/console/projects/{project}/environments/{environment}/deploys/status"),
    }
)
READ_ONLY = (
    "the broker is read-only: its database is behind the last signed audit checkpoint; changes are "
    "refused until an operator resolves it"
)


_TEMPLATES = [
    (verb, re.compile(re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template))), template)
    for verb, template in ROUTE_ACTIONS
]


def match_template(method: str, path: str) -> tuple[str | None, dict[str, str]]:
    """The route template a method and path would reach, with its path parameters (before routing)."""
    for verb, pattern, template in _TEMPLATES:
        if verb == method and (m := pattern.fullmatch(path)) is not None:
            return template, m.groupdict()
    return None, {}


def fill_from_route(scope: Scope, ctx: RequestContext) -> None:
    """Name the action and resource of a request no service described, from the route it matched."""
    route = scope.get("route")
    if route is not None:
        methods = getattr(route, "methods", None) or ()
        template = getattr(route, "path", None) if ctx.method in methods else None
        params = scope.get("path_params") or {}
    else:
        template, params = match_template(ctx.method, scope["path"])
    if ctx.action is None:
        ctx.action = ROUTE_ACTIONS.get((ctx.method, template or ""), UNROUTED)
    for key, attr, limit in (
        ("project", "project", 64),
        ("environment", "environment", 64),
        ("name", "secret_name", 256),
    ):
        value = params.get(key)
        if getattr(ctx, attr) is None and isinstance(value, str):
            setattr(ctx, attr, value[:limit])
    version = params.get("version")
    if ctx.version is None and isinstance(version, str) and version.isdigit() and len(version) <= 9:
        ctx.version = int(version)


def _read_only_refuses(method: str, template: str | None) -> bool:
    if method in ("GET", "HEAD", "OPTIONS"):
        return False
    return (method, template) not in READ_ONLY_ALLOWED


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


@lru_cache(maxsize=4096)
def _unmapped(addr: str) -> str:
    # Dual-stack listeners report IPv4 peers as ::ffff:a.b.c.d; audit and match them as IPv4. Cached:
    # the same few peers (a proxy, the load balancer) send almost every request.
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return addr
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return addr


def client_address(scope: Scope, headers: dict[bytes, bytes], trusted: list[Network]) -> str | None:
    """The caller's address; X-Forwarded-For is believed only when the peer is a trusted proxy."""
    client = scope.get("client")
    peer: str | None = _unmapped(str(client[0])) if client else None
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


async def _lifespan_in_one_sentence(app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
    """Run the app's lifespan; a failed start-up reaches the server as one sentence (Starlette sends the
    whole traceback, which uvicorn prints), the broker's own message or the error's type."""
    held: list[Message] = []

    async def hold_failure(message: Message) -> None:
        if message["type"] == "lifespan.startup.failed":
            held.append(message)
        else:
            await send(message)

    try:
        await app(scope, receive, hold_failure)
    except Exception as exc:
        if not held:
            raise
        text = (
            exc.message
            if isinstance(exc, BrokerError)
            else f"start-up failed: unexpected {type(exc).__name__}"
        )
        await send({"type": "lifespan.startup.failed", "message": text})
        raise  # uvicorn stays quiet once told the start-up failed; an in-process caller sees the error
    else:
        if held:  # reported without raising: pass it on, still without the traceback
            await send({"type": "lifespan.startup.failed", "message": "start-up failed"})


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
        self.inline = runtime.engine.dialect.name == "sqlite"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan_in_one_sentence(self.app, scope, receive, send)
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        # Chosen by the observing middleware in front (an inbound X-Request-Id, broker/api/observe.py).
        request_id = scope.get("state", {}).get("request_id") or uuid.uuid4().hex
        ctx = RequestContext(
            request_id=request_id,
            method=scope["method"],
            route=scope["path"][:256],
            source_addr=client_address(scope, headers, self.trusted),
            user_agent=headers.get(b"user-agent", b"").decode("latin-1")[:512] or None,
        )
        ctx.client_kind = audit.client_kind(ctx.user_agent)
        scope.setdefault("state", {})["ctx"] = ctx
        audited_path = scope["path"] not in UNAUDITED_PATHS

        if self.rt.audit.read_only is not None and audited_path:
            template, _ = match_template(scope["method"], scope["path"])
            if _read_only_refuses(scope["method"], template):
                ctx.reason = READ_ONLY
                await self._reply(send, ctx, 503, "Service Unavailable", READ_ONLY, scope)
                return

        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_body):
            ctx.reason = "request body over the size limit"
            await self._reply(
                send, ctx, 413, "Content Too Large", f"body: larger than {self.max_body} bytes", scope
            )
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
                    send, ctx, 413, "Content Too Large", f"body: larger than {self.max_body} bytes", scope
                )
                return
            if message["type"] == "http.response.start":
                state["started"] = True
                message.setdefault("headers", []).append((b"x-request-id", request_id.encode()))
                if audited_path and not ctx.audited:
                    fill_from_route(scope, ctx)
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
                if audited_path:
                    # The event is committed by now: let the chainer link it (PostgreSQL) or sign a
                    # checkpoint when one is due.
                    self.rt.audit.kick(inline=self.inline)
            await send(message)

        try:
            await self.app(scope, limited_receive, audited_send)
        except _BodyTooLarge:
            if state["started"]:
                raise
            ctx.reason = "request body over the size limit"
            await self._reply(
                send, ctx, 413, "Content Too Large", f"body: larger than {self.max_body} bytes", scope
            )
        except Exception as exc:
            # Starlette re-raises after it has answered 500; the server would then log the exception's
            # message, which may quote input. api/errors.py already logged the type and frames.
            if not state["started"]:
                ctx.reason = f"internal error ({type(exc).__name__})"
                await self._reply(send, ctx, 500, "Internal Server Error", "internal error", scope)

    async def _reply(
        self,
        send: Send,
        ctx: RequestContext,
        status: int,
        title: str,
        detail: str,
        scope: Scope | None = None,
    ) -> None:
        if scope is not None:
            fill_from_route(scope, ctx)
        try:
            await audit.record_alone(self.rt, ctx, status=status)
        except Exception:
            log.exception("audit write failed; answering 503 (request %s)", ctx.request_id)
            status, title, detail = 503, "Service Unavailable", "the audit trail is unavailable; retry later"
        else:
            self.rt.audit.kick(inline=self.inline)
        start, body = _problem(status, title, detail, ctx.request_id)
        if status == 503:
            start["headers"].append((b"retry-after", b"5"))
        await send(start)
        await send({"type": "http.response.body", "body": body})
