"""HTTP to an identity provider: only to configured URLs, through the upstream guard, with bounded answers.

- A URL's host must not resolve to a private, loopback, link-local (metadata) or otherwise non-global
  address unless inside `allow_networks`; the check runs before each call and again on the connection
  itself (broker.backends.guard). http:// is accepted only for an allow-listed address; redirects are
  never followed and the environment (proxies, netrc) is ignored.
- An answer is read up to a bound and must be a JSON object; errors name the provider and why, never a
  response body (it may echo what was sent, such as a client secret).
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import requests

from broker.backends import guard
from broker.errors import Forbidden, Invalid


class FetchFailed(Exception):
    """A call to the provider failed; the message names the provider and why, never a response body."""


class Upstream:
    """Guarded HTTP to one identity provider (`where` names it in every error)."""

    def __init__(self, *, where: str, allow_networks: list[str], timeout: float) -> None:
        self.where = where
        self.timeout = timeout
        self.allowed = guard.networks(allow_networks, field="allow_networks")
        self._session: requests.Session | None = None

    def check_url(self, url: str, *, field: str) -> None:
        """Refuse a URL whose host is not a public address (or allow-listed), or http:// to a public one."""
        parts = urlsplit(url)
        if parts.scheme not in ("https", "http") or parts.username is not None or parts.password is not None:
            raise FetchFailed(f"{self.where}: {field} must be http(s)://host[:port]/path with no user name")
        if not parts.hostname:
            raise FetchFailed(f"{self.where}: {field} has no host")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
            addresses = guard.resolve(parts.hostname, port, where=self.where)
            for ip in addresses:
                guard.check_ip(ip, self.allowed, where=self.where)
        except (Forbidden, Invalid) as exc:
            raise FetchFailed(exc.message) from None
        except ValueError:
            raise FetchFailed(f"{self.where}: {field} has a bad port") from None
        if parts.scheme != "https" and not all(
            any(ipaddress.ip_address(ip) in net for net in self.allowed) for ip in addresses
        ):
            raise FetchFailed(
                f"{self.where}: {field} must be https:// (http is only for allow-listed networks)"
            )

    def session(self) -> requests.Session:
        """The provider's session: no proxies from the environment, every connection checked by the guard."""
        if self._session is None:
            session = requests.Session()
            session.trust_env = False
            for scheme, adapter in list(session.adapters.items()):
                assert isinstance(adapter, requests.adapters.HTTPAdapter)
                adapter.poolmanager.pool_classes_by_scheme = guard.guard_connections(
                    dict(adapter.poolmanager.pool_classes_by_scheme), self.allowed, self.where
                )
                session.mount(scheme, adapter)
            self._session = session
        return self._session

    def json(
        self,
        method: str,
        url: str,
        *,
        field: str,
        what: str,
        max_bytes: int,
        data: Mapping[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        accept_status: tuple[int, ...] = (200,),
    ) -> tuple[int, dict[str, Any]]:
        """Call `url` (blocking: run it in a worker thread); its status and JSON object, or FetchFailed.

        `field` names the setting or document field the URL came from, `what` the thing fetched.
        """
        self.check_url(url, field=field)
        try:
            with self.session().request(
                method,
                url,
                data=data,
                auth=auth,
                headers={"Accept": "application/json"},
                timeout=self.timeout,
                allow_redirects=False,
                stream=True,
            ) as response:
                status = response.status_code
                if status not in accept_status:
                    raise FetchFailed(f"{self.where}: {what} ({field}) answered HTTP {status}")
                body = response.raw.read(max_bytes + 1, decode_content=True)
        except Forbidden as exc:
            raise FetchFailed(exc.message) from None
        except requests.RequestException as exc:
            raise FetchFailed(f"{self.where}: {what} cannot be fetched ({type(exc).__name__})") from None
        if len(body) > max_bytes:
            raise FetchFailed(f"{self.where}: {what} is larger than {max_bytes // 1024} KiB")
        try:
            doc = json.loads(body)
        except ValueError:
            raise FetchFailed(f"{self.where}: {what} is not JSON") from None
        if not isinstance(doc, dict):
            raise FetchFailed(f"{self.where}: {what} is not a JSON object")
        return status, doc
