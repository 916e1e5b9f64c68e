"""The OIDC `jti` replay register."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from broker.models import oidc_replays


async def remember_jti(
    conn: AsyncConnection, *, issuer: str, jti_hash: bytes, expires_at: datetime, now: datetime
) -> bool:
    """Record a first use of a `jti`; False when it was used already (and has not expired from the register)."""
    await conn.execute(delete(oidc_replays).where(oidc_replays.c.expires_at <= now))
    try:
        async with conn.begin_nested():
            await conn.execute(
                insert(oidc_replays).values(issuer=issuer, jti_hash=jti_hash, expires_at=expires_at)
            )
    except IntegrityError:
        return False
    return True
