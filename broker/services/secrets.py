"""Secrets: write with check-and-set, read (audited before release), resolve with inheritance, history."""

from __future__ import annotations

import asyncio
import base64
import math
import secrets
import string
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncConnection

from broker.crypto import binding
from broker.crypto.envelope import secret_aad
from broker.crypto.keyring import Sealed
from broker.db.units import IntegrityViolation, MustWait, Tx
from broker.domain.inheritance import Seen, StoredRow
from broker.domain.names import check_name, check_slug, check_value
from broker.domain.request import Actor, RequestContext
from broker.domain.scopes import Action
from broker.domain.values import SecretValue
from broker.errors import BrokerError, Conflict, Invalid, KeyUnavailable, NotFound
from broker.repositories import projects as project_repo
from broker.repositories import secrets as repo
from broker.services import audit, visible
from broker.services.auth import Found, authenticate_in, bearer_digest, check_header, require
from broker.services.runtime import Runtime

if TYPE_CHECKING:
    from broker.backends.base import Origin


@dataclass(frozen=True)
class SecretMeta:
    """A secret's metadata, never its value."""

    name: str
    version: int
    sensitive: bool
    deleted: bool
    created_at: datetime
    updated_at: datetime
    origin: Origin | None = None  # None: the database


@dataclass(frozen=True)
class SecretRead:
    """One value read, with where it came from."""

    name: str
    value: SecretValue
    version: int
    sensitive: bool
    environment: str
    created_at: datetime
    origin: Origin | None = None  # None: the database


@dataclass(frozen=True)
class ResolvedValue:
    """A value in a resolved environment, saying which environment it came from."""

    value: SecretValue
    version: int
    environment: str
    sensitive: bool
    origin: Origin | None = None  # None: the database


@dataclass(frozen=True)
class VersionInfo:
    """One entry of a secret's history."""

    version: int
    created_at: datetime
    author: str | None
    deleted: bool
    destroyed: bool
    upstream_version: str | None = None


def _where(project: str, environment: str, name: str | None = None) -> str:
    base = f"projects/{project}/environments/{environment}"
    return f"{base}/secrets/{name}" if name else base


def _check(ctx: RequestContext, action: str, project: str, environment: str, name: str | None = None) -> None:
    ctx.about(
        action, project=project[:64], environment=environment[:64], secret_name=name[:256] if name else None
    )
    check_slug(project, field="project")
    check_slug(environment, field="environment")
    if name is not None:
        check_name(name, field="name")


def _valid(project: str, environment: str, name: str) -> bool:
    """Whether the names are well-formed (a malformed one is never sent to the database: PostgreSQL
    text cannot even hold a NUL); the request is refused for it once it has authenticated."""
    try:
        check_slug(project, field="project")
        check_slug(environment, field="environment")
        check_name(name, field="name")
    except Invalid:
        return False
    return True


async def _env(conn: AsyncConnection, project: str, environment: str) -> tuple[int, int, int | None]:
    row = await project_repo.get_environment(conn, project, environment)
    if row is None:
        raise NotFound(f"{_where(project, environment)}: no such environment")
    return row[0], row[1], row[2]


async def _open(
    rt: Runtime, *, project_id: int, env_id: int, name: str, version: int, ct: bytes, wrapped: bytes, kek: str
) -> str:
    aad = secret_aad(project_id=project_id, environment_id=env_id, name=name, version=version)
    return await _open_sealed(rt, Sealed(ciphertext=ct, wrapped_dek=wrapped, kek_id=kek), aad)


async def _open_sealed(rt: Runtime, sealed: Sealed, aad: bytes) -> str:
    if sealed.kek_id not in rt.keys.remote:
        return _open_local(rt, sealed, aad)
    try:
        return await _unseal(rt, sealed, aad)
    except KeyUnavailable:
        # A key this process lacks: perhaps a rotation it has not picked up yet.
        if not rt.refresh_keys():
            raise
        return await _unseal(rt, sealed, aad)


