"""The one sliding-window limiter: failed authentications and fingerprint look-ups, counted in the
database so that every broker process on it shares one budget per key."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncEngine

from broker.db.engine import autocommit
from broker.db.units import ConnTx, Tx
from broker.repositories import ratelimit as repo

# Locked keys this process remembers for the hot read's synchronous check; past this many unexpired
# ones it stops answering from memory and sends every request to the general path (which asks the database).
LOCAL_LOCKS = 10_000


@dataclass
class SlidingLimiter:
    """At most `limit` events per key in any `window` seconds. The counts live in the database (pruned of
    expired events only, so an active lockout is never forgotten); `clock` is wall-clock seconds, shared by
    the processes."""

    kind: str
    engine: AsyncEngine
    limit: int
    window: float
    clock: Callable[[], float] = time.time
    _locked: dict[str, float] = field(default_factory=dict)
    _saturated: bool = False
    _pruned_at: float = float("-inf")
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _digest(self, key: str) -> str:
        return hashlib.sha256(f"{self.kind}\0{key}".encode("utf-8", "surrogatepass")).hexdigest()

    async def retry_after(self, keys: Sequence[str], *, tx: Tx | None = None) -> int:
        """Seconds until every key is under its limit again (0 when none is blocked)."""
        if tx is None:
            async with autocommit(self.engine) as own:
                return await self.retry_after(keys, tx=ConnTx(own))
        now = self.clock()
        digests = {self._digest(k): k for k in keys}
        expiries: dict[str, list[float]] = {}
        for digest, expires in await repo.live(tx, list(digests), now=now):
            expiries.setdefault(digest, []).append(expires)
        wait = 0.0
        for digest, times in expiries.items():
            if len(times) >= self.limit:
                # Under the limit again once all but limit - 1 of the live events have expired.
                until = sorted(times)[len(times) - self.limit]
                self._remember(digests[digest], until, now)
                wait = max(wait, until - now)
        return int(wait) + 1 if wait > 0 else 0

    async def record(self, keys: Sequence[str], *, tx: Tx | None = None) -> None:
        """Count one event against every key; in `tx` if given (whose unit must then commit whatever the
        request does next: the count must stay)."""
        if tx is None:
            async with autocommit(self.engine) as own:
                return await self.record(keys, tx=ConnTx(own))
        now = self.clock()
        await repo.add(tx, kind=self.kind, keys=[self._digest(k) for k in keys], expires_at=now + self.window)
        if now - self._pruned_at >= self.window:
            self._pruned_at = now
            await repo.prune(tx, kind=self.kind, now=now)
        # Learn at once whether this event locked a key, for the hot read's check.
        await self.retry_after(keys, tx=tx)

    async def take(self, keys: Sequence[str]) -> int:
        """Use one unit under every key: 0 if allowed (and counted), else the seconds until it would be."""
        wait = await self.retry_after(keys)
        if not wait:
            await self.record(keys)
        return wait

    def known_locked(self, keys: Sequence[str]) -> bool:
        """Whether this process has seen any of the keys locked (no database; the general path asks it)."""
        now = self.clock()
        with self._lock:
            if self._saturated:
                self._locked = {k: t for k, t in self._locked.items() if t > now}
                self._saturated = len(self._locked) > LOCAL_LOCKS
                if self._saturated:
                    return True
            return any(self._locked.get(k, now) > now for k in keys)

    def _remember(self, key: str, until: float, now: float) -> None:
        with self._lock:
            self._locked[key] = max(until, self._locked.get(key, until))
            if len(self._locked) > LOCAL_LOCKS:
                self._locked = {k: t for k, t in self._locked.items() if t > now}
            self._saturated = len(self._locked) > LOCAL_LOCKS
