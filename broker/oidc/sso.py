"""The console's OpenID provider: discovery, the authorization request and the code exchange.

Everything the broker sends the provider comes from the OIDC file's `console` section; the provider's
endpoints come from its discovery document (`<issuer>/.well-known/openid-configuration`), whose `issuer`
must be the configured one exactly. The discovery document, the key set and the token endpoint are
reached through the upstream guard (broker.oidc.upstream); only the browser visits the authorization
endpoint. The client secret goes to the token endpoint only, never into a log, an error or a page.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote_plus, urlencode, urlsplit

from broker.oidc.config import Console, Issuer
from broker.oidc.jwks import JwksCache
from broker.oidc.upstream import FetchFailed, Upstream

MAX_BYTES = 64 * 1024
DISCOVERY_AGE = 3600.0
# A failed discovery is answered from memory this long: a provider that is down is not asked again by
# every click on "Sign in with ..." (each of which would hold a worker thread for the whole timeout).
FAILURE_AGE = 30.0
KEYS = "console"
_ERROR_CODE = re.compile(r"[A-Za-z0-9_.-]{1,64}")


class ClientSecret:
    """The console client's secret, read from its 0600 file; its repr never shows it."""

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret, for the token endpoint's Authorization header only."""
        return self._value

    def __repr__(self) -> str:
        return "ClientSecret(***)"

    __str__ = __repr__


class CodeRefused(Exception):
    """The token endpoint refused the code (used, expired, another client's); `reason` is safe to audit."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def error_code(text: object) -> str:
    """An OAuth error code as the audit may keep it: a short token of safe characters, or `unknown`."""
    return text if isinstance(text, str) and _ERROR_CODE.fullmatch(text) else "unknown"


@dataclass(frozen=True)
class Endpoints:
    """What discovery told us."""

    authorization: str
    token: str
    jwks: str
    basic_auth: bool


class ConsoleProvider:
    """The provider of the console's `Sign in with ...` button."""

    def __init__(
        self, config: Console, secret: ClientSecret, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.config = config
        self._secret = secret
        self.clock = clock
        self.upstream = Upstream(
            where=f"console sign-in provider {config.name}",
            allow_networks=list(config.allow_networks),
            timeout=config.timeout,
        )
        self._lock = threading.Lock()
        self._found: tuple[Endpoints, float] | None = None
        self._failed: tuple[str, float] | None = None
        self.jwks: JwksCache | None = None
        self._keys_url: str | None = None

    def endpoints(self) -> Endpoints:
        """The provider's endpoints (blocking: run it in a worker thread), rediscovered hourly; FetchFailed,
        repeated without asking the provider again for FAILURE_AGE seconds."""
        with self._lock:
            if self._found is not None and self.clock() - self._found[1] < DISCOVERY_AGE:
                return self._found[0]
            if self._failed is not None and self.clock() - self._failed[1] < FAILURE_AGE:
                raise FetchFailed(self._failed[0])
        url = self.config.issuer.rstrip("/") + "/.well-known/openid-configuration"
        try:
            _status, doc = self.upstream.json(
                "GET", url, field="issuer", what="the discovery document", max_bytes=MAX_BYTES
            )
            found = self._check(doc)
        except FetchFailed as exc:
            with self._lock:
                self._failed = (str(exc), self.clock())
            raise
        with self._lock:
            self._found = (found, self.clock())
            self._failed = None
            if self.jwks is None or self._keys_url != found.jwks:
                issuer = Issuer(
                    issuer=self.config.issuer,
                    jwks_url=found.jwks,
                    audience=self.config.client_id,
                    algorithms=self.config.algorithms,
                    leeway=self.config.leeway,
                    allow_networks=self.config.allow_networks,
                    timeout=self.config.timeout,
                )
                self.jwks = JwksCache({KEYS: issuer}, clock=self.clock)
                self._keys_url = found.jwks
        return found

    def _check(self, doc: dict[str, Any]) -> Endpoints:
        where = self.upstream.where
        if doc.get("issuer") != self.config.issuer:
            raise FetchFailed(f"{where}: the discovery document names another issuer than console.issuer")
        urls: dict[str, str] = {}
        for name in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
            value = doc.get(name)
            scheme = urlsplit(value).scheme if isinstance(value, str) else ""
            # A provider on plain http (a lab on loopback) may name http endpoints; an https one may not.
            if scheme not in ("https", urlsplit(self.config.issuer).scheme) or len(str(value)) > 1024:
                raise FetchFailed(f"{where}: the discovery document's {name} is not an https URL")
            urls[name] = str(value)
        methods = doc.get("code_challenge_methods_supported")
        if isinstance(methods, list) and "S256" not in methods:
            raise FetchFailed(f"{where}: the provider does not support PKCE with S256")
        auth = doc.get("token_endpoint_auth_methods_supported")
        auth = auth if isinstance(auth, list) else ["client_secret_basic"]
        if "client_secret_basic" not in auth and "client_secret_post" not in auth:
            raise FetchFailed(
                f"{where}: the provider accepts neither client_secret_basic nor client_secret_post"
            )
        return Endpoints(
            authorization=urls["authorization_endpoint"],
            token=urls["token_endpoint"],
            jwks=urls["jwks_uri"],
            basic_auth="client_secret_basic" in auth,
        )

    def authorization_url(self, endpoints: Endpoints, *, state: str, nonce: str, challenge: str) -> str:
        """Where the browser goes to sign in: the code flow with PKCE (S256), our state and nonce."""
        query = urlencode(
            {
                "response_type": "code",
                "client_id": self.config.client_id,
                "redirect_uri": self.config.redirect_url,
                "scope": " ".join(self.config.scopes),
                "state": state,
                "nonce": nonce,
                "code_challenge": challenge,
                "code_challenge_method": "S256",
            }
        )
        separator = "&" if urlsplit(endpoints.authorization).query else "?"
        return endpoints.authorization + separator + query

    def redeem(self, code: str, *, verifier: str) -> str:
        """Exchange the code at the token endpoint (blocking); the ID token's text, CodeRefused or FetchFailed."""
        endpoints = self.endpoints()
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self.config.redirect_url,
            "code_verifier": verifier,
        }
        auth: tuple[str, str] | None = None
        if endpoints.basic_auth:
            # RFC 6749 2.3.1: both parts form-encoded before Basic.
            auth = (quote_plus(self.config.client_id), quote_plus(self._secret.reveal()))
        else:
            form |= {"client_id": self.config.client_id, "client_secret": self._secret.reveal()}
        status, doc = self.upstream.json(
            "POST",
            endpoints.token,
            field="token_endpoint",
            what="the token endpoint",
            max_bytes=MAX_BYTES,
            data=form,
            auth=auth,
            accept_status=(200, 400, 401),
        )
        if status != 200:
            raise CodeRefused(f"the provider refused the code ({error_code(doc.get('error'))})")
        token = doc.get("id_token")
        if not isinstance(token, str) or not token:
            raise CodeRefused("the provider's answer has no ID token")
        return token

    def keys(self, *, force: bool) -> dict[str, Any]:
        """The provider's key set (blocking), after discovery; FetchFailed."""
        self.endpoints()
        assert self.jwks is not None
        return self.jwks.get(KEYS, force=force)
