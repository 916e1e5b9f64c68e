"""Secret and secret-version rows: Core statements, prepared ones for units of work."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Integer, Select, bindparam, func, insert, literal, select, true, update
from sqlalchemy.ext.asyncio import AsyncConnection

from broker.db.base import DbRow
from broker.db.units import Statement, Tx
from broker.models import environments, principals, projects, secret_versions, secrets
from broker.repositories import audit, identities, ratelimit


def _secret_row() -> Select[Any]:
    return select(
        secrets.c.id,
        secrets.c.name,
        secrets.c.current_version,
        secrets.c.sensitive,
        secrets.c.created_at,
        secrets.c.updated_at,
        secrets.c.binding,
    )


@dataclass(frozen=True, slots=True)
class LockedSecret:
    """A secret row locked for a write."""

    id: int
    name: str
    current_version: int
    sensitive: bool
    created_at: datetime
    updated_at: datetime
    binding: bytes | None


ENV_IDS = Statement(
    lambda: (
        select(projects.c.id, environments.c.id)
        .join(environments, environments.c.project_id == projects.c.id)
        .where(projects.c.slug == bindparam("project"), environments.c.slug == bindparam("environment"))
    )
)


def _secret_at() -> Select[Any]:
    return (
        select(projects.c.id, environments.c.id, *_secret_row().selected_columns)
        .select_from(
            secrets.join(environments, environments.c.id == secrets.c.environment_id).join(
                projects, projects.c.id == environments.c.project_id
            )
        )
        .where(
            projects.c.slug == bindparam("project"),
            environments.c.slug == bindparam("environment"),
            secrets.c.name == bindparam("name"),
        )
    )


LOCK_SECRET_AT = Statement(lambda: _secret_at().with_for_update(of=secrets))
# The same row, unlocked: the optimistic write reads it outside any transaction.
SECRET_AT = Statement(_secret_at)


async def lock_secret_at(
    tx: Tx, project: str, environment: str, name: str, *, lock: bool = True
) -> tuple[int, int, LockedSecret] | None:
    """(project id, environment id, the secret row) by slugs and name in one statement, the row locked
    until the unit ends (PostgreSQL; SQLite's writer holds the one write lock): writers to one secret take
    turns here. `lock=False`: the same row unlocked (a write that then moves the version only from the
    one it read). None when the environment or the secret does not exist (the caller tells which)."""
    st = LOCK_SECRET_AT if lock else SECRET_AT
    row = await tx.one(st, {"project": project, "environment": environment, "name": name})
    return (int(row[0]), int(row[1]), LockedSecret(*row[2:])) if row is not None else None


async def env_ids(tx: Tx, project: str, environment: str) -> tuple[int, int] | None:
    """(project id, environment id) for the slugs, or None."""
    row = await tx.one(ENV_IDS, {"project": project, "environment": environment})
    return (int(row[0]), int(row[1])) if row is not None else None


async def read_current(conn: AsyncConnection, env_id: int, name: str) -> DbRow | None:
    """One query for a read: (secret id, sensitive, version, ciphertext, wrapped_dek, kek_id, created, deleted, destroyed)."""
    result = await conn.execute(
        select(
            secrets.c.id,
            secrets.c.sensitive,
            secret_versions.c.version,
            secret_versions.c.ciphertext,
            secret_versions.c.wrapped_dek,
            secret_versions.c.kek_id,
            secret_versions.c.created_at,
            secret_versions.c.deleted_at,
            secret_versions.c.destroyed_at,
        )
        .join(
            secret_versions,
            (secret_versions.c.secret_id == secrets.c.id)
            & (secret_versions.c.version == secrets.c.current_version),
        )
        .where(secrets.c.environment_id == env_id, secrets.c.name == name)
    )
    return result.first()


def _read_one() -> Select[Any]:
    wanted = func.coalesce(bindparam("version", type_=Integer), secrets.c.current_version)
    return (
        select(
            projects.c.id,
            environments.c.id,
            secrets.c.id,
            secrets.c.sensitive,
            secrets.c.current_version,
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
        .outerjoin(
            secrets, (secrets.c.environment_id == environments.c.id) & (secrets.c.name == bindparam("name"))
        )
        .outerjoin(
            secret_versions,
            (secret_versions.c.secret_id == secrets.c.id) & (secret_versions.c.version == wanted),
        )
        .where(projects.c.slug == bindparam("project"), environments.c.slug == bindparam("environment"))
    )


READ_ONE = Statement(_read_one)


@dataclass(frozen=True, slots=True)
class OneRead:
    """A secret's row and one of its versions, found by slugs and name (version columns None when the
    secret or that version does not exist; secret columns None when the secret does not)."""

    project_id: int
    env_id: int
    secret_id: int | None
    sensitive: bool | None
    current_version: int | None
    version: int | None
    ciphertext: bytes | None
    wrapped_dek: bytes | None
    kek_id: str | None
    created_at: datetime | None
    deleted_at: datetime | None
    destroyed_at: datetime | None
    binding: bytes | None


async def read_one(
    tx: Tx, *, project: str, environment: str, name: str, version: int | None
) -> OneRead | None:
    """The secret `name` and its version `version` (None: the current one) in one query; None when the
    environment does not exist."""
    row = await tx.one(
        READ_ONE, {"project": project, "environment": environment, "name": name, "version": version}
    )
    return OneRead(*row) if row is not None else None


def _read_with_token() -> Select[Any]:
    """The read's three look-ups in one statement (one round trip): when the caller's address is under
    its failure limit again (`repositories.ratelimit.locked_until`), the token row (`token_hash`), and
    the secret (`_read_one`); the token and secret columns are NULL when there is no such row."""
    one = select(literal(1).label("one")).subquery("one")
    token = identities.token_by_hash().subquery("t")
    read = _read_one().subquery("s")
    return select(ratelimit.locked_until().label("locked_until"), *token.c, *read.c).select_from(
        one.outerjoin(token, true()).outerjoin(read, true())
    )


READ_WITH_TOKEN = Statement(_read_with_token)


@dataclass(frozen=True, slots=True)
class ReadWithToken:
    """What READ_WITH_TOKEN found."""

    locked_until: float | None
    token: identities.TokenByHash | None
    read: OneRead | None


async def read_with_token(
    tx: Tx,
    lock_args: dict[str, Any],
    *,
    token_hash: bytes,
    project: str,
    environment: str,
    name: str,
    version: int | None,
) -> ReadWithToken:
    """The failure lock of the caller's address, the token and the secret's version, in one query."""
    row = await tx.one(
        READ_WITH_TOKEN,
        {
            **lock_args,
            "token_hash": token_hash,
            "project": project,
            "environment": environment,
            "name": name,
            "version": version,
        },
    )
    assert row is not None  # always one row: the outer joins hang off a constant
    width = len(identities.TOKEN_FIELDS)
    token, read = row[1 : 1 + width], row[1 + width :]
    return ReadWithToken(
        locked_until=float(row[0]) if row[0] is not None else None,
        token=identities.TokenByHash(*token) if token[0] is not None else None,
        read=OneRead(*read) if read[0] is not None else None,
    )


async def current_values(conn: AsyncConnection, env_ids: Sequence[int]) -> list[DbRow]:
    """Live current versions in the given environments:
    (env id, name, sensitive, version, ct, wrapped, kek, secret id, binding)."""
    result = await conn.execute(
        select(
            secrets.c.environment_id,
            secrets.c.name,
            secrets.c.sensitive,
            secret_versions.c.version,
            secret_versions.c.ciphertext,
            secret_versions.c.wrapped_dek,
            secret_versions.c.kek_id,
            secrets.c.id,
            secrets.c.binding,
        )
        .join(
            secret_versions,
            (secret_versions.c.secret_id == secrets.c.id)
            & (secret_versions.c.version == secrets.c.current_version),
        )
        .where(
            secrets.c.environment_id.in_(env_ids),
            secret_versions.c.deleted_at.is_(None),
            secret_versions.c.destroyed_at.is_(None),
        )
    )
    return list(result.all())


def _chain_rows_statement() -> Select[Any]:
    start = (
        select(
            environments.c.id,
            environments.c.slug,
            environments.c.parent_id,
            environments.c.project_id,
            literal(1).label("depth"),
        )
        .join(projects, projects.c.id == environments.c.project_id)
        .where(projects.c.slug == bindparam("project"), environments.c.slug == bindparam("environment"))
        .cte("chain", recursive=True)
    )
    up = environments.alias("up")
    chain = start.union_all(
        select(up.c.id, up.c.slug, up.c.parent_id, up.c.project_id, start.c.depth + 1).where(
            up.c.id == start.c.parent_id, start.c.depth < bindparam("depth")
        )
    )
    return (
        select(
            chain.c.project_id,
            chain.c.id,
            chain.c.slug,
            chain.c.parent_id,
            secrets.c.name,
            secrets.c.sensitive,
            secret_versions.c.version,
            secret_versions.c.ciphertext,
            secret_versions.c.wrapped_dek,
            secret_versions.c.kek_id,
            secrets.c.id,
            secrets.c.binding,
            secret_versions.c.deleted_at.is_not(None),
            secret_versions.c.destroyed_at.is_not(None),
        )
        .select_from(chain)
        .outerjoin(secrets, secrets.c.environment_id == chain.c.id)
        .outerjoin(
            secret_versions,
            (secret_versions.c.secret_id == secrets.c.id)
            & (secret_versions.c.version == secrets.c.current_version),
        )
    )


CHAIN_ROWS = Statement(_chain_rows_statement)


async def chain_rows(tx: Tx, project: str, environment: str, *, depth: int) -> list[list[Any]]:
    """In one statement, the environment and up to `depth` - 1 parents, each with its secrets' current
    versions: (project id, env id, slug, parent id, then name, sensitive, version, ct, wrapped, kek,
    secret id, binding, deleted, destroyed, all None for an environment without secrets). No rows: no
    such environment. A parent cycle repeats environments up to `depth`; the caller's walk stops it."""
    return await tx.all(CHAIN_ROWS, {"project": project, "environment": environment, "depth": depth})


