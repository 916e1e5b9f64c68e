"""Whole-table reads and writes for `db copy`: every table of the schema, rows as they are stored."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

from sqlalchemy import Integer, Table, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from broker.db.base import Base
from broker.models import environments, secret_versions, secrets


def tables() -> list[Table]:
    """Every table of the schema, parents before the tables whose foreign keys name them."""
    return list(Base.metadata.sorted_tables)


async def count(conn: AsyncConnection, table: Table) -> int:
    """How many rows `table` holds."""
    return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())


async def first_filled(conn: AsyncConnection) -> str | None:
    """The name of the first table that holds a row, or None when every table is empty."""
    for table in tables():
        if (await conn.execute(select(1).select_from(table).limit(1))).first() is not None:
            return table.name
    return None


async def rows(conn: AsyncConnection, table: Table, *, batch: int) -> AsyncIterator[list[dict[str, Any]]]:
    """The table's rows in primary-key order (a parent row before the rows that point at it), in batches."""
    result = await conn.stream(select(table).order_by(*table.primary_key.columns))
    async for part in result.partitions(batch):
        yield [dict(row._mapping) for row in part]


async def insert(conn: AsyncConnection, table: Table, batch: Sequence[dict[str, Any]]) -> None:
    """Insert rows with the ids they carry."""
    await conn.execute(table.insert(), list(batch))


async def move_sequences_past_ids(conn: AsyncConnection) -> None:
    """On PostgreSQL, set each generated id's sequence past the largest copied id, so the next insert
    does not collide with a copied row."""
    for table in tables():
        pk = list(table.primary_key.columns)
        if len(pk) != 1 or not isinstance(pk[0].type, Integer) or pk[0].autoincrement is False:
            continue
        sequence = func.pg_get_serial_sequence(table.name, pk[0].name)
        await conn.execute(
            select(func.setval(sequence, func.coalesce(func.max(pk[0]), 0) + 1, False)).select_from(table)
        )


async def sample_versions(conn: AsyncConnection, *, limit: int) -> list[Any]:
    """Up to `limit` stored values, newest first: (project_id, environment_id, name, version, ciphertext,
    wrapped_dek, kek_id)."""
    stmt = (
        select(
            environments.c.project_id,
            secrets.c.environment_id,
            secrets.c.name,
            secret_versions.c.version,
            secret_versions.c.ciphertext,
            secret_versions.c.wrapped_dek,
            secret_versions.c.kek_id,
        )
        .join(secrets, secrets.c.id == secret_versions.c.secret_id)
        .join(environments, environments.c.id == secrets.c.environment_id)
        .where(secret_versions.c.ciphertext.is_not(None), secret_versions.c.destroyed_at.is_(None))
        .order_by(secret_versions.c.id.desc())
        .limit(limit)
    )
    return list((await conn.execute(stmt)).all())
