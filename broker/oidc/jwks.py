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

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from broker.oidc.config import Issuer
from broker.oidc.upstream import FetchFailed, Upstream

__all__ = ["FetchFailed", "JwksCache"]

MAX_BYTES = 64 * 1024
MAX_KEYS = 50
MAX_AGE = 3600.0
REFRESH_INTERVAL = 30.0


@dataclass
class _Entry:
    keys: dict[str, Any]
    fetched_at: float


class JwksCache:
    """The key sets of the configured issuers."""

    def __init__(self, issuers: dict[str, Issuer], *, clock: Callable[[], float] = time.monotonic) -> None:
        self._issuers = issuers
        self._entries: dict[str, _Entry] = {}
        self._last_forced: dict[str, float] = {}
        self._lock = threading.Lock()
        self.clock = clock
        self._upstreams: dict[str, Upstream] = {}

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

    def _upstream(self, name: str, issuer: Issuer) -> Upstream:
        upstream = self._upstreams.get(name)
        if upstream is None:
            upstream = Upstream(
                where=f"oidc issuer {name}",
                allow_networks=list(issuer.allow_networks),
                timeout=issuer.timeout,
            )
            self._upstreams[name] = upstream
        return upstream

    def _fetch(self, name: str) -> dict[str, Any]:
        issuer = self._issuers[name]
        upstream = self._upstream(name, issuer)
        _status, doc = upstream.json(
            "GET", issuer.keys_url, field="jwks_url", what="the key set", max_bytes=MAX_BYTES
        )
        keys = doc.get("keys")
        if not isinstance(keys, list) or len(keys) > MAX_KEYS:
            raise FetchFailed(
                f"{upstream.where}: the key set must be an object with a list of at most {MAX_KEYS} keys"
            )
        return {"keys": [k for k in keys if isinstance(k, dict)]}