async def _unseal(rt: Runtime, sealed: Sealed, aad: bytes) -> str:
    # AWS KMS / Vault transit: a blocking SDK call, so off the event loop (ARCHITECTURE rule 7).
    data: bytes = await asyncio.to_thread(rt.keys.keyring.open, sealed, aad)
    return data.decode("utf-8")


def _open_local(rt: Runtime, sealed: Sealed, aad: bytes) -> str:
    """Decrypt with a key held in this process (no waiting: usable inside a unit of work)."""
    try:
        return rt.keys.keyring.open(sealed, aad).decode("utf-8")
    except KeyUnavailable:
        # A key this process lacks: perhaps a rotation it has not picked up yet.
        if not rt.refresh_keys():
            raise
        if sealed.kek_id in rt.keys.remote:
            raise  # a local key became a remote one: never wait inside a unit
        return rt.keys.keyring.open(sealed, aad).decode("utf-8")


def served_as(
    rt: Runtime,
    stored: bytes | None,
    *,
    project_id: int,
    project: str,
    env_id: int,
    environment: str,
    secret_id: int,
    name: str,
    current_version: int,
) -> None:
    """IntegrityError unless the secret row is bound to this project, environment, name and current
    version (a database edit of a slug, a name or `current_version` does not match its binding)."""
    binding.check(
        rt.keys.binding_key,
        stored,
        project_id=project_id,
        project=project,
        environment_id=env_id,
        environment=environment,
        secret_id=secret_id,
        name=name,
        version=current_version,
    )


def bind(
    rt: Runtime,
    *,
    project_id: int,
    project: str,
    env_id: int,
    environment: str,
    secret_id: int,
    name: str,
    version: int,
) -> bytes:
    """The binding a write stores with the secret's new current version (see served_as)."""
    return binding.compute(
        rt.keys.binding_key,
        project_id=project_id,
        project=project,
        environment_id=env_id,
        environment=environment,
        secret_id=secret_id,
        name=name,
        version=version,
    )


def must_wait_to_seal(rt: Runtime, tx: Tx) -> bool:
    """Whether sealing in `tx` would wait on a remote key service (a unit then raises MustWait first)."""
    return rt.keys.keyring.current_id in rt.keys.remote and not tx.can_wait


async def _seal(rt: Runtime, data: bytes, aad: bytes) -> Sealed:
    keyring = rt.keys.keyring
    if keyring.current_id in rt.keys.remote:
        return await asyncio.to_thread(keyring.seal, data, aad)
    return keyring.seal(data, aad)


async def store_version(
    tx: Tx,
    rt: Runtime,
    *,
    project_id: int,
    project: str,
    env_id: int,
    environment: str,
    secret_id: int,
    name: str,
    version: int,
    data: bytes,
    author_id: int,
    now: datetime,
) -> None:
    """Seal `data` as version `version` of a secret and make it current, bound to what it is served as."""
    sealed = await _seal(
        rt, data, secret_aad(project_id=project_id, environment_id=env_id, name=name, version=version)
    )
    await repo.add_version(
        tx,
        secret_id=secret_id,
        version=version,
        ciphertext=sealed.ciphertext,
        wrapped_dek=sealed.wrapped_dek,
        kek_id=sealed.kek_id,
        author_id=author_id,
        now=now,
        binding=bind(
            rt,
            project_id=project_id,
            project=project,
            env_id=env_id,
            environment=environment,
            secret_id=secret_id,
            name=name,
            version=version,
        ),
    )


