"""The one-secret read's statements, built with Core and compiled once per dialect, run on the raw driver.

The hot path (GET one secret) pays for every layer between it and the database: SQLAlchemy's statement
cache look-up, result rows, the asyncio adaptation (a greenlet switch, and on SQLite a thread hop per
call). Here each statement is compiled once to the driver's SQL text with its bind and result
processors (the column types' own, so stored values are exactly what the Core path stores and reads),
and then runs straight on a DB-API sqlite3 connection or an asyncpg connection: one query finds the
token, its principal and the secret's current version; one insert appends the audit event.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Insert,
    LargeBinary,
    Select,
    String,
    Text,
    bindparam,
    func,
    insert,
    select,
    true,
    type_coerce,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ClauseElement

from broker.db.engine import HotDb
from broker.models import (
    audit_event_keys,
    audit_events,
    environments,
    principals,
    projects,
    secret_versions,
    secrets,
    tokens,
)

Processor = Callable[[Any], Any] | None

# (token id, accessor, principal id, scopes, bound cidrs, expires, max expires, num uses, revoked,
#  principal type, principal name, principal disabled,
#  project id, env id, secret id, sensitive, version, ciphertext, wrapped dek, kek id, created, deleted,
#  destroyed, binding): the secret columns are None when the environment or the secret does not exist.
LOOKUP_COLUMNS = 24


def _secret(project: Any, environment: Any, name: Any) -> Select[Any]:
    return (
        select(
            projects.c.id.label("project_id"),
            environments.c.id.label("env_id"),
            secrets.c.id.label("secret_id"),
            secrets.c.sensitive,
            secret_versions.c.version,
            secret_versions.c.ciphertext,
            secret_versions.c.wrapped_dek,
            secret_versions.c.kek_id,
            secret_versions.c.created_at,
            secret_versions.c.deleted_at,
            secret_versions.c.destroyed_at,
            secrets.c.binding,
        )
        .select_from(projects)
        .join(environments, environments.c.project_id == projects.c.id)
        .outerjoin(secrets, (secrets.c.environment_id == environments.c.id) & (secrets.c.name == name))
        .outerjoin(
            secret_versions,
            (secret_versions.c.secret_id == secrets.c.id)
            & (secret_versions.c.version == secrets.c.current_version),
        )
        .where(projects.c.slug == project, environments.c.slug == environment)
    )


_TOKEN_COLUMNS = (
    tokens.c.id,
    tokens.c.accessor,
    tokens.c.principal_id,
    # As text: the service parses each distinct scopes text once, not once per request.
    type_coerce(tokens.c.scopes, Text).label("scopes"),
    type_coerce(tokens.c.bound_cidrs, Text).label("bound_cidrs"),
    tokens.c.expires_at,
    tokens.c.max_expires_at,
    tokens.c.num_uses,
    tokens.c.revoked_at,
    principals.c.type,
    principals.c.name,
    principals.c.disabled_at,
)


def _lookup() -> ClauseElement:
    read = _secret(bindparam("project"), bindparam("environment"), bindparam("name")).subquery("s")
    return (
        select(*_TOKEN_COLUMNS, *read.c)
        .select_from(
            tokens.join(principals, principals.c.id == tokens.c.principal_id).outerjoin(read, true())
        )
        .where(tokens.c.token_hash == bindparam("token_hash"))
    )


def _lookup_many() -> ClauseElement:
    """PostgreSQL: the look-up for many requests at once, from parallel arrays; the first column is the
    request's 1-based position (requests whose token is unknown have no row)."""
    q = (
        func.unnest(
            bindparam("token_hashes", type_=ARRAY(LargeBinary)),
            bindparam("projects", type_=ARRAY(String)),
            bindparam("environments", type_=ARRAY(String)),
            bindparam("names", type_=ARRAY(String)),
        )
        .table_valued("token_hash", "project", "environment", "name", with_ordinality="i")
        .render_derived(name="q")
    )
    read = _secret(q.c.project, q.c.environment, q.c.name).lateral("s")
    return select(q.c.i, *_TOKEN_COLUMNS, *read.c).select_from(
        q.join(tokens, tokens.c.token_hash == q.c.token_hash)
        .join(principals, principals.c.id == tokens.c.principal_id)
        .outerjoin(read, true())
    )


def _head() -> ClauseElement:
    return (
        select(audit_events.c.seq, audit_events.c.hash)
        .where(audit_events.c.seq.is_not(None))
        .order_by(audit_events.c.seq.desc())
        .limit(1)
    )


# Every column of an event but its id; absent keys are NULL.
EVENT_COLUMNS = tuple(c.name for c in audit_events.c if c.name != "id")


def _append() -> Insert:
    return insert(audit_events).values({name: bindparam(name) for name in EVENT_COLUMNS})


