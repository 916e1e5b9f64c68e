"""Alembic environment: async engine; the URL is passed in by broker.db.migrate."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

import broker.models  # noqa: F401  (registers the tables on the metadata)
from broker.db.base import metadata
from broker.db.engine import make_engine

config = context.config


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _main() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = make_engine(config.get_main_option("sqlalchemy.url") or "")
    async with engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            # Batch mode rebuilds a table by dropping it, which SQLite refuses while other rows point at it
            # and foreign keys are on; the pragma is ignored inside a transaction, so it goes first, on the
            # driver's connection (this connection is disposed of with the engine below).
            await conn.run_sync(lambda c: c.connection.cursor().execute("PRAGMA foreign_keys=OFF"))
        await conn.run_sync(_run)
        await conn.commit()
    await engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline SQL generation is not supported; run against a database")
asyncio.run(_main())