async def list_secrets(
    rt: Runtime, ctx: RequestContext, actor: Actor, *, project: str, environment: str, include_deleted: bool
) -> list[SecretMeta]:
    """Names and metadata of an environment's own secrets."""
    _check(ctx, "secret.list", project, environment)
    require(actor, Action.READ, project, environment)
    if rt.backends is not None and project in rt.backends.projects:
        from broker.services import proxied

        return await proxied.list_secrets(
            rt, ctx, project=project, environment=environment, include_deleted=include_deleted
        )
    async with rt.engine.begin() as conn:
        _, env_id, _ = await _env(conn, project, environment)
        rows = await repo.list_secrets(conn, env_id)
        await audit.record(conn, rt, ctx)
    out = []
    for r in rows:
        deleted = r.deleted_at is not None or r.destroyed_at is not None
        if deleted and not include_deleted:
            continue
        out.append(SecretMeta(r.name, r.current_version, r.sensitive, deleted, r.created_at, r.updated_at))
    return out


@dataclass(frozen=True)
class _Upstream:
    """The read is authorised and goes to an external backend (outside the unit: it waits on the network)."""

    route: Any


async def read_secret(
    rt: Runtime,
    ctx: RequestContext,
    *,
    authorization: str | None,
    project: str,
    environment: str,
    name: str,
    version: int | None,
    pin: str | None = None,
    reveal: bool = False,
) -> SecretRead:
    """Authenticate the bearer token and read one value; its audit event commits before it is returned.

    One unit of work: the secret row, the token look-up and decision, the binding check, decryption and
    the event. `pin` names an upstream version (a Vault version, an AWS staging label or version id).
    `reveal`: the value is for display, so the event's action is `secret.reveal`.
    """
    check_header(authorization)

    async def unit(tx: Tx) -> SecretRead | _Upstream | BrokerError:
        return await _read_in(
            tx,
            rt,
            ctx,
            authorization=authorization,
            project=project,
            environment=environment,
            name=name,
            version=version,
            pin=pin,
            reveal=reveal,
        )

    # Each statement may commit by itself: the read changes nothing but the token's use count, the
    # failure counter and the event, each one statement.
    got = await rt.units.run(unit, atomic=False)
    if isinstance(got, BrokerError):
        raise got
    if isinstance(got, _Upstream):
        from broker.services import proxied

        return await proxied.read_secret(
            rt, ctx, got.route, project=project, environment=environment, name=name, version=version, pin=pin
        )
    return got


async def _read_in(
    tx: Tx,
    rt: Runtime,
    ctx: RequestContext,
    *,
    authorization: str | None,
    project: str,
    environment: str,
    name: str,
    version: int | None,
    pin: str | None,
    reveal: bool,
) -> SecretRead | _Upstream | BrokerError:
    """`read_secret`'s unit: the error to raise is returned, so what the unit wrote (a spent use, a
    counted failure) commits all the same."""
    if audit.must_wait(rt, tx):
        raise MustWait()
    # The look-ups first, in one statement: a unit that must wait (a remote key) must say so before it
    # writes anything (a spent use, a counted failure).
    row, found = None, None
    digest = bearer_digest(rt, authorization)
    valid = _valid(project, environment, name)
    if valid and (version is None or version >= 1):
        if digest is not None:
            got = await repo.read_with_token(
                tx,
                rt.limiter.lock_args(f"addr:{ctx.source_addr}"),
                token_hash=digest,
                project=project,
                environment=environment,
                name=name,
                version=version,
            )
            row, found = got.read, Found(got.locked_until, got.token, digest)
        else:
            row = await repo.read_one(
                tx, project=project, environment=environment, name=name, version=version
            )
    if row is not None and row.kek_id in rt.keys.remote and not tx.can_wait:
        raise MustWait()
    actor = await authenticate_in(tx, rt, ctx, authorization, found=found)
    if isinstance(actor, BrokerError):
        return actor
    try:
        action = "secret.reveal" if reveal else "secret.read"
        if valid:  # checked above: only name what the request is about
            ctx.about(action, project=project, environment=environment, secret_name=name)
        else:
            _check(ctx, action, project, environment, name)  # raises, naming the field
        require(actor, Action.READ, project, environment, key=name)
        if rt.backends is not None and (route := rt.backends.route(project, environment, name)) is not None:
            return _Upstream(route)
        if pin is not None:
            raise Invalid(
                "upstream_version: only for secrets kept in Vault or AWS; use version",
                field="upstream_version",
            )
        if version is not None and version < 1:
            raise Invalid("version: must be a positive integer", field="version")
        return await _served(
            tx, rt, ctx, row, project=project, environment=environment, name=name, version=version
        )
    except BrokerError as exc:
        return exc