# The one key a single read touches, bound from the event's own project, environment and secret_name:
# what audit.touched_keys derives for it (the value is read where the request names it). "" for none.
_KEY_COLUMNS = ("seq", "project", "environment", "name")


def _key_values() -> list[ColumnElement[Any]]:
    return [
        bindparam("seq", type_=audit_event_keys.c.seq.type),
        func.coalesce(bindparam("project", type_=String), ""),
        func.coalesce(bindparam("environment", type_=String), ""),
        bindparam("secret_name", type_=String),
    ]


def _append_key_sqlite() -> ClauseElement:
    """SQLite: the key row of the event just inserted on this connection (same transaction)."""
    return insert(audit_event_keys).from_select(
        ["event_id", *_KEY_COLUMNS], select(func.last_insert_rowid(), *_key_values())
    )


def _append_with_key_pg() -> ClauseElement:
    """PostgreSQL: the event and its key row in one statement (one round trip, one implicit transaction)."""
    event = _append().returning(audit_events.c.id).cte("new_event")
    return insert(audit_event_keys).from_select(
        ["event_id", *_KEY_COLUMNS], select(event.c.id, *_key_values())
    )


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
        columns: Sequence[ColumnElement[Any]] = getattr(stmt, "selected_columns", ())
        self.results: list[tuple[int, Callable[[Any], Any]]] = [
            (i, proc)
            for i, col in enumerate(columns)
            if (proc := col.type.dialect_impl(dialect).result_processor(dialect, None)) is not None
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


class Statements:
    """The hot path's statements for one dialect."""

    def __init__(self, dialect: Dialect) -> None:
        self.lookup = Prepared(_lookup(), dialect)
        self.lookup_many = Prepared(_lookup_many(), dialect) if dialect.name == "postgresql" else None
        self.head = Prepared(_head(), dialect)
        pg = dialect.name == "postgresql"
        self.append = Prepared(_append_with_key_pg() if pg else _append(), dialect)
        self.append_key = None if pg else Prepared(_append_key_sqlite(), dialect)


_BY_DIALECT: dict[tuple[str, str], Statements] = {}


def statements(dialect: Dialect) -> Statements:
    """The compiled statements for a dialect (compiled on first use; compiling is deterministic)."""
    key = (dialect.name, dialect.driver)
    found = _BY_DIALECT.get(key)
    if found is None:
        found = _BY_DIALECT[key] = Statements(dialect)
    return found


# ---- SQLite (DB-API, inside the single writer's transaction) ------------------------------------


def lookup_sqlite(conn: sqlite3.Connection, st: Statements, where: Mapping[str, Any]) -> list[Any] | None:
    """The token row (by `token_hash`) joined to the current version of the secret `name` in `project` /
    `environment` (see LOOKUP_COLUMNS), or None."""
    args = st.lookup.args(where)
    return st.lookup.row(conn.execute(st.lookup.sql, args).fetchone())


def head_sqlite(conn: sqlite3.Connection, st: Statements) -> tuple[int, str | None]:
    """(seq, hash) of the newest linked event, or (0, None)."""
    row = conn.execute(st.head.sql, st.head.args({})).fetchone()
    return (int(row[0]), row[1]) if row is not None else (0, None)


def append_sqlite(conn: sqlite3.Connection, st: Statements, event: Mapping[str, Any]) -> None:
    """Insert one single-read event (column values shaped by the audit service) and its key row."""
    assert st.append_key is not None
    conn.execute(st.append.sql, st.append.args(event))
    conn.execute(st.append_key.sql, st.append_key.args(event))


# ---- PostgreSQL (asyncpg, each statement its own transaction) ------------------------------------


async def lookup_pg(hot: HotDb, st: Statements, where: Mapping[str, Any]) -> list[Any] | None:
    """As lookup_sqlite, together with the look-ups of other requests in flight (one statement, one
    round trip for the group)."""
    prepared = st.lookup_many
    assert prepared is not None

    def arrays(keys: list[tuple[Any, ...]]) -> list[Any]:
        hashes, project, environment, name = (list(column) for column in zip(*keys, strict=True))
        return prepared.args(
            {"token_hashes": hashes, "projects": project, "environments": environment, "names": name}
        )

    key = (where["token_hash"], where["project"], where["environment"], where["name"])
    row = prepared.row(await hot.pg_fetch(prepared.sql, arrays).run(key))
    return row[1:] if row is not None else None


async def append_pg(hot: HotDb, st: Statements, event: Mapping[str, Any]) -> None:
    """Insert one unlinked single-read event and its key row with the next group of them; they have
    committed when this returns."""
    await hot.pg_insert(st.append.sql).run(st.append.args(event))
