"""Readiness: can the broker reach its database and is the schema current."""

from __future__ import annotations

from sqlalchemy import text

from broker.services.runtime import Runtime


async def database_ok(rt: Runtime) -> bool:
    """Whether a trivial query succeeds."""
    try:
        async with rt.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception:
        return False
    return True