async def _served(
    tx: Tx,
    rt: Runtime,
    ctx: RequestContext,
    row: repo.OneRead | None,
    *,
    project: str,
    environment: str,
    name: str,
    version: int | None,
) -> SecretRead:
    if row is None:
        raise NotFound(f"{_where(project, environment)}: no such environment")
    if row.secret_id is None or row.current_version is None or row.version is None:
        missing = "no such secret" if version is None else f"no version {version}"
        raise NotFound(f"{_where(project, environment, name)}: {missing}")
    served_as(
        rt,
        row.binding,
        project_id=row.project_id,
        project=project,
        env_id=row.env_id,
        environment=environment,
        secret_id=row.secret_id,
        name=name,
        current_version=row.current_version,
    )
    ver, ct, wrapped, kek = row.version, row.ciphertext, row.wrapped_dek, row.kek_id
    ctx.version = ver
    if row.destroyed_at is not None or ct is None or wrapped is None or kek is None:
        raise NotFound(f"{_where(project, environment, name)}: version {ver} was destroyed")
    if row.deleted_at is not None:
        raise NotFound(
            f"{_where(project, environment, name)}: version {ver} is deleted (undelete it to read)"
        )
    sealed = Sealed(ciphertext=ct, wrapped_dek=wrapped, kek_id=kek)
    aad = secret_aad(project_id=row.project_id, environment_id=row.env_id, name=name, version=ver)
    # Only a unit that may wait gets here with a remote key (see _read_in).
    text = await _open_sealed(rt, sealed, aad) if kek in rt.keys.remote else _open_local(rt, sealed, aad)
    audit.saw_value(rt, ctx, environment=environment, name=name, version=ver, value=text)
    await audit.record_in(tx, rt, ctx)
    assert row.created_at is not None
    return SecretRead(name, SecretValue(text), ver, bool(row.sensitive), environment, row.created_at)


async def write_secret(
    rt: Runtime,
    ctx: RequestContext,
    actor: Actor,
    *,
    project: str,
    environment: str,
    name: str,
    value: str,
    sensitive: bool,
    cas: int | None,
    action: str = "secret.write",
) -> SecretMeta:
    """Store a new version; with `cas`, only if the current version is still `cas` (0: must not exist)."""
    _check(ctx, action, project, environment, name)
    data = check_value(value, field="value")
    if cas is not None and cas < 0:
        raise Invalid("cas: must be 0 (create only) or the current version", field="cas")
    require(actor, Action.WRITE, project, environment, key=name)
    if rt.backends is not None and (route := rt.backends.route(project, environment, name)) is not None:
        from broker.services import proxied

        return await proxied.write_secret(
            rt, ctx, route, project=project, environment=environment, name=name, value=value, cas=cas
        )
    # A blind write (no `cas`) must not fail because another writer got there first: the row lock in the
    # unit orders writers to an existing secret (the SQLite writer runs one unit at a time), and a blind
    # create that loses the race to insert the row (a unique violation) runs again and then finds the
    # row. A `cas` write gets 409 when stale.

    async def unit(tx: Tx) -> SecretMeta:
        return await _write_version(
            tx,
            rt,
            ctx,
            actor,
            project=project,
            environment=environment,
            name=name,
            value=value,
            data=data,
            sensitive=sensitive,
            cas=cas,
        )

    for attempt in range(1 if cas is not None else 3):
        try:
            return await rt.units.run(unit)
        except IntegrityViolation:
            if cas is not None or attempt == 2:
                raise Conflict(
                    f"{_where(project, environment, name)}: changed concurrently; read it and retry"
                ) from None
    raise AssertionError("unreachable")


