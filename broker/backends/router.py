"""Backends: the configured upstreams, which environment or secret maps to which, a read cache, threads.

`route()` is called on every secret request, so for a project with no mapping it is one set lookup.
Blocking backend methods run in the backend's own thread pool (`call()`), never on the event loop.
The optional read cache keeps a value at most `cache_ttl` seconds (monotonic clock); a write, delete,
undelete, destroy or rollback through the broker drops the entries of that secret and its directory.
An upstream error is never answered from the cache: an entry past its TTL is dropped, not served.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from broker.backends import guard
from broker.backends.base import SecretBackend, UpstreamValue
from broker.backends.config import AwsUpstream, BackendsFile, VaultUpstream
from broker.backends.config import load as load_file

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Route:
    """Where one secret (rel is its path) or one environment (rel is the directory) lives upstream."""

    backend: SecretBackend
    rel: str


class ReadCache:
    """Values by (backend, path, selector), each kept at most `ttl` seconds."""

    def __init__(self, ttl: float, clock: Callable[[], float]) -> None:
        self.ttl = ttl
        self.clock = clock
        self._lock = threading.Lock()
        self._items: dict[tuple[str, str], dict[Any, tuple[float, Any]]] = {}

    def get(self, backend: str, rel: str, selector: Any) -> Any | None:
        """A live entry, or None (an expired one is dropped)."""
        if self.ttl <= 0:
            return None
        with self._lock:
            entries = self._items.get((backend, rel))
            hit = entries.get(selector) if entries else None
            if hit is None:
                return None
            if self.clock() >= hit[0]:
                del entries[selector]  # type: ignore[union-attr]
                return None
            return hit[1]

    def put(self, backend: str, rel: str, selector: Any, value: Any) -> None:
        """Keep a value for `ttl` seconds from now."""
        if self.ttl <= 0:
            return
        with self._lock:
            if len(self._items) > 100_000:
                self._items.clear()
            self._items.setdefault((backend, rel), {})[selector] = (self.clock() + self.ttl, value)

    def drop(self, backend: str, rel: str) -> None:
        """Forget a secret and the directory listing that holds it."""
        with self._lock:
            self._items.pop((backend, rel), None)
            parent = rel.rsplit("/", 1)[0] if "/" in rel else ""
            self._items.pop((backend, parent), None)


class Backends:
    """The configured backends and mappings."""

    def __init__(
        self,
        backends: dict[str, SecretBackend],
        cfg: BackendsFile,
        *,
        clock: Callable[[], float] = time.monotonic,
        workers: dict[str, int] | None = None,
    ) -> None:
        self.backends = backends
        self.configs = dict(cfg.backends)
        self.cache = ReadCache(cfg.cache_ttl, clock)
        self._env: dict[tuple[str, str], Route] = {}
        self._secret: dict[tuple[str, str, str], Route] = {}
        self._by_env: dict[tuple[str, str], list[tuple[str, Route]]] = {}
        for m in cfg.mappings:
            backend = backends[m.backend]
            if m.name is None:
                self._env[(m.project, m.environment)] = Route(backend, m.path)
            else:
                rel = guard.join(m.path, m.key or m.name) if backend.kind == "aws-sm-json" else m.path
                route = Route(backend, rel)
                self._secret[(m.project, m.environment, m.name)] = route
                self._by_env.setdefault((m.project, m.environment), []).append((m.name, route))
        self.projects = frozenset(m.project for m in cfg.mappings)
        self._pools = {
            name: ThreadPoolExecutor(
                max_workers=(workers or {}).get(name, 8), thread_name_prefix=f"backend-{name}"
            )
            for name in backends
        }

    def route(self, project: str, environment: str, name: str) -> Route | None:
        """The upstream of one secret, or None for the database (one set lookup for unmapped projects)."""
        if project not in self.projects:
            return None
        hit = self._secret.get((project, environment, name))
        if hit is not None:
            return hit
        env = self._env.get((project, environment))
        if env is None:
            return None
        return Route(env.backend, guard.join(env.rel, name))

    def env_route(self, project: str, environment: str) -> Route | None:
        """The upstream of a whole environment, if it is mapped."""
        if project not in self.projects:
            return None
        return self._env.get((project, environment))

    def single_secrets(self, project: str, environment: str) -> list[tuple[str, Route]]:
        """Single-secret mappings of an environment that is otherwise in the database."""
        if project not in self.projects:
            return []
        return self._by_env.get((project, environment), [])

    async def call(self, backend: SecretBackend, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a blocking backend method in that backend's worker threads."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pools[backend.name], functools.partial(fn, *args, **kwargs))

    async def read(
        self, route: Route, *, version: int | None = None, pin: str | None = None
    ) -> UpstreamValue:
        """A value through the cache (if enabled) and the backend's threads."""
        b = route.backend
        selector = (version, pin)
        hit = self.cache.get(b.name, route.rel, selector)
        if hit is not None:
            assert isinstance(hit, UpstreamValue)
            return hit
        value = await self.call(b, b.read, route.rel, version=version, pin=pin)
        self.cache.put(b.name, route.rel, selector, value)
        return value

    async def read_many(self, route: Route) -> dict[str, UpstreamValue]:
        """Every value of a mapped environment, through the cache."""
        b = route.backend
        hit = self.cache.get(b.name, route.rel, "*")
        if hit is not None:
            assert isinstance(hit, dict)
            return hit
        values = await self.call(b, b.read_many, route.rel)
        self.cache.put(b.name, route.rel, "*", values)
        return values

    def close(self) -> None:
        """Stop the threads and close the upstream connections."""
        for pool in self._pools.values():
            pool.shutdown(wait=False, cancel_futures=True)
        for b in self.backends.values():
            b.close()


def build(cfg: BackendsFile, *, clock: Callable[[], float] = time.monotonic) -> Backends:
    """Construct every configured backend (checks addresses; AppRole logs in)."""
    from broker.backends.aws import AwsBackend
    from broker.backends.vault import VaultBackend

    made: dict[str, SecretBackend] = {}
    workers: dict[str, int] = {}
    for name, up in cfg.backends.items():
        if isinstance(up, VaultUpstream):
            made[name] = VaultBackend(name, up)
        else:
            assert isinstance(up, AwsUpstream)
            made[name] = AwsBackend(name, up)
        workers[name] = up.max_workers
    return Backends(made, cfg, clock=clock, workers=workers)


def load(path: Path, *, clock: Callable[[], float] = time.monotonic) -> Backends:
    """Read the backends file and build the backends."""
    return build(load_file(path), clock=clock)
