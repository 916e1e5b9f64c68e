"""Whole-table reads and writes for `db copy`, `backup` and `restore`: every table of the schema, rows as
they are stored, in foreign-key order; and the backup file's own table (its manifest and checkpoints)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

from sqlalchemy import Column, Integer, MetaData, String, Table, Text, delete, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from broker.db.base import Base
from broker.models import broker_keyrings, environments, secret_versions, secrets


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


async def copy_tables(
    src: AsyncConnection, dst: AsyncConnection, *, batch: int
) -> list[tuple[str, int, int, int]]:
    """Copy every table from `src` to `dst` in foreign-key order (each side in the caller's transaction):
    per table (name, rows counted in the source, rows read, rows the target then holds)."""
    done = []
    for table in tables():
        expected = await count(src, table)
        n = 0
        async for part in rows(src, table, batch=batch):
            await insert(dst, table, part)
            n += len(part)
        done.append((table.name, expected, n, await count(dst, table)))
    return done


async def wipe(conn: AsyncConnection) -> None:
    """Delete every row of every table, children first (for a restore told to replace the target)."""
    for table in reversed(tables()):
        await conn.execute(delete(table))


async def forget_running(conn: AsyncConnection) -> None:
    """Drop the heartbeat rows of the brokers that were running (a backup restores data, not processes)."""
    await conn.execute(delete(broker_keyrings))


# The backup file's own table, beside the broker's tables: the manifest and the checkpoint documents.
backup_meta = MetaData()
backup_documents = Table(
    "strongroom_backup",
    backup_meta,
    Column("name", String(64), primary_key=True),
    Column("document", Text, nullable=False),
)


async def add_documents(conn: AsyncConnection, documents: Sequence[tuple[str, str]]) -> None:
    """Create the backup table and store (name, document) rows in it."""
    await conn.run_sync(backup_meta.create_all)
    if documents:
        await conn.execute(backup_documents.insert(), [{"name": n, "document": d} for n, d in documents])


async def documents(conn: AsyncConnection) -> dict[str, str]:
    """The backup file's documents by name."""
    result = await conn.execute(select(backup_documents.c.name, backup_documents.c.document))
    return {str(name): str(doc) for name, doc in result.all()}


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