async def _write_version(
    tx: Tx,
    rt: Runtime,
    ctx: RequestContext,
    actor: Actor,
    *,
    project: str,
    environment: str,
    name: str,
    value: str,
    data: bytes,
    sensitive: bool,
    cas: int | None,
) -> SecretMeta:
    """`write_secret`'s unit: the new version and its event commit together."""
    if audit.must_wait(rt, tx) or must_wait_to_seal(rt, tx):
        raise MustWait()
    now = rt.clock()
    ids = await repo.env_ids(tx, project, environment)
    if ids is None:
        raise NotFound(f"{_where(project, environment)}: no such environment")
    project_id, env_id = ids
    sec = await repo.lock_secret(tx, env_id, name)
    if sec is None:
        if cas not in (None, 0):
            raise Conflict(
                f"{_where(project, environment, name)}: cas {cas} is stale; the secret does not exist"
            )
        secret_id = await repo.add_secret(tx, env_id=env_id, name=name, sensitive=sensitive, now=now)
        version, created_at = 1, now
    else:
        served_as(
            rt,
            sec.binding,
            project_id=project_id,
            project=project,
            env_id=env_id,
            environment=environment,
            secret_id=sec.id,
            name=name,
            current_version=sec.current_version,
        )
        if cas is not None and cas != sec.current_version:
            raise Conflict(
                f"{_where(project, environment, name)}: cas {cas} is stale; current version is {sec.current_version}"
            )
        if not await repo.bump_version(
            tx, sec.id, expected=sec.current_version, sensitive=sensitive, now=now
        ):
            raise Conflict(f"{_where(project, environment, name)}: changed concurrently; read it and retry")
        secret_id, version, created_at = sec.id, sec.current_version + 1, sec.created_at
    await store_version(
        tx,
        rt,
        project_id=project_id,
        project=project,
        env_id=env_id,
        environment=environment,
        secret_id=secret_id,
        name=name,
        version=version,
        data=data,
        author_id=actor.principal_id,
        now=now,
    )
    ctx.version = version
    audit.saw_value(rt, ctx, environment=environment, name=name, version=version, value=value)
    await audit.record_in(tx, rt, ctx)
    return SecretMeta(name, version, sensitive, False, created_at, now)


async def _require_secret(conn: AsyncConnection, env_id: int, where: str, name: str) -> repo.SecretRow:
    sec = await repo.get_secret(conn, env_id, name)
    if sec is None:
        raise NotFound(f"{where}: no such secret")
    return sec


async def delete_secret(
    rt: Runtime, ctx: RequestContext, actor: Actor, *, project: str, environment: str, name: str
) -> None:
    """Soft-delete the current version: hidden from lists and resolution until undeleted."""
    _check(ctx, "secret.delete", project, environment, name)
    require(actor, Action.WRITE, project, environment, key=name)
    if rt.backends is not None and (route := rt.backends.route(project, environment, name)) is not None:
        from broker.services import proxied

        return await proxied.delete_secret(
            rt, ctx, route, project=project, environment=environment, name=name
        )
    where = _where(project, environment, name)
    async with rt.engine.begin() as conn:
        _, env_id, _ = await _env(conn, project, environment)
        sec = await _require_secret(conn, env_id, where, name)
        cur = await repo.get_version(conn, sec.id, sec.current_version)
        if cur is None or cur.deleted_at is not None or cur.destroyed_at is not None:
            raise NotFound(f"{where}: already deleted")
        await repo.set_deleted(conn, sec.id, sec.current_version, rt.clock())
        ctx.version = sec.current_version
        await audit.record(conn, rt, ctx, status=204)


