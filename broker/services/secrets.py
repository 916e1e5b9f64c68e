"""Secrets: write with check-and-set, read (audited before release), resolve with inheritance, history."""

from __future__ import annotations

import asyncio
import base64
import json
import math
import secrets
import string
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import IntegrityError as DbIntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from broker.audit.canonical import GENESIS, record_hash
from broker.audit.fingerprint import fingerprint
from broker.crypto import binding
from broker.crypto.envelope import secret_aad
from broker.crypto.keyring import Sealed
from broker.domain.access import Context, Target, TokenFacts, decide
from broker.domain.names import check_name, check_slug, check_value
from broker.domain.request import Actor, RequestContext, ValueSeen
from broker.domain.scopes import Action
from broker.domain.values import SecretValue
from broker.errors import Conflict, Invalid, KeyUnavailable, NotFound
from broker.repositories import hotpath
from broker.repositories import projects as project_repo
from broker.repositories import secrets as repo
from broker.services import audit
from broker.services.auth import bearer_digest, require, token_scopes
from broker.services.projects import MAX_DEPTH
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


async def _env(conn: AsyncConnection, project: str, environment: str) -> tuple[int, int, int | None]:
    row = await project_repo.get_environment(conn, project, environment)
    if row is None:
        raise NotFound(f"{_where(project, environment)}: no such environment")
    return row[0], row[1], row[2]


async def _open(
    rt: Runtime, *, project_id: int, env_id: int, name: str, version: int, ct: bytes, wrapped: bytes, kek: str
) -> str:
    aad = secret_aad(project_id=project_id, environment_id=env_id, name=name, version=version)
    sealed = Sealed(ciphertext=ct, wrapped_dek=wrapped, kek_id=kek)
    try:
        return await _unseal(rt, sealed, aad)
    except KeyUnavailable:
        # A key this process lacks: perhaps a rotation it has not picked up yet.
        if not rt.refresh_keys():
            raise
        return await _unseal(rt, sealed, aad)


async def _unseal(rt: Runtime, sealed: Sealed, aad: bytes) -> str:
    if sealed.kek_id in rt.keys.remote:
        # AWS KMS / Vault transit: a blocking SDK call, so off the event loop (ARCHITECTURE rule 7).
        return (await asyncio.to_thread(rt.keys.keyring.open, sealed, aad)).decode("utf-8")
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


async def _seal(rt: Runtime, data: bytes, aad: bytes) -> Sealed:
    keyring = rt.keys.keyring
    if keyring.current_id in rt.keys.remote:
        return await asyncio.to_thread(keyring.seal, data, aad)
    return keyring.seal(data, aad)


