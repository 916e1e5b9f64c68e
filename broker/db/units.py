"""Units of work: Core statements compiled once per dialect, run on the raw driver through one `Tx`.

A unit of work is an `async def unit(tx)` whose only awaits are `tx` calls. `Units.run` runs it:

- SQLite (a file): inside the group-commit writer (`SqliteWriter`), driven to completion synchronously
  on the event loop (one thread hop per group, for the commit). A unit that really suspends is a bug
  and raises; a unit that must wait on something else (a remote key, a file sink) raises `MustWait`
  first and runs again in a transaction that may wait.
- PostgreSQL (asyncpg): on an asyncpg connection, in a transaction (or, for a unit whose statements
  need no atomicity across them, each statement committing by itself; or, `run_one_statement`, reads
  committing by themselves and the unit's change and its audit events in one statement, atomic alone).
- Otherwise (in-memory SQLite, another driver, or a unit that must wait): in a SQLAlchemy transaction,
  through `ConnTx`, the same interface over an `AsyncConnection`; services that still hold an
  `AsyncConnection` use `ConnTx` too, so they share the token lookup and the audit appender.

Statements live in the repositories as `Statement`s (a Core statement built on first use); each is
compiled once per dialect to the driver's SQL text with its bind and result processors (the column
types' own, so what is stored and read is exactly what the Core path stores and reads).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from sqlalchemy import Float, Numeric
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ClauseElement

from broker.db.engine import PgConnections, PgGroupInsert, SqliteWriter

Processor = Callable[[Any], Any] | None
T = TypeVar("T")


class MustWait(Exception):
    """Raised by a unit, before it has written anything, when it needs to wait on something other than
    the database (a blocking key service, a file sink): it then runs again where it may."""


class IntegrityViolation(Exception):
    """A constraint refused a unit's statement (a unique key taken by a concurrent writer, say), whatever
    the driver; the unit rolled back."""


def _integrity_errors() -> tuple[type[BaseException], ...]:
    from sqlalchemy.exc import IntegrityError

    found: list[type[BaseException]] = [sqlite3.IntegrityError, IntegrityError]
    try:
        import asyncpg
    except ImportError:  # PostgreSQL support not installed
        pass
    else:
        found.append(asyncpg.exceptions.IntegrityConstraintViolationError)
    return tuple(found)


_INTEGRITY = _integrity_errors()


class Prepared:
    """One statement compiled for one dialect: SQL text, positional parameter order and processors."""

    def __init__(self, stmt: ClauseElement, dialect: Dialect) -> None:
        compiled = stmt.compile(dialect=dialect)
        assert isinstance(compiled, SQLCompiler)
        self.sql = str(compiled)
        order = compiled.positiontup or []
        binds = compiled.binds
        self.params: list[tuple[str, Processor, Any]] = [
            (name, binds[name].type.dialect_impl(dialect).bind_processor(dialect), binds[name].value)
            for name in order
        ]
        columns: Sequence[Any] = getattr(stmt, "selected_columns", None) or [
            c for c in getattr(stmt, "_returning", ()) if hasattr(c, "type")
        ]
        self.results: list[tuple[int, Callable[[Any], Any]]] = [
            (i, proc)
            for i, col in enumerate(columns)
            if (proc := _result_processor(col, dialect)) is not None
        ]

    def args(self, values: Mapping[str, Any]) -> list[Any]:
        """Positional parameters from named values (missing ones take the statement's own value, such as
        a LIMIT, else NULL), through the bind processors."""
        out = []
        for name, proc, default in self.params:
            value = values.get(name, default)
            out.append(proc(value) if proc is not None and value is not None else value)
        return out

    def row(self, raw: Sequence[Any] | None) -> list[Any] | None:
        """A result row through the result processors."""
        if raw is None:
            return None
        row = list(raw)
        for i, proc in self.results:
            row[i] = proc(row[i])
        return row


def _result_processor(col: Any, dialect: Dialect) -> Processor:
    impl = col.type.dialect_impl(dialect)
    if dialect.driver == "asyncpg" and isinstance(impl, (Float, Numeric)):
        # asyncpg already returns float for double precision (and Decimal for numeric): the dialect's
        # processor wants the column's type OID, which a statement compiled ahead of time lacks.
        return None
    proc: Processor = impl.result_processor(dialect, None)
    return proc


class Statement:
    """A Core statement built on first use and compiled once per dialect."""

    def __init__(self, build: Callable[[], ClauseElement]) -> None:
        self._build = build
        self._stmt: ClauseElement | None = None
        self._by_dialect: dict[tuple[str, str], Prepared] = {}

    def on(self, dialect: Dialect) -> Prepared:
        """The statement compiled for `dialect` (compiling is deterministic: a race compiles it twice)."""
        key = (dialect.name, dialect.driver)
        found = self._by_dialect.get(key)
        if found is None:
            if self._stmt is None:
                self._stmt = self._build()
            found = self._by_dialect[key] = Prepared(self._stmt, dialect)
        return found


class Tx(Protocol):
    """What a unit of work may do: run prepared statements in its transaction."""

    dialect: Dialect
    # Whether the unit may await something besides these calls (else it raises MustWait first).
    can_wait: bool

    async def one(self, st: Statement, values: Mapping[str, Any]) -> list[Any] | None:
        """The first row (through the result processors), or None."""
        ...

    async def all(self, st: Statement, values: Mapping[str, Any]) -> list[list[Any]]:
        """Every row."""
        ...

    async def execute(self, st: Statement, values: Mapping[str, Any]) -> int:
        """Run a statement; the number of rows it changed."""
        ...

    async def execute_many(self, st: Statement, rows: Sequence[Mapping[str, Any]]) -> None:
        """Run a statement once per row of values."""
        ...

    async def append(self, st: Statement, values: Mapping[str, Any]) -> None:
        """Run an insert that returns nothing, as the unit's last write: in the unit's transaction, or
        (PostgreSQL, a unit whose statements commit one by one) together with other units' rows in one
        commit, committed when this returns."""
        ...


class SqliteTx:
    """`Tx` over a DB-API sqlite3 connection inside the writer's transaction (never suspends)."""

    can_wait = False

    def __init__(self, conn: Any, dialect: Dialect) -> None:
        self.conn = conn
        self.dialect = dialect

    async def one(self, st: Statement, values: Mapping[str, Any]) -> list[Any] | None:
        """The first row, or None."""
        p = st.on(self.dialect)
        return p.row(self.conn.execute(p.sql, p.args(values)).fetchone())

    async def all(self, st: Statement, values: Mapping[str, Any]) -> list[list[Any]]:
        """Every row."""
        p = st.on(self.dialect)
        return [p.row(r) or [] for r in self.conn.execute(p.sql, p.args(values)).fetchall()]

    async def execute(self, st: Statement, values: Mapping[str, Any]) -> int:
        """Run a statement; the number of rows it changed."""
        p = st.on(self.dialect)
        return int(self.conn.execute(p.sql, p.args(values)).rowcount)

    async def execute_many(self, st: Statement, rows: Sequence[Mapping[str, Any]]) -> None:
        """Run a statement once per row of values."""
        p = st.on(self.dialect)
        self.conn.executemany(p.sql, [p.args(r) for r in rows])

    async def append(self, st: Statement, values: Mapping[str, Any]) -> None:
        """An insert in the writer's group (whose one commit already carries every unit's rows)."""
        await self.execute(st, values)