async def undelete_secret(
    rt: Runtime, ctx: RequestContext, actor: Actor, *, project: str, environment: str, name: str
) -> SecretMeta:
    """Bring back a soft-deleted current version."""
    _check(ctx, "secret.undelete", project, environment, name)
    require(actor, Action.WRITE, project, environment, key=name)
    if rt.backends is not None and (route := rt.backends.route(project, environment, name)) is not None:
        from broker.services import proxied

        return await proxied.undelete_secret(
            rt, ctx, route, project=project, environment=environment, name=name
        )
    where = _where(project, environment, name)
    async with rt.engine.begin() as conn:
        _, env_id, _ = await _env(conn, project, environment)
        sec = await _require_secret(conn, env_id, where, name)
        cur = await repo.get_version(conn, sec.id, sec.current_version)
        if cur is None or cur.destroyed_at is not None:
            raise Conflict(
                f"{where}: version {sec.current_version} was destroyed; roll back to an older version"
            )
        if cur.deleted_at is None:
            raise Conflict(f"{where}: not deleted")
        await repo.set_deleted(conn, sec.id, sec.current_version, None)
        ctx.version = sec.current_version
        await audit.record(conn, rt, ctx)
    return SecretMeta(name, sec.current_version, sec.sensitive, False, sec.created_at, sec.updated_at)


async def destroy_version(
    rt: Runtime, ctx: RequestContext, actor: Actor, *, project: str, environment: str, name: str, version: int
) -> None:
    """Erase one version's ciphertext for good (admin: it cannot be undone)."""
    _check(ctx, "secret.destroy", project, environment, name)
    ctx.version = version
    require(actor, Action.ADMIN, project, environment, key=name)
    if rt.backends is not None and (route := rt.backends.route(project, environment, name)) is not None:
        from broker.services import proxied

        return await proxied.destroy_version(
            rt, ctx, route, project=project, environment=environment, name=name, version=version
        )
    where = _where(project, environment, name)
    async with rt.engine.begin() as conn:
        _, env_id, _ = await _env(conn, project, environment)
        sec = await _require_secret(conn, env_id, where, name)
        row = await repo.get_version(conn, sec.id, version)
        if row is None:
            raise NotFound(f"{where}: no version {version}")
        if row.destroyed_at is None:
            await repo.destroy(conn, sec.id, version, rt.clock())
        await audit.record(conn, rt, ctx, status=204)


async def history(
    rt: Runtime, ctx: RequestContext, actor: Actor, *, project: str, environment: str, name: str
) -> tuple[int, list[VersionInfo]]:
    """The current version number and every version's metadata, newest first."""
    _check(ctx, "secret.history", project, environment, name)
    require(actor, Action.READ, project, environment, key=name)
    if rt.backends is not None and (route := rt.backends.route(project, environment, name)) is not None:
        from broker.services import proxied

        return await proxied.history(rt, ctx, route, project=project, environment=environment, name=name)
    where = _where(project, environment, name)
    async with rt.engine.begin() as conn:
        _, env_id, _ = await _env(conn, project, environment)
        sec = await _require_secret(conn, env_id, where, name)
        rows = await repo.history(conn, sec.id)
        await audit.record(conn, rt, ctx)
    return sec.current_version, [
        VersionInfo(r[0], r[1], r[4], r[2] is not None, r[3] is not None) for r in rows
    ]


async def rollback(
    rt: Runtime, ctx: RequestContext, actor: Actor, *, project: str, environment: str, name: str, version: int
) -> SecretMeta:
    """Write a new version holding an older version's value."""
    _check(ctx, "secret.rollback", project, environment, name)
    require(actor, Action.WRITE, project, environment, key=name)
    if rt.backends is not None and (route := rt.backends.route(project, environment, name)) is not None:
        from broker.services import proxied

        return await proxied.rollback(
            rt, ctx, route, project=project, environment=environment, name=name, version=version
        )

    async def unit(tx: Tx) -> SecretMeta:
        return await _roll_back(
            tx, rt, ctx, actor, project=project, environment=environment, name=name, version=version
        )

    return await rt.units.run(unit)


