"""Rows of the shared sliding-window limiters (broker/services/ratelimit.py), as prepared statements."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Float, Integer, ScalarSelect, bindparam, delete, insert, select

from broker.db.units import Statement, Tx
from broker.models import rate_limit_events


def locked_until() -> ScalarSelect[Any]:
    """When the key (`limit_key`) is under its limit again: the expiry of its `limit_offset` + 1-th
    newest live event (all but limit - 1 of them must expire first); NULL when it is under the limit."""
    return (
        select(rate_limit_events.c.expires_at)
        .where(
            rate_limit_events.c.key == bindparam("limit_key"),
            rate_limit_events.c.expires_at > bindparam("limit_now", type_=Float),
        )
        .order_by(rate_limit_events.c.expires_at.desc())
        .limit(1)
        .offset(bindparam("limit_offset", type_=Integer))
        .scalar_subquery()
    )


LOCKED_UNTIL = Statement(lambda: select(locked_until().label("locked_until")))
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


async def locked(tx: Tx, key: str, *, now: float, limit: int) -> float | None:
    """When `key` is under `limit` again (None: it is now)."""
    row = await tx.one(LOCKED_UNTIL, {"limit_key": key, "limit_now": now, "limit_offset": limit - 1})
    return float(row[0]) if row is not None and row[0] is not None else None


async def add(tx: Tx, *, kind: str, keys: Sequence[str], expires_at: float) -> None:
    """Count one event under every key until `expires_at`."""
    await tx.execute_many(ADD, [{"kind": kind, "key": k, "expires_at": expires_at} for k in keys])


async def prune(tx: Tx, *, kind: str, now: float) -> int:
    """Delete this limiter's events that have left their window (never one that still counts)."""
    return await tx.execute(PRUNE, {"kind": kind, "now": now})
