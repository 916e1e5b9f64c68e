"""The console's own defences in one place: response headers, the session cookie, CSRF and Origin checks."""

from __future__ import annotations

import hmac
import ipaddress
import secrets
from typing import Literal
from urllib.parse import urlsplit

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from broker.errors import Forbidden
from broker.services.auth import keyed_hash
from broker.services.runtime import Runtime

SESSION_COOKIE = "strongroom_console"
LOGIN_COOKIE = "strongroom_console_login"
PATH = "/console"
# A console session is a broker token of this many seconds at most (the identity's own TTLs can shorten it).
SESSION_TTL = 1800

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


class Headers:
    """Every console answer (pages, redirects, errors, downloads, the routers' own 404s) carries the
    security headers, and `no-store` unless the handler chose a cache policy (the stylesheet)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                raw = MutableHeaders(raw=list(message.get("headers", [])))
                for name, value in HEADERS.items():
                    raw[name] = value
                if "cache-control" not in raw:
                    raw["Cache-Control"] = "no-store"
                message["headers"] = raw.raw
            await send(message)

        await self.app(scope, receive, with_headers)


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


def _host_name(host_header: str) -> str:
    """The host of a Host header, without its port (IPv6 literals keep their brackets stripped)."""
    if host_header.startswith("["):
        return host_header[1 : host_header.find("]")] if "]" in host_header else host_header
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


def cookie_secure(request: Request) -> bool:
    """Whether cookies carry `Secure`: always, except when the browser reached the broker by a loopback
    name over plain HTTP (it would not send a Secure cookie back there, and nothing crosses a network).
    The Host header says what the browser asked for, also behind a proxy that passes it on."""
    host = _host_name(request.headers.get("host", ""))
    return not (request.url.scheme == "http" and _loopback(host))


def cookie_name(request: Request, name: str) -> str:
    """A console cookie's name as the browser holds it: `__Secure-<name>` when the cookie is Secure, so
    a plain-HTTP answer (or a sibling host's) can neither set nor shadow it; the plain name on loopback
    over plain HTTP. (`__Host-` would need Path=/; the console's cookies are limited to /console.)"""
    return f"__Secure-{name}" if cookie_secure(request) else name


def cookie(request: Request, name: str) -> str | None:
    """The value of a console cookie the browser sent, or None."""
    return request.cookies.get(cookie_name(request, name))


def set_cookie(
    request: Request,
    response: Response,
    name: str,
    value: str,
    *,
    max_age: int,
    path: str = PATH,
    samesite: Literal["strict", "lax"] = "strict",
) -> None:
    """An HttpOnly cookie (SameSite=Strict unless told, limited to the console's path unless told)."""
    response.set_cookie(
        cookie_name(request, name),
        value,
        max_age=max_age,
        path=path,
        httponly=True,
        samesite=samesite,
        secure=cookie_secure(request),
    )


def clear_cookie(
    request: Request,
    response: Response,
    name: str,
    *,
    path: str = PATH,
    samesite: Literal["strict", "lax"] = "strict",
) -> None:
    """Tell the browser to forget a console cookie."""
    response.delete_cookie(
        cookie_name(request, name), path=path, httponly=True, samesite=samesite, secure=cookie_secure(request)
    )


def bearer(request: Request) -> str | None:
    """The session cookie as the Authorization header the API's token check reads (None: no session)."""
    token = cookie(request, SESSION_COOKIE)
    return f"Bearer {token}" if token else None


def csrf_token(rt: Runtime, accessor: str) -> str:
    """The session's CSRF token: a keyed hash of its token's accessor (nothing to store, nothing to leak:
    the accessor is not a credential and the key never leaves the broker)."""
    return keyed_hash(rt.keys.hmac_key, b"console-csrf", accessor).hex()


def login_nonce() -> str:
    """A fresh value for the login form's double-submit check (no session exists yet)."""
    return secrets.token_urlsafe(24)


def check_origin(request: Request) -> None:
    """Refuse a state-changing request that a page of another origin sent.

    Browsers send `Origin: null` for a form posted from a page under `Referrer-Policy: no-referrer` (the
    console's own policy), so a null origin is believed only with `Sec-Fetch-Site: same-origin`; any
    other origin must be this broker's own, and a fetch marked cross-site or same-site is refused.
    """
    refused = Forbidden("origin: this form was sent from another site; the console refuses it")
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        raise refused
    origin = request.headers.get("origin")
    if origin is None:
        return
    if origin == "null":
        if site != "same-origin":
            raise refused
        return
    parts = urlsplit(origin)
    # An https page may post to this http listener when TLS ends at a proxy in front of it (the netloc,
    # with its port, still has to be this broker's); an http page posting to an https broker may not.
    scheme_ok = parts.scheme == request.url.scheme or (parts.scheme, request.url.scheme) == ("https", "http")
    if not scheme_ok or parts.netloc != request.headers.get("host", ""):
        raise refused


def check_csrf(sent: str | None, expected: str) -> None:
    """Refuse a form whose CSRF field is missing or wrong (compared in constant time)."""
    if not sent or not hmac.compare_digest(sent.encode(), expected.encode()):
        raise Forbidden("csrf: the form's security token is missing or wrong; reload the page and retry")