async def _roll_back(
    tx: Tx,
    rt: Runtime,
    ctx: RequestContext,
    actor: Actor,
    *,
    project: str,
    environment: str,
    name: str,
    version: int,
) -> SecretMeta:
    """`rollback`'s unit: the old value, sealed anew as the next version, and the event commit together."""
    if audit.must_wait(rt, tx) or must_wait_to_seal(rt, tx):
        raise MustWait()
    where = _where(project, environment, name)
    now = rt.clock()
    ids = await repo.env_ids(tx, project, environment)
    if ids is None:
        raise NotFound(f"{_where(project, environment)}: no such environment")
    project_id, env_id = ids
    sec = await repo.lock_secret(tx, env_id, name)
    if sec is None:
        raise NotFound(f"{where}: no such secret")
    served_as(
        rt,
        sec.binding,
        project_id=project_id,
        project=project,
        env_id=env_id,
        environment=environment,
        secret_id=sec.id,
        name=name,
        current_version=sec.current_version,
    )
    old = await repo.read_one(tx, project=project, environment=environment, name=name, version=version)
    if old is None or old.version is None:
        raise NotFound(f"{where}: no version {version}")
    if old.ciphertext is None or old.wrapped_dek is None or old.kek_id is None:
        raise Conflict(f"{where}: version {version} was destroyed")
    if old.kek_id in rt.keys.remote and not tx.can_wait:
        raise MustWait()  # nothing written yet
    sealed = Sealed(ciphertext=old.ciphertext, wrapped_dek=old.wrapped_dek, kek_id=old.kek_id)
    aad = secret_aad(project_id=project_id, environment_id=env_id, name=name, version=version)
    text = await _open_sealed(rt, sealed, aad) if tx.can_wait else _open_local(rt, sealed, aad)
    new_version = sec.current_version + 1
    if not await repo.bump_version(
        tx, sec.id, expected=sec.current_version, sensitive=sec.sensitive, now=now
    ):
        raise Conflict(f"{where}: changed concurrently; retry")
    await store_version(
        tx,
        rt,
        project_id=project_id,
        project=project,
        env_id=env_id,
        environment=environment,
        secret_id=sec.id,
        name=name,
        version=new_version,
        data=text.encode(),
        author_id=actor.principal_id,
        now=now,
    )
    ctx.version = new_version
    audit.saw_value(rt, ctx, environment=environment, name=name, version=new_version, value=text)
    await audit.record_in(tx, rt, ctx)
    return SecretMeta(name, new_version, sec.sensitive, False, sec.created_at, now)


async def resolve(
    rt: Runtime, ctx: RequestContext, actor: Actor, *, project: str, environment: str, reveal: bool = False
) -> dict[str, ResolvedValue]:
    """Every value the environment sees, inheritance applied, nearest environment winning."""
    _check(ctx, "secret.reveal" if reveal else "secret.resolve", project, environment)
    require(actor, Action.READ, project, environment)
    if rt.backends is not None and project in rt.backends.projects:
        from broker.services import proxied

        return await proxied.resolve(rt, ctx, project=project, environment=environment)

    async def unit(tx: Tx) -> tuple[list[Seen[StoredRow]], list[str]]:
        # One unit (one thread hop on SQLite): the chain's rows, decryption and the event.
        if audit.must_wait(rt, tx):
            raise MustWait()
        store = await visible.load(tx, project, environment)
        seen = list(store.rows.values())
        if not tx.can_wait and visible.needs_remote_key(rt, seen):
            raise MustWait()
        texts = await visible.reveal(rt, project_id=store.project_id, project=project, seen=seen)
        visible.note(rt, ctx, [(s.environment, s.row.name, s.row.version) for s in seen], texts)
        await audit.record_in(tx, rt, ctx)
        return seen, texts

    seen, texts = await rt.units.run(unit)
    return {
        s.row.name: ResolvedValue(SecretValue(text), s.row.version, s.environment, s.row.sensitive)
        for s, text in zip(seen, texts, strict=True)
    }


