"""Rows of the shared sliding-window limiters (broker/services/ratelimit.py), as prepared statements."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import bindparam, delete, insert, select

from broker.db.units import Statement, Tx
from broker.models import rate_limit_events

LIVE = Statement(
    lambda: select(rate_limit_events.c.expires_at).where(
        rate_limit_events.c.key == bindparam("key"), rate_limit_events.c.expires_at > bindparam("now")
    )
)
ADD = Statement(
    lambda: insert(rate_limit_events).values(
        kind=bindparam("kind"), key=bindparam("key"), expires_at=bindparam("expires_at")
    )
)
PRUNE = Statement(
    lambda: delete(rate_limit_events).where(
        rate_limit_events.c.kind == bindparam("kind"), rate_limit_events.c.expires_at <= bindparam("now")
    )
)


async def live(tx: Tx, keys: Sequence[str], *, now: float) -> list[tuple[str, float]]:
    """(key, expires_at) of every event under these keys still inside its window."""
    out = []
    for key in dict.fromkeys(keys):
        out += [(key, float(row[0])) for row in await tx.all(LIVE, {"key": key, "now": now})]
    return out


async def add(tx: Tx, *, kind: str, keys: Sequence[str], expires_at: float) -> None:
    """Count one event under every key until `expires_at`."""
    await tx.execute_many(ADD, [{"kind": kind, "key": k, "expires_at": expires_at} for k in keys])


async def prune(tx: Tx, *, kind: str, now: float) -> int:
    """Delete this limiter's events that have left their window (never one that still counts)."""
    return await tx.execute(PRUNE, {"kind": kind, "now": now})
