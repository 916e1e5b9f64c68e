"""Running brokers' heartbeat rows: which KEK ids each process holds (for `keys rewrap`)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from broker.db.base import DbRow
from broker.models import broker_keyrings


async def beat(
    conn: AsyncConnection,
    *,
    instance: str,
    host: str,
    pid: int,
    current: str,
    kek_ids: Sequence[str],
    now: datetime,
) -> None:
    """Record (or refresh) this process's row with the keys it holds now."""
    values = {"host": host, "pid": pid, "current_kek": current, "kek_ids": list(kek_ids), "seen_at": now}
    result = await conn.execute(
        update(broker_keyrings).where(broker_keyrings.c.id == instance).values(values)
    )
    if result.rowcount == 0:
        await conn.execute(insert(broker_keyrings).values(id=instance, started_at=now, **values))


async def forget(conn: AsyncConnection, instance: str) -> None:
    """Remove this process's row (clean shutdown)."""
    await conn.execute(delete(broker_keyrings).where(broker_keyrings.c.id == instance))


async def seen_since(conn: AsyncConnection, since: datetime) -> list[DbRow]:
    """Rows of brokers heard from at or after `since`: (id, host, pid, current_kek, kek_ids, seen_at)."""
    result = await conn.execute(
        select(
            broker_keyrings.c.id,
            broker_keyrings.c.host,
            broker_keyrings.c.pid,
            broker_keyrings.c.current_kek,
            broker_keyrings.c.kek_ids,
            broker_keyrings.c.seen_at,
        )
        .where(broker_keyrings.c.seen_at >= since)
        .order_by(broker_keyrings.c.id)
    )
    return list(result.all())


async def prune(conn: AsyncConnection, before: datetime) -> None:
    """Drop rows of brokers not heard from since `before` (crashed processes)."""
    await conn.execute(delete(broker_keyrings).where(broker_keyrings.c.seen_at < before))
