"""What every service needs, built once by the composition root and passed down."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncEngine

from broker.audit.trail import AuditTrail
from broker.backends.router import Backends
from broker.config import Settings
from broker.db.engine import HotDb
from broker.keys import KeyMaterial
from broker.services.ratelimit import SlidingLimiter


def utcnow() -> datetime:
    """The server's clock, UTC."""
    return datetime.now(UTC)


@dataclass
class Runtime:
    """Engine, keys, settings and clock for the services."""

    settings: Settings
    engine: AsyncEngine
    keys: KeyMaterial
    # Failed authentications per canonical principal and per source address (shared through the database).
    limiter: SlidingLimiter
    audit: AuditTrail
    # Fingerprint look-ups per token accessor and per source address.
    fingerprint_limiter: SlidingLimiter
    clock: Callable[[], datetime] = utcnow
    backends: Backends | None = None
    # The one-secret read's own connections (the SQLite group-commit writer, or asyncpg connections).
    hot: HotDb | None = None