GENERATE_FORMATS = ("hex", "base64", "alnum")
GENERATE_MIN_BYTES, GENERATE_MAX_BYTES = 16, 1024
_ALNUM = string.ascii_letters + string.digits


@dataclass(frozen=True)
class Generated:
    """What `generate_secret` did: `generated` is False when an existing secret was left alone."""

    meta: SecretMeta
    generated: bool
    rotated: bool


def generate_value(size: int, encoding: str) -> str:
    """`size` bytes from the OS CSPRNG as hex, base64, or as many [A-Za-z0-9] characters as hold 8*size bits."""
    if encoding == "hex":
        return secrets.token_hex(size)
    if encoding == "base64":
        return base64.b64encode(secrets.token_bytes(size)).decode("ascii")
    length = math.ceil(size * 8 / math.log2(len(_ALNUM)))
    return "".join(secrets.choice(_ALNUM) for _ in range(length))


async def _left_alone(
    rt: Runtime, ctx: RequestContext, *, project: str, environment: str, name: str
) -> Generated | None:
    """The existing secret's metadata, this request audited as a no-op; None if there is no such secret."""
    async with rt.engine.begin() as conn:
        _, env_id, _ = await _env(conn, project, environment)
        sec = await repo.get_secret(conn, env_id, name)
        if sec is None:
            return None
        cur = await repo.get_version(conn, sec.id, sec.current_version)
        deleted = cur is None or cur.deleted_at is not None or cur.destroyed_at is not None
        ctx.version = sec.current_version
        ctx.reason = "already exists; left unchanged (rotate not asked)"
        await audit.record(conn, rt, ctx)
    meta = SecretMeta(name, sec.current_version, sec.sensitive, deleted, sec.created_at, sec.updated_at)
    return Generated(meta, generated=False, rotated=False)


async def generate_secret(
    rt: Runtime,
    ctx: RequestContext,
    actor: Actor,
    *,
    project: str,
    environment: str,
    name: str,
    size: int,
    encoding: str,
    rotate: bool,
) -> Generated:
    """Generate and store a random value once: an existing secret is left alone unless `rotate`."""
    _check(ctx, "secret.generate", project, environment, name)
    if not GENERATE_MIN_BYTES <= size <= GENERATE_MAX_BYTES:
        raise Invalid(f"bytes: must be between {GENERATE_MIN_BYTES} and {GENERATE_MAX_BYTES}", field="bytes")
    if encoding not in GENERATE_FORMATS:
        raise Invalid("format: must be hex, base64 or alnum", field="format")
    require(actor, Action.WRITE, project, environment, key=name)
    if rt.backends is not None and rt.backends.route(project, environment, name) is not None:
        raise Invalid(
            f"{_where(project, environment, name)}: kept in an external backend; generate it there "
            "and read it through the broker",
            field="name",
        )
    cas, sensitive = 0, True
    if rotate:
        async with rt.engine.begin() as conn:
            _, env_id, _ = await _env(conn, project, environment)
            sec = await repo.get_secret(conn, env_id, name)
        if sec is not None:
            cas, sensitive = sec.current_version, sec.sensitive
    try:
        meta = await write_secret(
            rt,
            ctx,
            actor,
            project=project,
            environment=environment,
            name=name,
            value=generate_value(size, encoding),
            sensitive=sensitive,
            cas=cas,
            action="secret.generate",
        )
    except Conflict:
        if rotate:
            raise
        # It exists (perhaps created a moment ago by a concurrent request): leave it alone, idempotently.
        existing = await _left_alone(rt, ctx, project=project, environment=environment, name=name)
        if existing is None:
            raise
        return existing
    return Generated(meta, generated=True, rotated=cas != 0)