ADD_SECRET = Statement(
    lambda: (
        insert(secrets)
        .values(
            environment_id=bindparam("env_id"),
            name=bindparam("name"),
            current_version=1,
            sensitive=bindparam("sensitive"),
            created_at=bindparam("now"),
            updated_at=bindparam("now"),
        )
        .returning(secrets.c.id)
    )
)
BUMP_VERSION = Statement(
    lambda: (
        update(secrets)
        .where(secrets.c.id == bindparam("secret_id"), secrets.c.current_version == bindparam("expected"))
        .values(
            current_version=bindparam("next"), sensitive=bindparam("sensitive"), updated_at=bindparam("now")
        )
    )
)
SET_BINDING = Statement(
    lambda: update(secrets).where(secrets.c.id == bindparam("secret_id")).values(binding=bindparam("binding"))
)
ADD_VERSION = Statement(
    lambda: insert(secret_versions).values(
        secret_id=bindparam("secret_id"),
        version=bindparam("version"),
        ciphertext=bindparam("ciphertext"),
        wrapped_dek=bindparam("wrapped_dek"),
        kek_id=bindparam("kek_id"),
        author_id=bindparam("author_id"),
        created_at=bindparam("now"),
    )
)


async def add_secret(tx: Tx, *, env_id: int, name: str, sensitive: bool, now: datetime) -> int:
    """Insert a secret at version 1 and return its id."""
    row = await tx.one(ADD_SECRET, {"env_id": env_id, "name": name, "sensitive": sensitive, "now": now})
    assert row is not None
    return int(row[0])


