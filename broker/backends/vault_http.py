"""One connection to a Vault (or OpenBao) server through hvac, shared by the KV backend and the transit KEK.

hvac and requests are blocking; callers run these methods in worker threads. Rules kept here:
- the address, namespace and credentials come from the broker's configuration only; the session
  ignores the environment (`trust_env = False`: no VAULT_ADDR, proxies or netrc), redirects are never
  followed (a 3xx answer is an error), and every new connection checks the address it reached (guard);
- every failure becomes a BrokerError naming the upstream and the path, never echoing a value:
  404 NotFound, 403 Forbidden (an AppRole login is renewed once first), 429 Throttled,
  400 with a check-and-set mismatch Conflict, 5xx, timeouts, refused connections and malformed
  JSON Unavailable.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import hvac
import hvac.exceptions
import requests

from broker.backends import guard
from broker.errors import BrokerError, Conflict, Forbidden, Invalid, NotFound, Throttled, Unavailable

MAX_ERROR = 200


class VaultHttp:
    """A hvac client bound to one configured address, with its login and error translation."""

    def __init__(
        self,
        *,
        label: str,
        address: str,
        allowed: Sequence[guard.Network],
        timeout: float,
        namespace: str | None,
        ca_file: Path | None,
        token: str | None,
        approle: tuple[str, str, str] | None,
    ) -> None:
        self.label = label
        guard.check_address(address, allowed, where=label)
        session = requests.Session()
        session.trust_env = False
        # Every new connection checks the peer address it reached (K57: no metadata or private address).
        for scheme, adapter in list(session.adapters.items()):
            assert isinstance(adapter, requests.adapters.HTTPAdapter)
            adapter.poolmanager.pool_classes_by_scheme = guard.guard_connections(
                dict(adapter.poolmanager.pool_classes_by_scheme), allowed, label
            )
            session.mount(scheme, adapter)
        self._client = hvac.Client(
            url=address.rstrip("/"),
            token="",
            verify=str(ca_file) if ca_file else True,
            timeout=timeout,
            allow_redirects=False,
            session=session,
            adapter=hvac.adapters.RawAdapter,
            namespace=namespace,
        )
        self._adapter = self._client.adapter
        self._adapter.token = token or ""
        self._approle = approle
        self._login_lock = threading.Lock()
        if approle is not None:
            self._login()

    def _login(self) -> None:
        assert self._approle is not None
        role_id, secret_id, mount = self._approle
        with self._login_lock:
            self._adapter.token = ""
            resp = self._send(
                "POST", f"/v1/auth/{mount}/login", {"role_id": role_id, "secret_id": secret_id}, None
            )
            body = self._json(resp, f"auth/{mount}/login")
            token = body.get("auth", {}).get("client_token") if isinstance(body.get("auth"), dict) else None
            if not isinstance(token, str) or not token:
                raise Unavailable(f"{self.label}: the AppRole login answered without a token")
            self._adapter.token = token

    def _send(self, method: str, url: str, body: Any, params: dict[str, Any] | None) -> requests.Response:
        try:
            resp: requests.Response = self._adapter.request(
                method, url, json=body, params=params, raise_exception=False
            )
            return resp
        except requests.exceptions.Timeout:
            raise Unavailable(f"{self.label}: the upstream did not answer in time") from None
        except (requests.exceptions.ConnectionError, OSError) as exc:
            if isinstance(exc.__context__, Forbidden):
                raise exc.__context__ from None
            raise Unavailable(f"{self.label}: cannot connect to the upstream") from None
        except requests.exceptions.RequestException:
            raise Unavailable(f"{self.label}: the request to the upstream failed") from None
        except Forbidden:
            raise
        except hvac.exceptions.VaultError:
            raise Unavailable(f"{self.label}: the request to the upstream failed") from None

    def _json(self, resp: requests.Response, path: str) -> dict[str, Any]:
        try:
            body = resp.json()
        except ValueError:
            raise Unavailable(f"{self.label}: {path}: the upstream answered with malformed JSON") from None
        if not isinstance(body, dict):
            raise Unavailable(f"{self.label}: {path}: the upstream answered with malformed JSON")
        return body

    def _errors(self, resp: requests.Response) -> str:
        try:
            body = resp.json()
            errs = body.get("errors") if isinstance(body, dict) else None
            text = "; ".join(str(e) for e in errs) if isinstance(errs, list) else ""
        except ValueError:
            text = ""
        return text[:MAX_ERROR]

    def call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: dict[str, Any] | None = None,
        not_found: Callable[[requests.Response], BrokerError] | None = None,
    ) -> dict[str, Any] | None:
        """One API call to /v1/{path}; the parsed JSON body, or None for 204. BrokerErrors only."""
        resp = self._send(method, f"/v1/{path}", body, params)
        if resp.status_code == 403 and self._approle is not None:
            self._login()
            resp = self._send(method, f"/v1/{path}", body, params)
        status = resp.status_code
        if status == 204:
            return None
        if 200 <= status < 300:
            return self._json(resp, path)
        if 300 <= status < 400:
            raise Unavailable(
                f"{self.label}: {path}: the upstream answered with a redirect; redirects are never followed"
            )
        if status == 404:
            if not_found is not None:
                raise not_found(resp)
            raise NotFound(f"{self.label}: {path}: not found upstream")
        if status in (401, 403):
            raise Forbidden(
                f"{self.label}: {path}: the upstream refused the broker's credential "
                "(permission denied, or the token expired)"
            )
        if status == 429:
            raise Throttled(
                f"{self.label}: {path}: the upstream is throttling requests", retry_after=_retry_after(resp)
            )
        if status == 400:
            detail = self._errors(resp)
            if "check-and-set" in detail:
                raise Conflict(f"{self.label}: {path}: check-and-set version is stale")
            raise Invalid(
                f"{self.label}: {path}: the upstream refused the request: {detail or 'bad request'}"
            )
        raise Unavailable(f"{self.label}: {path}: the upstream answered {status}")

    def body_of(self, resp: requests.Response) -> dict[str, Any]:
        """The JSON body of an error response (for 404s that carry metadata), or {}."""
        try:
            body = resp.json()
        except ValueError:
            return {}
        return body if isinstance(body, dict) else {}

    def close(self) -> None:
        """Close the HTTP session."""
        self._client.adapter.close()


def _retry_after(resp: requests.Response) -> int:
    try:
        return max(1, min(3600, int(resp.headers.get("Retry-After", "5"))))
    except ValueError:
        return 5


def token_and_approle(auth: Any, *, where: str) -> tuple[str | None, tuple[str, str, str] | None]:
    """The static token, or the AppRole (role id, secret id, mount), from a config auth model."""
    from broker.backends.config import VaultAppRoleAuth, VaultTokenAuth, read_secret_file

    if isinstance(auth, VaultTokenAuth):
        token = (
            auth.token
            if auth.token is not None
            else read_secret_file(auth.token_file, what=f"{where}.auth.token_file")
        )
        return token, None
    assert isinstance(auth, VaultAppRoleAuth)
    secret_id = (
        auth.secret_id
        if auth.secret_id is not None
        else read_secret_file(auth.secret_id_file, what=f"{where}.auth.secret_id_file")
    )
    return None, (auth.role_id, secret_id, auth.mount)