async def store_version(
    conn: AsyncConnection,
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
        conn,
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


async def read_secret(
    rt: Runtime,
    ctx: RequestContext,
    actor: Actor,
    *,
    project: str,
    environment: str,
    name: str,
    version: int | None,
    pin: str | None = None,
    reveal: bool = False,
) -> SecretRead:
    """Read one value; its audit event commits before the value is returned.

    `pin` names an upstream version (a Vault version, an AWS staging label or version id). `reveal`: the
    value is for display, so the event's action is `secret.reveal`.
    """
    _check(ctx, "secret.reveal" if reveal else "secret.read", project, environment, name)
    require(actor, Action.READ, project, environment, key=name)
    if rt.backends is not None and (route := rt.backends.route(project, environment, name)) is not None:
        from broker.services import proxied

        return await proxied.read_secret(
            rt, ctx, route, project=project, environment=environment, name=name, version=version, pin=pin
        )
    if pin is not None:
        raise Invalid(
            "upstream_version: only for secrets kept in Vault or AWS; use version", field="upstream_version"
        )
    async with rt.engine.begin() as conn:
        if version is None:
            # The hot path: environment and current version in one round trip.
            row = await repo.read_current_by_slugs(conn, project, environment, name)
            if row is None:
                raise NotFound(f"{_where(project, environment)}: no such environment")
            project_id, env_id, sid, sensitive, ver, ct, wrapped, kek, created, deleted, destroyed, bound = (
                row
            )
            if sid is None or ver is None:
                raise NotFound(f"{_where(project, environment, name)}: no such secret")
            served_as(
                rt,
                bound,
                project_id=project_id,
                project=project,
                env_id=env_id,
                environment=environment,
                secret_id=sid,
                name=name,
                current_version=ver,
            )
        else:
            project_id, env_id, _ = await _env(conn, project, environment)
            if version < 1:
                raise Invalid("version: must be a positive integer", field="version")
            sec = await repo.get_secret(conn, env_id, name)
            vrow = await repo.get_version(conn, sec.id, version) if sec else None
            if sec is None or vrow is None:
                raise NotFound(f"{_where(project, environment, name)}: no version {version}")
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
            sensitive = sec.sensitive
            ver, ct, wrapped, kek, created, deleted, destroyed = vrow
        ctx.version = ver
        if destroyed is not None or ct is None or wrapped is None or kek is None:
            raise NotFound(f"{_where(project, environment, name)}: version {ver} was destroyed")
        if deleted is not None:
            raise NotFound(
                f"{_where(project, environment, name)}: version {ver} is deleted (undelete it to read)"
            )
        text = await _open(
            rt, project_id=project_id, env_id=env_id, name=name, version=ver, ct=ct, wrapped=wrapped, kek=kek
        )
        audit.saw_value(rt, ctx, environment=environment, name=name, version=ver, value=text)
        await audit.record(conn, rt, ctx)
    return SecretRead(name, SecretValue(text), ver, sensitive, environment, created)


CLOCK_TOLERANCE = timedelta(seconds=1)  # the audit trail's default: a smaller step back is not an anomaly
# What the one-secret hot path decided: the value read and the event to append.
_Decided = tuple["SecretRead", dict[str, Any]]


async def read_current_fast(
    rt: Runtime,
    ctx: RequestContext,
    *,
    authorization: str | None,
    project: str,
    environment: str,
    name: str,
    reveal: bool,
) -> SecretRead | None:
    """The hot path of `read_secret` for the current version: None means "take the general path".

    Token check, authorisation (through `require`), the secret's current version, decryption and the
    audit event in as few steps as the database allows: on SQLite one unit of work in the group-commit
    writer (the token and secret in one query, the event linked into the hash chain, committed before
    this returns); on PostgreSQL one query and one insert that commits by itself (the chainer links it).
    Only the plain success is handled here. Anything else (a bad or use-limited token, a denial, a
    missing, deleted or destroyed secret, a remote key, other audit sinks, a clock that stepped back)
    writes nothing and returns None, and `read_secret` then does and audits it all.
    """
    hot = rt.hot
    if hot is None or (hot.sqlite is None and hot.pg is None) or rt.audit.sinks:
        return None
    if rt.backends is not None and rt.backends.route(project, environment, name) is not None:
        return None
    try:
        _check(ctx, "secret.reveal" if reveal else "secret.read", project, environment, name)
    except Invalid:
        return None
    digest = bearer_digest(rt, authorization)
    # Only what this process has seen locked: the general path asks the database (and then this knows).
    if digest is None or rt.limiter.known_locked([f"addr:{ctx.source_addr}"]):
        return None
    now = rt.clock()
    last = rt.audit.last_time
    if last is not None and last - now > CLOCK_TOLERANCE:
        return None  # the general path records the clock anomaly with the event
    rt.audit.clock_step(now, CLOCK_TOLERANCE)  # no step (checked above): notes `now` as the latest time
    st = hotpath.statements(hot.dialect)

    def decide(row: list[Any] | None) -> _Decided | None:
        try:
            return _decide(rt, ctx, row, project=project, environment=environment, name=name, now=now)
        except Exception:  # anything unexpected: the general path will raise it properly
            return None

    where = {"token_hash": digest, "project": project, "environment": environment, "name": name}
    decided: _Decided | None
    # Database errors propagate, as they do from the general path: the request fails (500, or 503 when
    # the edge cannot record the failure either) and no value is sent.
    if hot.sqlite is not None:

        def unit(conn: Any) -> tuple[_Decided, int] | None:
            found = decide(hotpath.lookup_sqlite(conn, st, where))
            if found is None:
                return None
            event = found[1]
            seq, prev = hotpath.head_sqlite(conn, st)
            prev = prev or GENESIS
            seq += 1
            digest = record_hash(audit.to_record(event, seq=seq, prev_hash=prev))
            hotpath.append_sqlite(conn, st, {**event, "seq": seq, "prev_hash": prev, "hash": digest})
            return found, seq

        done = await hot.sqlite.run(unit)
        if done is None:
            return None
        decided, seq = done
        rt.audit.head_seq = max(rt.audit.head_seq, seq)
    else:
        assert hot.pg is not None
        decided = decide(await hotpath.lookup_pg(hot, st, where))
        if decided is None:
            return None
        await hotpath.append_pg(hot, st, decided[1])
    read = decided[0]
    ctx.audited = True
    rt.audit.counters["events"] += 1
    return read


def _decide(
    rt: Runtime,
    ctx: RequestContext,
    row: list[Any] | None,
    *,
    project: str,
    environment: str,
    name: str,
    now: datetime,
) -> _Decided | None:
    """The hot path's checks, decryption and event, from the token and secret row (see hotpath.LOOKUP)."""
    if row is None:
        return None
    (token_id, accessor, principal_id, scopes, cidrs, expires, max_expires, num_uses, revoked) = row[:9]
    (principal_type, principal_name, disabled) = row[9:12]
    (project_id, env_id, sid, sensitive, ver, ct, wrapped, kek, created, deleted, destroyed, tag) = row[12:]
    if num_uses is not None:
        return None  # use-limited tokens take the general path (an atomic conditional update)
    bound = json.loads(cidrs) if isinstance(cidrs, str) else list(cidrs)
    facts = TokenFacts(
        token_id=token_id,
        accessor=accessor,
        principal_id=principal_id,
        principal_type=principal_type,
        principal_name=principal_name,
        scopes=token_scopes(scopes),
        bound_cidrs=tuple(bound),
        expires_at=expires,
        max_expires_at=max_expires,
        revoked_at=revoked,
        disabled_at=disabled,
    )
    target = Target(Action.READ, project, environment, name)
    actor = decide(facts, target, Context(source_addr=ctx.source_addr), now)
    if not isinstance(actor, Actor):
        return None
    if env_id is None or sid is None or ver is None or deleted is not None or destroyed is not None:
        return None
    if ct is None or wrapped is None or kek is None or kek in rt.keys.remote:
        return None
    # A mismatch raises: the caller then takes the general path, which refuses and audits it.
    served_as(
        rt,
        tag,
        project_id=project_id,
        project=project,
        env_id=env_id,
        environment=environment,
        secret_id=sid,
        name=name,
        current_version=ver,
    )
    aad = secret_aad(project_id=project_id, environment_id=env_id, name=name, version=ver)
    text = rt.keys.keyring.open(Sealed(ciphertext=ct, wrapped_dek=wrapped, kek_id=kek), aad).decode("utf-8")
    seen = ValueSeen(environment, name, ver, fingerprint(rt.keys.audit_key, text))
    # Every check passed: the request is this read from here on, as in read_secret (if the event cannot
    # be written now, the request fails with its actor, version and fingerprint on the error event).
    ctx.actor, ctx.version = actor, ver
    ctx.values.append(seen)
    try:
        event = audit.shape(ctx, outcome="ok", status=200, now=now)
    except Exception:
        ctx.actor, ctx.version = None, None
        ctx.values.pop()
        raise
    read = SecretRead(name, SecretValue(text), ver, bool(sensitive), environment, created)
    return read, event


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
    # A blind write (no `cas`) must not fail because another writer got there first: the row lock below
    # orders writers to an existing secret, and a blind create that loses the race to insert the row
    # (a unique violation) runs again and then finds the row. A `cas` write gets 409 when stale.
    for attempt in range(1 if cas is not None else 3):
        now = rt.clock()
        try:
            return await _write_version(
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
                now=now,
            )
        except DbIntegrityError:
            if cas is not None or attempt == 2:
                raise Conflict(
                    f"{_where(project, environment, name)}: changed concurrently; read it and retry"
                ) from None
    raise AssertionError("unreachable")


async def _write_version(
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
    now: datetime,
) -> SecretMeta:
    """One attempt of `write_secret` in one transaction."""
    async with rt.engine.begin() as conn:
        project_id, env_id, _ = await _env(conn, project, environment)
        sec = await repo.get_secret(conn, env_id, name, for_update=True)
        if sec is None:
            if cas not in (None, 0):
                raise Conflict(
                    f"{_where(project, environment, name)}: cas {cas} is stale; the secret does not exist"
                )
            secret_id = await repo.add_secret(conn, env_id=env_id, name=name, sensitive=sensitive, now=now)
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
                conn, sec.id, expected=sec.current_version, sensitive=sensitive, now=now
            ):
                raise Conflict(
                    f"{_where(project, environment, name)}: changed concurrently; read it and retry"
                )
            secret_id, version, created_at = sec.id, sec.current_version + 1, sec.created_at
        await store_version(
            conn,
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
        await audit.record(conn, rt, ctx)
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
    where = _where(project, environment, name)
    now = rt.clock()
    async with rt.engine.begin() as conn:
        project_id, env_id, _ = await _env(conn, project, environment)
        sec = await _require_secret(conn, env_id, where, name)
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
        old = await repo.get_version(conn, sec.id, version)
        if old is None:
            raise NotFound(f"{where}: no version {version}")
        if old.ciphertext is None or old.wrapped_dek is None or old.kek_id is None:
            raise Conflict(f"{where}: version {version} was destroyed")
        text = await _open(
            rt,
            project_id=project_id,
            env_id=env_id,
            name=name,
            version=version,
            ct=old.ciphertext,
            wrapped=old.wrapped_dek,
            kek=old.kek_id,
        )
        new_version = sec.current_version + 1
        if not await repo.bump_version(
            conn, sec.id, expected=sec.current_version, sensitive=sec.sensitive, now=now
        ):
            raise Conflict(f"{where}: changed concurrently; retry")
        await store_version(
            conn,
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
        await audit.record(conn, rt, ctx)
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
    async with rt.engine.begin() as conn:
        project_id, env_id, _ = await _env(conn, project, environment)
        tree = await project_repo.environment_slugs(conn, project_id)
        chain: list[int] = []
        cursor: int | None = env_id
        while cursor is not None and cursor not in chain and len(chain) < MAX_DEPTH:
            chain.append(cursor)
            cursor = tree[cursor][1]
        rows = await repo.current_values(conn, chain)
        rank = {eid: i for i, eid in enumerate(chain)}
        best: dict[str, tuple[int, ResolvedValue]] = {}
        for eid, name, sensitive, ver, ct, wrapped, kek, sid, bound in sorted(rows, key=lambda r: rank[r[0]]):
            if name in best or ct is None or wrapped is None or kek is None:
                continue
            served_as(
                rt,
                bound,
                project_id=project_id,
                project=project,
                env_id=eid,
                environment=tree[eid][0],
                secret_id=sid,
                name=name,
                current_version=ver,
            )
            text = await _open(
                rt, project_id=project_id, env_id=eid, name=name, version=ver, ct=ct, wrapped=wrapped, kek=kek
            )
            best[name] = (rank[eid], ResolvedValue(SecretValue(text), ver, tree[eid][0], sensitive))
            audit.saw_value(rt, ctx, environment=tree[eid][0], name=name, version=ver, value=text)
        await audit.record(conn, rt, ctx)
    return {name: rv for name, (_, rv) in sorted(best.items())}


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
