"""Async engine set-up: SQLite pragmas and write locks, PostgreSQL pool."""

from __future__ import annotations

import asyncio
import re
import sqlite3
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

READ_ONLY = "strongroom_single_statement"
SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=FULL",
    "PRAGMA foreign_keys=ON",
    "PRAGMA busy_timeout=30000",
    # Each unit of work runs in a savepoint (SqliteWriter), and SQLite copies every page a savepoint
    # changes into a statement journal, a temporary file by default: in memory, a whole environment's
    # read (an event and 50 key rows) spends half as long inserting.
    "PRAGMA temp_store=MEMORY",
)


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
        for pragma in SQLITE_PRAGMAS:
            cursor.execute(pragma)
        cursor.close()

    @event.listens_for(sync_engine, "begin")
    def _begin(conn: Any) -> None:
        if conn.get_execution_options().get(READ_ONLY):
            # A single read-only statement (the token check) needs no transaction and no write lock.
            return
        # Every request writes an audit event, so every transaction is a writer: taking the write
        # lock up front avoids SQLITE_BUSY on a read-to-write upgrade under concurrency.
        conn.exec_driver_sql("BEGIN IMMEDIATE")


T = TypeVar("T")


class SqliteWriter:
    """One SQLite connection for units of work (broker/db/units.py), committed in groups.

    A unit is a function of a DB-API connection that runs inside a write transaction. Units submitted
    while a group is being written wait for the next group; a group is one BEGIN IMMEDIATE and one
    COMMIT (one WAL sync) for all of its units, instead of pooled connections queueing for the write
    lock with a thread hop per statement. The units run on the event loop: their statements take
    microseconds (the pages are cached, and the write lock is taken without waiting, or else in the
    thread), while the commit, which waits for the disk, runs in the writer's thread. Running the units
    in that thread instead would have them and the event loop take turns for the GIL (a 5 ms switch
    interval each time). A unit's result is returned only after its group has committed. Each unit runs
    in its own savepoint: a unit that raises has its statements rolled back and gets its exception, the
    others go on; if the commit fails, every unit of the group gets that exception (a unit must not
    catch database errors and carry on).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._pool: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        self._pending: list[tuple[Callable[[sqlite3.Connection], Any], asyncio.Future[Any]]] = []
        self._draining = False
        self._task: asyncio.Task[None] | None = None

    async def run(self, unit: Callable[[sqlite3.Connection], T]) -> T:
        """Run `unit` in the next group; return its result once the group has committed."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._pending.append((unit, future))
        if not self._draining:
            self._draining = True
            self._task = loop.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self._pending:
                group, self._pending = self._pending, []
                try:
                    results = await self._group([u for u, _ in group])
                except BaseException as exc:  # every unit of the group fails with it
                    for _, future in group:
                        if not future.done():
                            future.set_exception(exc)
                    if not isinstance(exc, Exception):
                        raise
                    continue
                for (_, future), (ok, result) in zip(group, results, strict=True):
                    if future.done():
                        continue
                    if ok:
                        future.set_result(result)
                    else:
                        future.set_exception(result)
        finally:
            self._draining = False

    async def _group(self, units: list[Callable[[sqlite3.Connection], Any]]) -> list[tuple[bool, Any]]:
        loop = asyncio.get_running_loop()
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="strongroom-sqlite")
        if self._conn is None:
            self._conn = await loop.run_in_executor(self._pool, self._connect)
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")  # busy_timeout is 0 here: never waits on the loop
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode != sqlite3.SQLITE_BUSY:
                raise
            # Another connection holds the write lock: wait for it in the thread.
            await loop.run_in_executor(self._pool, self._begin_waiting, conn)
        try:
            results = [self._one(conn, unit) for unit in units]
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        try:
            await loop.run_in_executor(self._pool, conn.execute, "COMMIT")
        except asyncio.CancelledError:
            raise  # the commit goes on in the thread: the connection is its until then
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return results

    @staticmethod
    def _one(conn: sqlite3.Connection, unit: Callable[[sqlite3.Connection], Any]) -> tuple[bool, Any]:
        """(True, result), or (False, exception) with the unit's statements rolled back."""
        conn.execute("SAVEPOINT unit")
        try:
            result = unit(conn)
        except Exception as exc:
            conn.execute("ROLLBACK TO unit")
            conn.execute("RELEASE unit")  # if the connection itself failed, these raise: the group fails
            return False, exc
        conn.execute("RELEASE unit")
        return True, result

    def _connect(self) -> sqlite3.Connection:
        # Used from the loop and from the writer's thread, never both at once (one group at a time).
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        for pragma in SQLITE_PRAGMAS:
            conn.execute(pragma)
        conn.execute("PRAGMA busy_timeout=0")
        return conn

    @staticmethod
    def _begin_waiting(conn: sqlite3.Connection) -> None:
        conn.execute("PRAGMA busy_timeout=30000")
        try:
            conn.execute("BEGIN IMMEDIATE")
        finally:
            conn.execute("PRAGMA busy_timeout=0")

    def close(self) -> None:
        """Close the connection and stop the thread (both come back on the next use)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)  # a commit in flight finishes first
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


class PgConnections:
    """A few asyncpg connections for units of work (a statement outside a transaction block commits by
    itself), opened on first use and reused; no pool reset round trip."""

    def __init__(self, engine: AsyncEngine, size: int) -> None:
        self._args, self._kwargs = engine.dialect.create_connect_args(engine.url)
        self._size = size
        self._slots = asyncio.Semaphore(size)
        self._idle: list[Any] = []

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Any]:
        """A connection for the duration of the block; one that failed is closed, not reused."""
        async with self._slots:
            if self._idle:
                conn = self._idle.pop()
            else:
                import asyncpg

                conn = await asyncpg.connect(*self._args, **self._kwargs)
            ok = False
            try:
                yield conn
                ok = True
            finally:
                if ok and not conn.is_closed():
                    self._idle.append(conn)
                else:
                    conn.terminate()

    async def close(self) -> None:
        """Close every idle connection (connections and the semaphore belong to the closing loop)."""
        idle, self._idle = self._idle, []
        self._slots = asyncio.Semaphore(self._size)
        for conn in idle:
            await conn.close()


_VALUES = re.compile(r"^(INSERT INTO [^()]+\([^()]+\)) VALUES \((.+)\)$", re.DOTALL)
_CAST_PLACEHOLDER = re.compile(r"\$(\d+)::([A-Z][A-Z ]*)")


def _unnested(sql: str) -> str | None:
    """For a one-row `INSERT INTO t (...) VALUES ($1::T1, ..., $n::Tn)`, the insert of every row of n
    arrays (`SELECT * FROM unnest($1::T1[], ...)`), else None."""
    match = _VALUES.match(sql)
    if match is None:
        return None
    head, row = match.groups()
    items = [item.strip() for item in row.split(",")]
    casts = [_CAST_PLACEHOLDER.fullmatch(item) for item in items]
    if not all(casts) or [int(c.group(1)) for c in casts if c] != list(range(1, len(items) + 1)):
        return None
    arrays = ", ".join(f"${c.group(1)}::{c.group(2)}[]" for c in casts if c)
    # Built from the statement SQLAlchemy compiled (names and types of our own columns), never from input.
    return f"{head} SELECT * FROM unnest({arrays})"  # noqa: S608


class PgGroupInsert:
    """One insert statement for many concurrent units: rows that arrive while up to `limit` groups are
    in flight wait and go together in the next group, one statement inserting every row (one round trip,
    one commit, one execution in the server instead of one per row). A caller's row has committed when
    `run` returns; if the group fails, every member gets the exception."""

    def __init__(self, connections: PgConnections, sql: str, *, limit: int = 2) -> None:
        self._connections = connections
        self._sql = sql
        # One statement shape whatever the group's size (a VALUES list per size would be prepared per size).
        self._unnested = _unnested(sql)
        self._limit = limit
        self._pending: list[tuple[list[Any], asyncio.Future[None]]] = []
        self._inflight = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self, args: list[Any]) -> None:
        """Insert one row with the next group; return once it has committed."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._pending.append((args, future))
        self._start(loop)
        await future

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        while self._pending and self._inflight < self._limit:
            group, self._pending = self._pending, []
            self._inflight += 1
            task = loop.create_task(self._one(group))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _one(self, group: list[tuple[list[Any], asyncio.Future[None]]]) -> None:
        try:
            rows = [args for args, _ in group]
            async with self._connections.connection() as conn:
                if self._unnested is None or len(rows) == 1:
                    await conn.executemany(self._sql, rows)
                else:
                    await conn.execute(self._unnested, *(list(column) for column in zip(*rows, strict=True)))
        except BaseException as exc:
            for _, future in group:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
        else:
            for _, future in group:
                if not future.done():
                    future.set_result(None)
        finally:
            self._inflight -= 1
            self._start(asyncio.get_running_loop())
