"""What every service needs, built once by the composition root and passed down."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncEngine

from broker.audit.trail import AuditTrail
from broker.backends.router import Backends
from broker.config import Settings
from broker.db.engine import HotDb
from broker.keys import KeyMaterial
from broker.oidc import Oidc


def utcnow() -> datetime:
    """The server's clock, UTC."""
    return datetime.now(UTC)


@dataclass
class FailureLimiter:
    """Counts failed authentications per key in a sliding window (per process)."""

    limit: int
    window: float
    clock: Callable[[], float]
    _hits: dict[str, deque[float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def retry_after(self, keys: list[str]) -> int:
        """Seconds until every key is under its limit again (0 when none is blocked)."""
        now = self.clock()
        wait = 0.0
        with self._lock:
            for key in keys:
                hits = self._hits.get(key)
                if not hits:
                    continue
                while hits and hits[0] <= now - self.window:
                    hits.popleft()
                if len(hits) >= self.limit:
                    wait = max(wait, hits[0] + self.window - now)
        return int(wait) + 1 if wait > 0 else 0

    def fail(self, keys: list[str]) -> None:
        """Record one failure against every key."""
        now = self.clock()
        with self._lock:
            if len(self._hits) > 100_000:
                # Bound memory under a spray of distinct keys: forget the oldest half.
                for key in list(self._hits)[:50_000]:
                    del self._hits[key]
            for key in keys:
                self._hits.setdefault(key, deque()).append(now)


@dataclass
class Runtime:
    """Engine, keys, settings and clock for the services."""

    settings: Settings
    engine: AsyncEngine
    keys: KeyMaterial
    limiter: FailureLimiter
    audit: AuditTrail
    clock: Callable[[], datetime] = utcnow
    backends: Backends | None = None
    # The one-secret read's own connections (the SQLite group-commit writer, or asyncpg connections).
    hot: HotDb | None = None
    # Trusted OIDC issuers, roles and their key sets (None: OIDC login is off).
    oidc: Oidc | None = None