async def bump_version(tx: Tx, secret_id: int, *, expected: int, sensitive: bool, now: datetime) -> bool:
    """Advance current_version from `expected` by one; False if someone else got there first."""
    values = {"secret_id": secret_id, "expected": expected, "next": expected + 1, "sensitive": sensitive}
    return await tx.execute(BUMP_VERSION, {**values, "now": now}) == 1


def _advance(*, never_wait: bool = False) -> Any:
    moving = secrets.c.id == bindparam("secret_id")
    if never_wait:
        # The row taken with SKIP LOCKED first: a row another transaction holds is not waited for (the
        # move then writes nothing, as for a stale `expected`). A statement outside a transaction block
        # that waited on a lock would still commit after its client had gone (a request cut off at the
        # graceful timeout, answered 500), since nothing rolls it back; one that never waits runs briefly.
        moving = secrets.c.id == (
            select(secrets.c.id)
            .where(secrets.c.id == bindparam("secret_id"))
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
    return (
        update(secrets)
        .where(moving, secrets.c.current_version == bindparam("expected"))
        .values(
            current_version=bindparam("version"),
            sensitive=bindparam("sensitive"),
            updated_at=bindparam("now"),
            binding=bindparam("binding"),
        )
    )


ADVANCE = Statement(_advance)


def _add_after_advance(*, never_wait: bool = False) -> Any:
    # PostgreSQL runs data-modifying CTEs: the bump and the insert go in one round trip, the insert
    # taking its row only from a bump that happened (no row inserted when `expected` is stale).
    bumped = _advance(never_wait=never_wait).returning(secrets.c.id).cte("bumped")
    v = secret_versions.c
    return insert(secret_versions).from_select(
        ["secret_id", "version", "ciphertext", "wrapped_dek", "kek_id", "author_id", "created_at"],
        select(
            bumped.c.id,
            bindparam("version", type_=v.version.type),
            bindparam("ciphertext", type_=v.ciphertext.type),
            bindparam("wrapped_dek", type_=v.wrapped_dek.type),
            bindparam("kek_id", type_=v.kek_id.type),
            bindparam("author_id", type_=v.author_id.type),
            bindparam("now", type_=v.created_at.type),
        ),
    )


ADVANCE_AND_ADD = Statement(_add_after_advance)


def _advance_add_and_record(always: int) -> Any:
    # The version's insert becomes a CTE too, and the events' insert hangs off it: the request's event
    # is inserted only with the version, in the same single (hence atomic) statement.
    added = _add_after_advance(never_wait=True).returning(secret_versions.c.id).cte("added")
    return audit.unlinked_after(added, always=always)


# The common case: the request's event alone (more when the audit service noted a clock anomaly first).
ADVANCE_ADD_AND_RECORD = Statement(lambda: _advance_add_and_record(0))
_WITH_EARLIER_EVENTS: dict[int, Statement] = {0: ADVANCE_ADD_AND_RECORD}


def _advance_add_and_record_with(always: int) -> Statement:
    found = _WITH_EARLIER_EVENTS.get(always)
    if found is None:
        found = _WITH_EARLIER_EVENTS[always] = Statement(lambda: _advance_add_and_record(always))
    return found


async def add_version(
    tx: Tx,
    *,
    secret_id: int,
    version: int,
    ciphertext: bytes,
    wrapped_dek: bytes,
    kek_id: str,
    author_id: int | None,
    now: datetime,
    binding: bytes,
    advance: tuple[int, bool] | None = None,
    events: Sequence[Mapping[str, Any]] = (),
) -> bool:
    """Insert one sealed version, the secret's new current one, with the secret's new binding. With
    `advance` (the current version it replaces, the secret's sensitivity), also move current_version from
    that to `version`: False, and nothing written, if the secret is no longer at it. With `events`
    (PostgreSQL, with `advance`: the audit events the unit held back, the request's own last), all of it
    is one statement: the events before the last are inserted whatever happens, the last with the version."""
    values = {
        "secret_id": secret_id,
        "version": version,
        "ciphertext": ciphertext,
        "wrapped_dek": wrapped_dek,
        "kek_id": kek_id,
        "author_id": author_id,
        "now": now,
        "binding": binding,
    }
    if advance is None:
        assert not events, "events go in one statement only with a version move"
        await tx.execute(SET_BINDING, values)
    else:
        moved = {**values, "expected": advance[0], "sensitive": advance[1]}
        if events:
            st = _advance_add_and_record_with(len(events) - 1)
            return await tx.execute(st, {**moved, **audit.bound_events(events)}) == len(events)
        if tx.dialect.name == "postgresql":
            return await tx.execute(ADVANCE_AND_ADD, moved) == 1
        if await tx.execute(ADVANCE, moved) != 1:
            return False
    await tx.execute(ADD_VERSION, values)
    return True


async def unbound_secrets(conn: AsyncConnection, *, after_id: int, limit: int) -> list[DbRow]:
    """Secrets without a binding (rows from before revision 0004), by id:
    (secret id, project id, project slug, env id, env slug, name, current_version)."""
    result = await conn.execute(
        select(
            secrets.c.id,
            projects.c.id,
            projects.c.slug,
            environments.c.id,
            environments.c.slug,
            secrets.c.name,
            secrets.c.current_version,
        )
        .join(environments, environments.c.id == secrets.c.environment_id)
        .join(projects, projects.c.id == environments.c.project_id)
        .where(secrets.c.binding.is_(None), secrets.c.id > after_id)
        .order_by(secrets.c.id)
        .limit(limit)
    )
    return list(result.all())


async def set_binding(conn: AsyncConnection, secret_id: int, *, version: int, binding: bytes) -> bool:
    """Bind an unbound secret whose current version is still `version`; False if it changed meanwhile."""
    result = await conn.execute(
        update(secrets)
        .where(secrets.c.id == secret_id, secrets.c.current_version == version, secrets.c.binding.is_(None))
        .values(binding=binding)
    )
    return result.rowcount == 1


async def _sealed_batch(
    conn: AsyncConnection, which: ColumnElement[bool], *, after_id: int, limit: int
) -> list[DbRow]:
    """Rows (version row id, project id, env id, name, version, ciphertext, wrapped_dek, kek_id), id order."""
    result = await conn.execute(
        select(
            secret_versions.c.id,
            environments.c.project_id,
            environments.c.id,
            secrets.c.name,
            secret_versions.c.version,
            secret_versions.c.ciphertext,
            secret_versions.c.wrapped_dek,
            secret_versions.c.kek_id,
        )
        .join(secrets, secrets.c.id == secret_versions.c.secret_id)
        .join(environments, environments.c.id == secrets.c.environment_id)
        .where(secret_versions.c.id > after_id, which)
        .order_by(secret_versions.c.id)
        .limit(limit)
    )
    return list(result.all())


async def versions_not_under(conn: AsyncConnection, kek_id: str, *, after_id: int, limit: int) -> list[DbRow]:
    """A batch of versions wrapped by a key other than `kek_id`, for rewrap."""
    which = secret_versions.c.kek_id.is_not(None) & (secret_versions.c.kek_id != kek_id)
    return await _sealed_batch(conn, which, after_id=after_id, limit=limit)


async def rewrap_row(
    conn: AsyncConnection, row_id: int, *, old_kek: str, wrapped_dek: bytes, kek_id: str
) -> bool:
    """Replace one row's wrapped key, only if it is still under the old key (idempotent, race-safe)."""
    result = await conn.execute(
        update(secret_versions)
        .where(secret_versions.c.id == row_id, secret_versions.c.kek_id == old_kek)
        .values(wrapped_dek=wrapped_dek, kek_id=kek_id)
    )
    return result.rowcount == 1


async def count_under(conn: AsyncConnection, kek_id: str) -> int:
    """How many versions are still wrapped by a key."""
    result = await conn.execute(
        select(func.count()).select_from(secret_versions).where(secret_versions.c.kek_id == kek_id)
    )
    return int(result.scalar_one())


async def versions_under(conn: AsyncConnection, kek_id: str, *, after_id: int, limit: int) -> list[DbRow]:
    """A batch of versions wrapped by `kek_id` (rows as versions_not_under)."""
    return await _sealed_batch(conn, secret_versions.c.kek_id == kek_id, after_id=after_id, limit=limit)


# The database store's other units of work: delete, undelete, destroy, history, list, and a generate's
# look-up, each one unit with its audit event.

FIND_SECRET = Statement(
    lambda: _secret_row().where(
        secrets.c.environment_id == bindparam("env_id"), secrets.c.name == bindparam("name")
    )
)


async def find_secret(tx: Tx, env_id: int, name: str) -> LockedSecret | None:
    """The secret row (not locked: for a read), or None."""
    row = await tx.one(FIND_SECRET, {"env_id": env_id, "name": name})
    return LockedSecret(*row) if row is not None else None


def _one_version() -> ColumnElement[bool]:
    return (secret_versions.c.secret_id == bindparam("secret_id")) & (
        secret_versions.c.version == bindparam("version")
    )


VERSION_STATE = Statement(
    lambda: select(secret_versions.c.deleted_at, secret_versions.c.destroyed_at).where(_one_version())
)
SET_DELETED = Statement(
    lambda: update(secret_versions).where(_one_version()).values(deleted_at=bindparam("when"))
)
DESTROY = Statement(
    lambda: (
        update(secret_versions)
        .where(_one_version())
        .values(ciphertext=None, wrapped_dek=None, kek_id=None, destroyed_at=bindparam("now"))
    )
)


@dataclass(frozen=True, slots=True)
class VersionState:
    """Whether one version is soft-deleted or destroyed (each None when it is not)."""

    deleted_at: datetime | None
    destroyed_at: datetime | None


async def version_state(tx: Tx, secret_id: int, version: int) -> VersionState | None:
    """One version's deleted and destroyed times, or None if there is no such version."""
    row = await tx.one(VERSION_STATE, {"secret_id": secret_id, "version": version})
    return VersionState(*row) if row is not None else None


async def set_deleted(tx: Tx, secret_id: int, version: int, when: datetime | None) -> None:
    """Soft-delete (or undelete with None) one version."""
    await tx.execute(SET_DELETED, {"secret_id": secret_id, "version": version, "when": when})


async def destroy(tx: Tx, secret_id: int, version: int, now: datetime) -> None:
    """Erase a version's ciphertext and wrapped key for good."""
    await tx.execute(DESTROY, {"secret_id": secret_id, "version": version, "now": now})


HISTORY = Statement(
    lambda: (
        select(
            secret_versions.c.version,
            secret_versions.c.created_at,
            secret_versions.c.deleted_at,
            secret_versions.c.destroyed_at,
            principals.c.name,
        )
        .outerjoin(principals, principals.c.id == secret_versions.c.author_id)
        .where(secret_versions.c.secret_id == bindparam("secret_id"))
        .order_by(secret_versions.c.version.desc())
    )
)


async def history(tx: Tx, secret_id: int) -> list[list[Any]]:
    """Versions, newest first: (version, created_at, deleted_at, destroyed_at, author name)."""
    return await tx.all(HISTORY, {"secret_id": secret_id})


@dataclass(frozen=True, slots=True)
class Listed:
    """One secret of an environment's list, with its current version's state."""

    name: str
    current_version: int
    sensitive: bool
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None
    destroyed_at: datetime | None


LIST_SECRETS = Statement(
    lambda: (
        select(
            secrets.c.name,
            secrets.c.current_version,
            secrets.c.sensitive,
            secrets.c.created_at,
            secrets.c.updated_at,
            secret_versions.c.deleted_at,
            secret_versions.c.destroyed_at,
        )
        .join(
            secret_versions,
            (secret_versions.c.secret_id == secrets.c.id)
            & (secret_versions.c.version == secrets.c.current_version),
        )
        .where(secrets.c.environment_id == bindparam("env_id"))
        .order_by(secrets.c.name)
    )
)


async def list_secrets(tx: Tx, env_id: int) -> list[Listed]:
    """Names and metadata of an environment's secrets with their current version's state."""
    return [Listed(*row) for row in await tx.all(LIST_SECRETS, {"env_id": env_id})]
