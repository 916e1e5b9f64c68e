"""Issuers' key sets: fetched from the configured URL only, through the upstream guard, cached with a bound.

- The URL comes from the OIDC file. Its host must not resolve to a private, loopback, link-local
  (metadata) or otherwise non-global address unless inside the issuer's `allow_networks`; the check runs
  before each fetch and again on the connection itself (broker.backends.guard), redirects are never
  followed and the environment (proxies, netrc) is ignored. http:// is accepted only for an address that
  `allow_networks` lists (a lab issuer); a public issuer must use https.
- One entry per configured issuer (so the cache is bounded by the file), at most MAX_KEYS keys and
  MAX_BYTES of JSON each. An entry is reused for MAX_AGE seconds; a token naming an unknown key id forces
  one refetch (the issuer rotated its keys), at most once per REFRESH_INTERVAL per issuer, so a stream
  of made-up key ids cannot turn the broker into a load generator.
"""

from __future__ import annotations

import ipaddress
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests

from broker.backends import guard
from broker.errors import Forbidden, Invalid
from broker.oidc.config import Issuer

MAX_BYTES = 64 * 1024
MAX_KEYS = 50
MAX_AGE = 3600.0
REFRESH_INTERVAL = 30.0


class FetchFailed(Exception):
    """The key set could not be fetched; the message names the issuer and why, never a response body."""


@dataclass
class _Entry:
    keys: dict[str, Any]
    fetched_at: float


def _check_url(url: str, issuer: Issuer, *, where: str) -> None:
    allowed = guard.networks(issuer.allow_networks, field="allow_networks")
    parts = urlsplit(url)
    if parts.username is not None or parts.password is not None or not parts.hostname:
        raise FetchFailed(f"{where}: jwks_url must be http(s)://host[:port]/path with no user name")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        addresses = guard.resolve(parts.hostname, port, where=where)
        for ip in addresses:
            guard.check_ip(ip, allowed, where=where)
    except (Forbidden, Invalid) as exc:
        raise FetchFailed(exc.message) from None
    if parts.scheme != "https" and not all(
        any(ipaddress.ip_address(ip) in net for net in allowed) for ip in addresses
    ):
        raise FetchFailed(f"{where}: jwks_url must be https:// (http is only for allow-listed networks)")


class JwksCache:
    """The key sets of the configured issuers."""

    def __init__(self, issuers: dict[str, Issuer], *, clock: Callable[[], float] = time.monotonic) -> None:
        self._issuers = issuers
        self._entries: dict[str, _Entry] = {}
        self._last_forced: dict[str, float] = {}
        self._lock = threading.Lock()
        self.clock = clock
        self._sessions: dict[str, requests.Session] = {}

    def get(self, name: str, *, force: bool = False) -> dict[str, Any]:
        """The key set of issuer `name` (blocking: run it in a worker thread); raises FetchFailed."""
        now = self.clock()
        with self._lock:
            entry = self._entries.get(name)
            if entry is not None and now - entry.fetched_at < MAX_AGE:
                if not force:
                    return entry.keys
                last = self._last_forced.get(name)
                if last is not None and now - last < REFRESH_INTERVAL:
                    return entry.keys
            if force:
                self._last_forced[name] = now
        keys = self._fetch(name)
        with self._lock:
            self._entries[name] = _Entry(keys=keys, fetched_at=self.clock())
        return keys

    def _session(self, name: str, issuer: Issuer) -> requests.Session:
        session = self._sessions.get(name)
        if session is None:
            session = requests.Session()
            session.trust_env = False
            allowed = guard.networks(issuer.allow_networks, field="allow_networks")
            for scheme, adapter in list(session.adapters.items()):
                assert isinstance(adapter, requests.adapters.HTTPAdapter)
                adapter.poolmanager.pool_classes_by_scheme = guard.guard_connections(
                    dict(adapter.poolmanager.pool_classes_by_scheme), allowed, f"oidc issuer {name}"
                )
                session.mount(scheme, adapter)
            self._sessions[name] = session
        return session

    def _fetch(self, name: str) -> dict[str, Any]:
        issuer = self._issuers[name]
        where = f"oidc issuer {name}"
        url = issuer.keys_url
        _check_url(url, issuer, where=where)
        try:
            with self._session(name, issuer).get(
                url, timeout=issuer.timeout, allow_redirects=False, stream=True
            ) as response:
                if response.status_code != 200:
                    raise FetchFailed(f"{where}: the key set URL answered HTTP {response.status_code}")
                body = response.raw.read(MAX_BYTES + 1, decode_content=True)
        except Forbidden as exc:
            raise FetchFailed(exc.message) from None
        except requests.RequestException as exc:
            raise FetchFailed(f"{where}: the key set cannot be fetched ({type(exc).__name__})") from None
        if len(body) > MAX_BYTES:
            raise FetchFailed(f"{where}: the key set is larger than {MAX_BYTES // 1024} KiB")
        try:
            doc = json.loads(body)
        except ValueError:
            raise FetchFailed(f"{where}: the key set is not JSON") from None
        keys = doc.get("keys") if isinstance(doc, dict) else None
        if not isinstance(keys, list) or len(keys) > MAX_KEYS:
            raise FetchFailed(
                f"{where}: the key set must be an object with a list of at most {MAX_KEYS} keys"
            )
        return {"keys": [k for k in keys if isinstance(k, dict)]}