class PgTx:
    """`Tx` on PostgreSQL through asyncpg: on one connection in a transaction (`conn`), or, for a unit whose
    statements commit one by one, a pooled connection per statement (`pool`: none is held while the
    unit waits for its grouped insert) and `groups` giving the grouped inserter of a statement."""

    can_wait = False

    def __init__(
        self,
        dialect: Dialect,
        *,
        conn: Any = None,
        pool: PgConnections | None = None,
        groups: Callable[[str], PgGroupInsert] | None = None,
    ) -> None:
        assert (conn is None) != (pool is None)
        self.conn = conn
        self.pool = pool
        self.dialect = dialect
        self.groups = groups

    async def _call(self, method: str, sql: str, *args: Any) -> Any:
        if self.conn is not None:
            return await getattr(self.conn, method)(sql, *args)
        assert self.pool is not None
        async with self.pool.connection() as conn:
            return await getattr(conn, method)(sql, *args)

    async def one(self, st: Statement, values: Mapping[str, Any]) -> list[Any] | None:
        """The first row, or None."""
        p = st.on(self.dialect)
        return p.row(await self._call("fetchrow", p.sql, *p.args(values)))

    async def all(self, st: Statement, values: Mapping[str, Any]) -> list[list[Any]]:
        """Every row."""
        p = st.on(self.dialect)
        return [p.row(r) or [] for r in await self._call("fetch", p.sql, *p.args(values))]

    async def execute(self, st: Statement, values: Mapping[str, Any]) -> int:
        """Run a statement; the number of rows it changed (from the command tag, e.g. UPDATE 1)."""
        p = st.on(self.dialect)
        tag = await self._call("execute", p.sql, *p.args(values))
        last = str(tag).rsplit(" ", 1)[-1]
        return int(last) if last.isdigit() else 0

    async def execute_many(self, st: Statement, rows: Sequence[Mapping[str, Any]]) -> None:
        """Run a statement once per row of values."""
        p = st.on(self.dialect)
        await self._call("executemany", p.sql, [p.args(r) for r in rows])

    async def append(self, st: Statement, values: Mapping[str, Any]) -> None:
        """An insert, grouped with other units' when this unit's statements commit one by one."""
        if self.groups is None:
            await self.execute(st, values)
            return
        p = st.on(self.dialect)
        await self.groups(p.sql).run(p.args(values))


