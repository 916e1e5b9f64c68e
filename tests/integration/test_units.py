"""Units of work (broker/db/units.py) on a real SQLite file and a real PostgreSQL cluster: one interface
over the raw drivers and SQLAlchemy, a refused unit rolled back alone, a unit that must wait run again
where it may, and a unit that really suspends inside the SQLite writer refused as the bug it is."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, bindparam, insert, select, text

from broker.db.engine import make_engine
from broker.db.units import ConnTx, IntegrityViolation, MustWait, SqliteTx, Statement, Tx, Units, drive

meta = MetaData()
things = Table(
    "unit_things", meta, Column("id", Integer, primary_key=True), Column("name", String(32), unique=True)
)
ADD = Statement(lambda: insert(things).values(name=bindparam("name")).returning(things.c.id))
NAMES = Statement(lambda: select(things.c.name).order_by(things.c.name))


@contextlib.asynccontextmanager
async def _units(db_url: str) -> AsyncIterator[Units]:
    engine = make_engine(db_url)
    async with engine.begin() as conn:
        await conn.run_sync(meta.drop_all)
        await conn.run_sync(meta.create_all)
    u = Units(engine)
    try:
        yield u
    finally:
        await u.close()
        async with engine.begin() as conn:
            await conn.run_sync(meta.drop_all)
        await engine.dispose()


def run(db_url: str, body: Callable[[Units], Awaitable[None]]) -> None:
    """Run `body` with units on the test database, all on one event loop (asyncpg binds to it)."""

    async def go() -> None:
        async with _units(db_url) as u:
            await body(u)

    asyncio.run(go())


async def _names(u: Units) -> list[str]:
    async def unit(tx: Tx) -> list[str]:
        return [row[0] for row in await tx.all(NAMES, {})]

    return await u.run(unit)


class Refused(Exception):
    pass


def test_a_refused_unit_rolls_back_alone_and_its_neighbours_commit(db_url: str) -> None:
    """Units submitted together (one group on SQLite): the one that raises has written nothing, the
    others committed, and each caller gets its own outcome."""

    async def body(units: Units) -> None:

        def add(name: str, fail: bool) -> Any:
            async def unit(tx: Tx) -> int:
                row = await tx.one(ADD, {"name": name})
                if fail:
                    raise Refused(name)
                assert row is not None
                return int(row[0])

            return unit

        got = await asyncio.gather(
            *(units.run(add(f"n{i}", i % 3 == 1)) for i in range(9)), return_exceptions=True
        )
        assert [isinstance(g, Refused) for g in got] == [i % 3 == 1 for i in range(9)]
        assert await _names(units) == sorted(f"n{i}" for i in range(9) if i % 3 != 1)

    run(db_url, body)


def test_a_constraint_violation_is_one_error_whatever_the_driver(db_url: str) -> None:
    async def body(units: Units) -> None:
        async def unit(tx: Tx) -> None:
            await tx.one(ADD, {"name": "same"})

        await units.run(unit)
        with pytest.raises(IntegrityViolation):
            await units.run(unit)
        assert await _names(units) == ["same"]

    run(db_url, body)


def test_a_unit_that_must_wait_runs_again_where_it_may(db_url: str) -> None:
    async def body(units: Units) -> None:
        seen: list[bool] = []

        async def unit(tx: Tx) -> str:
            seen.append(tx.can_wait)
            if not tx.can_wait:
                raise MustWait()
            await asyncio.sleep(0)  # waiting on something else is allowed here
            await tx.one(ADD, {"name": "waited"})
            return "done"

        assert await units.run(unit) == "done"
        assert seen in ([False, True], [True])  # [True]: a database without a raw-driver path
        assert await _names(units) == ["waited"]
        if units.sqlite is not None or units.pg is not None:
            assert seen == [False, True]

    run(db_url, body)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_unit_that_suspends_inside_the_sqlite_writer_is_refused(db_url: str) -> None:
    async def body(units: Units) -> None:
        assert units.sqlite is not None

        async def unit(tx: Tx) -> None:
            await tx.one(ADD, {"name": "never"})
            await asyncio.sleep(0)  # a real suspension: a bug in a unit

        with pytest.raises(RuntimeError, match="suspended"):
            await units.run(unit)
        assert await _names(units) == []  # its insert rolled back with it

    run(db_url, body)


def test_drive_returns_what_a_unit_returns() -> None:
    async def unit() -> int:
        return 7

    assert drive(unit()) == 7


def test_conn_tx_is_the_same_interface_over_sqlalchemy(db_url: str) -> None:
    async def body(units: Units) -> None:
        async with units.engine.begin() as conn:
            tx = ConnTx(conn)
            row = await tx.one(ADD, {"name": "via-sqlalchemy"})
            assert row is not None and int(row[0]) >= 1
            assert [r[0] for r in await tx.all(NAMES, {})] == ["via-sqlalchemy"]
        assert not isinstance(tx, SqliteTx)
        assert await _names(units) == ["via-sqlalchemy"]

    run(db_url, body)


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_a_one_statement_unit_must_write_what_it_held(db_url: str) -> None:
    """`run_one_statement`: an append is held, not run; the unit takes it for its one statement (only
    for the insert it was appended for). A unit that leaves one unwritten, or takes rows appended for
    another insert, is refused as the bug it is, and nothing was written."""
    other = Statement(lambda: insert(things).values(name=bindparam("name")))

    async def body(u: Units) -> None:
        assert u.one_statement

        async def writes_it(tx: Any) -> int:
            await tx.append(ADD, {"name": "held"})
            assert await _names(u) == []  # held, not run
            (row,) = tx.take_held(ADD)
            return await tx.execute(other, row)

        assert await u.run_one_statement(writes_it) == 1
        assert await _names(u) == ["held"]

        async def leaves_it(tx: Any) -> None:
            await tx.append(ADD, {"name": "left"})

        with pytest.raises(RuntimeError, match="left an audit event unwritten"):
            await u.run_one_statement(leaves_it)

        async def takes_another(tx: Any) -> None:
            await tx.append(ADD, {"name": "wrong"})
            tx.take_held(other)

        with pytest.raises(RuntimeError, match="held a row for another insert"):
            await u.run_one_statement(takes_another)
        assert await _names(u) == ["held"]

    run(db_url, body)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # turns are the process's, not the database's
def test_turns_are_taken_in_order_per_key_and_given_back(db_url: str) -> None:
    """`Units.turn`: holders of one key run one after another in arrival order, another key is not
    held up, and no key is kept once nobody holds it."""

    async def body(u: Units) -> None:
        order: list[str] = []
        first_in = asyncio.Event()
        release = asyncio.Event()

        async def first() -> None:
            async with u.turn("k"):
                order.append("first in")
                first_in.set()
                await release.wait()
                order.append("first out")

        async def second() -> None:
            await first_in.wait()
            async with u.turn("k"):
                order.append("second in")

        async def elsewhere() -> None:
            await first_in.wait()
            async with u.turn("other"):
                order.append("other key")
            release.set()

        await asyncio.gather(first(), second(), elsewhere())
        assert order == ["first in", "other key", "first out", "second in"]
        assert u._turns == {}

    run(db_url, body)


def test_every_sqlite_connection_is_durable_and_journals_savepoints_in_memory(tmp_path: Path) -> None:
    """The writer's connection (units) and the pool's (SQLAlchemy) both: WAL, a sync on every commit,
    foreign keys enforced, and the savepoint journal each unit writes kept in memory, not in a file."""
    expected = {"journal_mode": "wal", "synchronous": 2, "foreign_keys": 1, "temp_store": 2}
    pragmas = {name: Statement(lambda name=name: text(f"PRAGMA {name}")) for name in expected}

    async def go() -> None:
        async with _units(f"sqlite+aiosqlite:///{tmp_path / 'units.db'}") as units:

            async def unit(tx: Tx) -> dict[str, Any]:
                return {name: (await tx.one(st, {}) or [None])[0] for name, st in pragmas.items()}

            assert await units.run(unit) == expected
            async with units.engine.connect() as conn:
                assert {
                    name: (await conn.execute(text(f"PRAGMA {name}"))).scalar() for name in expected
                } == expected

    asyncio.run(go())
