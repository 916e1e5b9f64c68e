"""Async engine set-up: SQLite pragmas and write locks, PostgreSQL pool."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

READ_ONLY = "strongroom_single_statement"


@asynccontextmanager
async def autocommit(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection whose statements each commit alone: no BEGIN/COMMIT round trips, no write lock.

    For work that is one statement at a time and needs no atomicity across them (the token check).
    """
    async with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            # The driver connection is already in autocommit mode (see _connect); only skip our BEGIN.
            yield await conn.execution_options(**{READ_ONLY: True})
        else:
            yield await conn.execution_options(isolation_level="AUTOCOMMIT")


def make_engine(url: str, *, pool_size: int = 10) -> AsyncEngine:
    """Create the async engine for a SQLAlchemy URL (sqlite+aiosqlite or postgresql+asyncpg)."""
    if url.startswith("sqlite"):
        engine = create_async_engine(url, connect_args={"timeout": 30})
        _sqlite_setup(engine)
        return engine
    # No pre-ping: it costs a round trip per checkout on the hot path; recycling bounds stale connections,
    # and a connection the server dropped fails one request rather than every request paying for a check.
    return create_async_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_recycle=1800)


def _sqlite_setup(engine: AsyncEngine) -> None:
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, decide when transactions begin (see _begin).
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(sync_engine, "begin")
    def _begin(conn: Any) -> None:
        if conn.get_execution_options().get(READ_ONLY):
            # A single read-only statement (the token check) needs no transaction and no write lock.
            return
        # Every request writes an audit event, so every transaction is a writer: taking the write
        # lock up front avoids SQLITE_BUSY on a read-to-write upgrade under concurrency.
        conn.exec_driver_sql("BEGIN IMMEDIATE")
