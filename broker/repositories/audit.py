"""Audit event rows."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from broker.domain.request import RequestContext
from broker.models import audit_events

_TEXT_LIMITS = {
    "user_agent": 512,
    "route": 256,
    "reason": 2000,
    "project": 64,
    "environment": 64,
    "secret_name": 256,
}


def _clip(value: str | None, key: str) -> str | None:
    if value is None:
        return None
    # PostgreSQL text cannot hold NUL: a refused name or path containing one must still be audited.
    return value.replace("\x00", "\\x00")[: _TEXT_LIMITS[key]]


async def append(
    conn: AsyncConnection, ctx: RequestContext, *, outcome: str, status: int, now: datetime
) -> None:
    """Insert one event for the request; never carries a value."""
    actor = ctx.actor
    await conn.execute(
        insert(audit_events).values(
            occurred_at=now,
            request_id=ctx.request_id,
            actor_id=actor.principal_id if actor else None,
            actor_type=actor.principal_type if actor else None,
            actor_name=actor.name if actor else None,
            token_accessor=actor.accessor if actor else None,
            source_addr=ctx.source_addr,
            user_agent=_clip(ctx.user_agent, "user_agent"),
            method=ctx.method,
            route=_clip(ctx.route, "route") or "",
            action=ctx.action,
            project=_clip(ctx.project, "project"),
            environment=_clip(ctx.environment, "environment"),
            secret_name=_clip(ctx.secret_name, "secret_name"),
            version=ctx.version,
            outcome=outcome,
            status=status,
            reason=_clip(ctx.reason, "reason"),
        )
    )