class PgOneStatement(PgTx):
    """`Tx` for a unit that reads (each read committing by itself) and then writes in ONE statement, which
    PostgreSQL runs atomically with no transaction block: its appends (its audit events) are held in
    `held` rather than run, for the unit to write inside that statement."""

    def __init__(self, dialect: Dialect, *, pool: PgConnections) -> None:
        super().__init__(dialect, pool=pool)
        self.held: list[tuple[Statement, dict[str, Any]]] = []

    async def append(self, st: Statement, values: Mapping[str, Any]) -> None:
        """Hold the row for the unit's one statement (`take_held`)."""
        self.held.append((st, dict(values)))

    def take_held(self, st: Statement) -> list[dict[str, Any]]:
        """The rows appended so far, now the unit's to write; each must have come for the insert `st`
        (the unit's statement writes them to that table)."""
        held, self.held = self.held, []
        if any(other is not st for other, _ in held):
            raise RuntimeError("a one-statement unit of work held a row for another insert")
        return [values for _, values in held]


class ConnTx:
    """`Tx` over a SQLAlchemy `AsyncConnection` (its transaction, its driver): for units that must wait
    and for services that own an `AsyncConnection`."""

    can_wait = True

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn
        self.dialect = conn.dialect

    async def one(self, st: Statement, values: Mapping[str, Any]) -> list[Any] | None:
        """The first row, or None."""
        p = st.on(self.dialect)
        result = await self.conn.exec_driver_sql(p.sql, tuple(p.args(values)))
        return p.row(result.first())

    async def all(self, st: Statement, values: Mapping[str, Any]) -> list[list[Any]]:
        """Every row."""
        p = st.on(self.dialect)
        result = await self.conn.exec_driver_sql(p.sql, tuple(p.args(values)))
        return [p.row(r) or [] for r in result.all()]

    async def execute(self, st: Statement, values: Mapping[str, Any]) -> int:
        """Run a statement; the number of rows it changed."""
        p = st.on(self.dialect)
        result = await self.conn.exec_driver_sql(p.sql, tuple(p.args(values)))
        return int(result.rowcount or 0)

    async def execute_many(self, st: Statement, rows: Sequence[Mapping[str, Any]]) -> None:
        """Run a statement once per row of values."""
        if not rows:
            return
        p = st.on(self.dialect)
        await self.conn.exec_driver_sql(p.sql, [tuple(p.args(r)) for r in rows])

    async def append(self, st: Statement, values: Mapping[str, Any]) -> None:
        """An insert in the transaction."""
        await self.execute(st, values)


def drive(coro: Coroutine[Any, Any, T]) -> T:
    """Run a unit's coroutine to completion without an event loop; raise if it suspends (a bug: its
    only awaits must be `Tx` calls, which never suspend on SQLite)."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coro.close()
    raise RuntimeError("a unit of work suspended inside the SQLite writer; it must only await tx calls")


Unit = Callable[[Tx], Awaitable[T]]


@dataclass(slots=True)
class _Turn:
    """A key's lock and how many hold it or wait for it."""

    lock: asyncio.Lock
    holders: int = 0


