"""Rows of the shared sliding-window limiters (broker/services/ratelimit.py)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from broker.models import rate_limit_events


async def live(conn: AsyncConnection, keys: Sequence[str], *, now: float) -> list[tuple[str, float]]:
    """(key, expires_at) of every event under these keys still inside its window."""
    result = await conn.execute(
        select(rate_limit_events.c.key, rate_limit_events.c.expires_at).where(
            rate_limit_events.c.key.in_(list(keys)), rate_limit_events.c.expires_at > now
        )
    )
    return [(str(k), float(e)) for k, e in result.all()]


async def add(conn: AsyncConnection, *, kind: str, keys: Sequence[str], expires_at: float) -> None:
    """Count one event under every key until `expires_at`."""
    await conn.execute(
        insert(rate_limit_events), [{"kind": kind, "key": k, "expires_at": expires_at} for k in keys]
    )


async def prune(conn: AsyncConnection, *, kind: str, now: float) -> int:
    """Delete this limiter's events that have left their window (never one that still counts)."""
    result = await conn.execute(
        delete(rate_limit_events).where(
            rate_limit_events.c.kind == kind, rate_limit_events.c.expires_at <= now
        )
    )
    return int(result.rowcount or 0)
