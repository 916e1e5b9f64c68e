"""Audit events: one per request, in the transaction of the change, before any value leaves."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncConnection

from broker.domain.request import RequestContext
from broker.repositories import audit as audit_repo
from broker.services.runtime import Runtime


def outcome_for(status: int) -> str:
    """Outcome label for an HTTP status."""
    if status < 400:
        return "ok"
    if status in (401, 403, 429):
        return "denied"
    if status < 500:
        return "invalid"
    return "error"


async def record(conn: AsyncConnection, rt: Runtime, ctx: RequestContext, *, status: int = 200) -> None:
    """Write the request's event inside the caller's transaction."""
    await audit_repo.append(conn, ctx, outcome=outcome_for(status), status=status, now=rt.clock())
    ctx.audited = True


async def record_alone(rt: Runtime, ctx: RequestContext, *, status: int) -> None:
    """Write the request's event in its own transaction (failures, and requests no service recorded)."""
    async with rt.engine.begin() as conn:
        await audit_repo.append(conn, ctx, outcome=outcome_for(status), status=status, now=rt.clock())
    ctx.audited = True
