"""PostgreSQL's grouped insert (broker/db/engine.py PgGroupInsert) on a real cluster: rows that arrive
while a group is in flight go together as one statement over arrays (unnest), with every value, null
and type as a one-row insert stores it; a group that fails fails every member and stores nothing."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import BigInteger, Column, DateTime, Integer, MetaData, String, Table, Text, bindparam, insert
from sqlalchemy.dialects.postgresql import asyncpg as asyncpg_dialect

from broker.db.engine import PgConnections, PgGroupInsert, _unnested, make_engine
from broker.db.units import Statement

meta = MetaData()
rows_table = Table(
    "group_rows",
    meta,
    Column("id", BigInteger, primary_key=True),
    Column("name", String(32), unique=True, nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("n", Integer),
    Column("note", Text),
)
ADD = Statement(
    lambda: (
        insert(rows_table)
        .values(name=bindparam("name"), at=bindparam("at"), n=bindparam("n"), note=bindparam("note"))
        .inline()
    )
)
START = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def _row(i: int) -> dict[str, Any]:
    return {
        "name": f"row-{i:02d}",
        "at": START + timedelta(seconds=i),
        "n": None if i % 3 == 0 else i,
        "note": None if i % 2 else f"note {i} with 'quotes', commas and \u00e9",
    }


def _sql() -> str:
    return ADD.on(asyncpg_dialect.dialect()).sql


def test_the_one_row_insert_becomes_one_statement_over_arrays() -> None:
    assert _unnested(_sql()) == (
        "INSERT INTO group_rows (name, at, n, note) SELECT * FROM unnest($1::VARCHAR[], "
        "$2::TIMESTAMP WITH TIME ZONE[], $3::INTEGER[], $4::VARCHAR[])"
    )
    # A shape it does not know (a placeholder without its type, a RETURNING) keeps executemany.
    assert _unnested("INSERT INTO t (a, b) VALUES ($1, $2::INTEGER)") is None
    assert _unnested("INSERT INTO t (a) VALUES ($1::INTEGER) RETURNING t.id") is None


async def _with_group(db_url: str, body: Any) -> None:
    engine = make_engine(db_url)
    async with engine.begin() as conn:
        await conn.run_sync(meta.drop_all)
        await conn.run_sync(meta.create_all)
    connections = PgConnections(engine, 1)
    try:
        await body(engine, PgGroupInsert(connections, _sql(), limit=1))
    finally:
        await connections.close()
        async with engine.begin() as conn:
            await conn.run_sync(meta.drop_all)
        await engine.dispose()


def _stored(engine: Any) -> Any:
    async def go() -> list[dict[str, Any]]:
        async with engine.connect() as conn:
            result = await conn.execute(rows_table.select().order_by(rows_table.c.id))
            return [dict(r._mapping) for r in result]

    return go()


def test_a_group_stores_every_row_as_a_one_row_insert_would(db_url: str) -> None:
    """30 rows at once with one group allowed in flight: the first goes alone, the 29 that arrive
    meanwhile go as one statement; every value (nulls, times, quotes, non-ASCII) comes back, in order."""
    if not db_url.startswith("postgresql"):
        pytest.skip("the grouped insert is PostgreSQL's (SQLite's writer groups whole units)")

    async def body(engine: Any, group: PgGroupInsert) -> None:
        p = ADD.on(engine.dialect)
        await asyncio.gather(*(group.run(p.args(_row(i))) for i in range(30)))
        stored = await _stored(engine)
        assert [{k: r[k] for k in ("name", "at", "n", "note")} for r in stored] == [
            _row(i) for i in range(30)
        ]

    asyncio.run(_with_group(db_url, body))


def test_a_group_that_fails_fails_every_member_and_stores_nothing(db_url: str) -> None:
    """Two rows of the 29-row group share a unique name: the statement fails, all 29 callers get the
    error, and none of their rows is stored (the first, alone in its own group, is)."""
    if not db_url.startswith("postgresql"):
        pytest.skip("the grouped insert is PostgreSQL's (SQLite's writer groups whole units)")
    import asyncpg

    async def body(engine: Any, group: PgGroupInsert) -> None:
        p = ADD.on(engine.dialect)
        rows = [_row(i) for i in range(30)]
        rows[20]["name"] = rows[10]["name"]
        results = await asyncio.gather(*(group.run(p.args(r)) for r in rows), return_exceptions=True)
        assert results[0] is None
        assert all(isinstance(r, asyncpg.exceptions.UniqueViolationError) for r in results[1:])
        assert [r["name"] for r in await _stored(engine)] == ["row-00"]

    asyncio.run(_with_group(db_url, body))