class Units:
    """Runs units of work on the engine's database (see the module doc); built once per process."""

    def __init__(self, engine: AsyncEngine, *, pg_connections: int = 8) -> None:
        self.engine = engine
        self.dialect = engine.dialect
        self.sqlite: SqliteWriter | None = None
        self.pg: PgConnections | None = None
        # The grouped inserts' own connections: a unit holds one of `pg` while it waits for its group.
        self._pg_groups: PgConnections | None = None
        self._groups: dict[str, PgGroupInsert] = {}
        self._turns: dict[Hashable, _Turn] = {}
        if engine.dialect.name == "sqlite":
            path = engine.url.database
            if path and path != ":memory:" and not path.startswith("file:"):
                self.sqlite = SqliteWriter(path)
        elif engine.dialect.driver == "asyncpg":
            self.pg = PgConnections(engine, pg_connections)
            self._pg_groups = PgConnections(engine, 2)

    @contextlib.asynccontextmanager
    async def turn(self, key: Hashable) -> AsyncIterator[None]:
        """Hold `key` against this process's other holders of it, first come first served (units that
        would otherwise only lose races to each other, such as optimistic writers to one secret)."""
        entry = self._turns.get(key)
        if entry is None:
            entry = self._turns[key] = _Turn(asyncio.Lock())
        entry.holders += 1
        try:
            async with entry.lock:
                yield
        finally:
            entry.holders -= 1
            if entry.holders == 0:  # holders waiting or not, a key nobody holds costs nothing
                del self._turns[key]

    def _group(self, sql: str) -> PgGroupInsert:
        assert self._pg_groups is not None
        found = self._groups.get(sql)
        if found is None:
            found = self._groups[sql] = PgGroupInsert(self._pg_groups, sql)
        return found

    async def run(self, unit: Callable[[Tx], Coroutine[Any, Any, T]], *, atomic: bool = True) -> T:
        """Run `unit` in one transaction and return its result once committed. `atomic=False` (PostgreSQL):
        each statement commits by itself, for units whose statements need no atomicity across them."""
        try:
            try:
                if self.sqlite is not None:
                    dialect = self.dialect
                    return await self.sqlite.run(lambda conn: drive(unit(SqliteTx(conn, dialect))))
                if self.pg is not None:
                    if not atomic:
                        return await unit(PgTx(self.dialect, pool=self.pg, groups=self._group))
                    async with self.pg.connection() as conn, conn.transaction():
                        return await unit(PgTx(self.dialect, conn=conn))
            except MustWait:
                pass
            return await self.run_waiting(unit)
        except _INTEGRITY as exc:
            raise IntegrityViolation(type(exc).__name__) from None

    @property
    def one_statement(self) -> bool:
        """Whether `run_one_statement` may be used (PostgreSQL through asyncpg)."""
        return self.pg is not None

    async def run_one_statement(self, unit: Callable[[PgOneStatement], Coroutine[Any, Any, T]]) -> T:
        """Run `unit` outside a transaction block (PostgreSQL only): each read commits by itself and the
        unit's one write statement carries its appends (see PgOneStatement); a unit that left one unwritten
        is a bug and raises. MustWait propagates: the caller runs its ordinary unit instead."""
        assert self.pg is not None
        tx = PgOneStatement(self.dialect, pool=self.pg)
        try:
            result = await unit(tx)
        except _INTEGRITY as exc:
            raise IntegrityViolation(type(exc).__name__) from None
        if tx.held:
            raise RuntimeError("a one-statement unit of work left an audit event unwritten")
        return result

    async def run_waiting(self, unit: Callable[[Tx], Coroutine[Any, Any, T]]) -> T:
        """Run `unit` in a SQLAlchemy transaction, where it may wait on other things."""
        async with self.engine.begin() as conn:
            return await unit(ConnTx(conn))

    async def close(self) -> None:
        """Release the connections and the writer thread."""
        if self.sqlite is not None:
            await asyncio.to_thread(self.sqlite.close)
        if self.pg is not None:
            await self.pg.close()
        if self._pg_groups is not None:
            await self._pg_groups.close()
