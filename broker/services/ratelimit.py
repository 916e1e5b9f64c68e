"""The one sliding-window limiter: failed authentications and fingerprint look-ups, counted in the
database so that every broker process on it shares one budget per key."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from broker.db.engine import autocommit
from broker.db.units import ConnTx, Tx
from broker.repositories import ratelimit as repo


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
    _pruned_at: float = float("-inf")

    def _digest(self, key: str) -> str:
        return hashlib.sha256(f"{self.kind}\0{key}".encode("utf-8", "surrogatepass")).hexdigest()

    async def retry_after(self, keys: Sequence[str], *, tx: Tx | None = None) -> int:
        """Seconds until every key is under its limit again (0 when none is blocked)."""
        if tx is None:
            async with autocommit(self.engine) as own:
                return await self.retry_after(keys, tx=ConnTx(own))
        now = self.clock()
        waits = [
            await repo.locked(tx, self._digest(k), now=now, limit=self.limit) for k in dict.fromkeys(keys)
        ]
        return self.wait_from(waits, now=now)

    def lock_args(self, key: str) -> dict[str, Any]:
        """The parameters of `repositories.ratelimit.locked_until` for `key`, for a statement that embeds it."""
        return {"limit_key": self._digest(key), "limit_now": self.clock(), "limit_offset": self.limit - 1}

    def wait_from(self, until: Sequence[float | None], *, now: float | None = None) -> int:
        """Seconds to wait from the keys' `locked_until` values (0 when none is blocked)."""
        now = self.clock() if now is None else now
        wait = max((u - now for u in until if u is not None), default=0.0)
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

    async def take(self, keys: Sequence[str]) -> int:
        """Use one unit under every key: 0 if allowed (and counted), else the seconds until it would be."""
        wait = await self.retry_after(keys)
        if not wait:
            await self.record(keys)
        return wait
