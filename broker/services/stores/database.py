"""The database store: secrets sealed in this broker's own tables.

Each use case is one unit of work on `rt.units` holding its change and its audit event, so they commit
together (prepared Core statements from broker.repositories.secrets; one thread hop on SQLite). A blind write (no `cas`) must not
fail because another writer got there first: the row lock in the unit orders writers to an existing
secret (the SQLite writer runs one unit at a time), and a blind create that loses the race to insert the
row (a unique violation) runs again and then finds the row. A `cas` write gets 409 when stale.
On PostgreSQL a new version of an existing secret first goes optimistically in two round trips and no
transaction block: the row read unlocked, then one statement moving the version from the one read and
inserting the version and its event (`_write_optimistic`). This process's writers to one secret take
turns; one that loses the race to another process's writer (or finds the row held by a transaction: the
statement never waits on a lock) writes nothing and tries again, and after a few losses takes the row lock
like the other writes.
The bearer-token read is served inside the token's own unit (broker.services.secrets.read_secret).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from broker.crypto.keyring import Sealed
from broker.db.units import IntegrityViolation, MustWait, PgOneStatement, Tx
from broker.domain.inheritance import Seen, StoredRow
from broker.domain.request import Actor, RequestContext
from broker.domain.values import SecretValue
from broker.errors import Conflict, NotFound
from broker.repositories import audit as audit_repo
from broker.repositories import secrets as repo
from broker.repositories.secrets import LockedSecret, VersionState
from broker.services import audit, visible
from broker.services.runtime import Runtime
from broker.services.stores.base import (
    Generated,
    ResolvedValue,
    SecretMeta,
    VersionInfo,
    require_environment,
    where,
)
from broker.services.stores.sealing import (
    Place,
    must_wait_to_seal,
    open_local,
    open_sealed,
    seal_version,
    served_as,
    store_version,
)


async def _secret(tx: Tx, project: str, environment: str, name: str, *, lock: bool) -> LockedSecret:
    """The secret row (locked for a change); NotFound for a missing environment or secret."""
    if lock:
        found = await repo.lock_secret_at(tx, project, environment, name)
        sec = found[2] if found is not None else None
        if sec is None:
            await require_environment(tx, project, environment)  # which one is missing
    else:
        _, env_id = await require_environment(tx, project, environment)
        sec = await repo.find_secret(tx, env_id, name)
    if sec is None:
        raise NotFound(f"{where(project, environment, name)}: no such secret")
    return sec


@dataclass(frozen=True, slots=True)
class _Write:
    """What a write's two units (locking, optimistic) are both given."""

    project: str
    environment: str
    name: str
    value: str = field(repr=False)  # a repr (a traceback's locals, a log) never shows the value
    data: bytes = field(repr=False)
    sensitive: bool
    cas: int | None


# Optimistic attempts of a write without `cas` before it takes the row lock (each lost one means another
# writer committed: a key so contended is better served in turn).
OPTIMISTIC_TRIES = 3


def _gone(state: VersionState | None) -> bool:
    return state is None or state.deleted_at is not None or state.destroyed_at is not None


class DatabaseStore:
    """Secrets kept in the broker's database (the store of every environment no backends file maps)."""

    async def write(
        self,
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
    ) -> SecretMeta:
        """Store a new version; with `cas`, only if the current version is still `cas` (0: must not exist)."""
        w = _Write(
            project=project,
            environment=environment,
            name=name,
            value=value,
            data=value.encode("utf-8"),
            sensitive=sensitive,
            cas=cas,
        )

        async def unit(tx: Tx) -> SecretMeta:
            return await _write_version(tx, rt, ctx, actor, w)

        async def optimistic(tx: PgOneStatement) -> SecretMeta | Literal["missing", "moved"]:
            return await _write_optimistic(tx, rt, ctx, actor, w)

        async def locked() -> SecretMeta:
            for attempt in range(1 if cas is not None else 3):
                try:
                    return await rt.units.run(unit)
                except IntegrityViolation:
                    if cas is not None or attempt == 2:
                        raise Conflict(
                            f"{where(project, environment, name)}: changed concurrently; read it and retry"
                        ) from None
            raise AssertionError("unreachable")

        if cas == 0 or not rt.units.one_statement:
            return await locked()
        # This process's writers to one secret take turns (else they would mostly lose races to each
        # other); another process's writer may still win one.
        async with rt.units.turn((project, environment, name)):
            for _ in range(OPTIMISTIC_TRIES):
                try:
                    got = await rt.units.run_one_statement(optimistic)
                except (MustWait, IntegrityViolation):
                    # A remote KEK or another audit sink: the ordinary unit waits for them. A constraint
                    # refusal: the locked unit retries it and answers 409 if it persists.
                    break
                if isinstance(got, SecretMeta):
                    return got
                if got == "missing":
                    break  # the ordinary unit creates it, or says what is missing
                if cas is not None:
                    raise Conflict(
                        f"{where(project, environment, name)}: cas {cas} is stale; changed concurrently"
                    )
            # Missing, waiting, or a key so contended the optimistic write keeps losing: take the lock.
            return await locked()

    async def generate(
        self,
        rt: Runtime,
        ctx: RequestContext,
        actor: Actor,
        *,
        project: str,
        environment: str,
        name: str,
        value: str,
        rotate: bool,
    ) -> Generated:
        """Store a generated value once: an existing secret is left alone unless `rotate`."""
        cas, sensitive = 0, True
        if rotate:

            async def look_up(tx: Tx) -> LockedSecret | None:
                _, env_id = await require_environment(tx, project, environment)
                return await repo.find_secret(tx, env_id, name)

            sec = await rt.units.run(look_up, atomic=False)
            if sec is not None:
                cas, sensitive = sec.current_version, sec.sensitive
        try:
            meta = await self.write(
                rt,
                ctx,
                actor,
                project=project,
                environment=environment,
                name=name,
                value=value,
                sensitive=sensitive,
                cas=cas,
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

    async def delete(
        self, rt: Runtime, ctx: RequestContext, *, project: str, environment: str, name: str
    ) -> None:
        """Soft-delete the current version: hidden from lists and resolution until undeleted."""

        async def unit(tx: Tx) -> None:
            if audit.must_wait(rt, tx):
                raise MustWait()
            sec = await _secret(tx, project, environment, name, lock=True)
            if _gone(await repo.version_state(tx, sec.id, sec.current_version)):
                raise NotFound(f"{where(project, environment, name)}: already deleted")
            await repo.set_deleted(tx, sec.id, sec.current_version, rt.clock())
            ctx.version = sec.current_version
            await audit.record_in(tx, rt, ctx, status=204)

        await rt.units.run(unit)

    async def undelete(
        self, rt: Runtime, ctx: RequestContext, *, project: str, environment: str, name: str
    ) -> SecretMeta:
        """Bring back a soft-deleted current version."""

        async def unit(tx: Tx) -> SecretMeta:
            if audit.must_wait(rt, tx):
                raise MustWait()
            path = where(project, environment, name)
            sec = await _secret(tx, project, environment, name, lock=True)
            cur = await repo.version_state(tx, sec.id, sec.current_version)
            if cur is None or cur.destroyed_at is not None:
                raise Conflict(
                    f"{path}: version {sec.current_version} was destroyed; roll back to an older version"
                )
            if cur.deleted_at is None:
                raise Conflict(f"{path}: not deleted")
            await repo.set_deleted(tx, sec.id, sec.current_version, None)
            ctx.version = sec.current_version
            await audit.record_in(tx, rt, ctx)
            return SecretMeta(name, sec.current_version, sec.sensitive, False, sec.created_at, sec.updated_at)

        return await rt.units.run(unit)

    async def destroy(
        self, rt: Runtime, ctx: RequestContext, *, project: str, environment: str, name: str, version: int
    ) -> None:
        """Erase one version's ciphertext for good (it cannot be undone)."""

        async def unit(tx: Tx) -> None:
            if audit.must_wait(rt, tx):
                raise MustWait()
            sec = await _secret(tx, project, environment, name, lock=True)
            state = await repo.version_state(tx, sec.id, version)
            if state is None:
                raise NotFound(f"{where(project, environment, name)}: no version {version}")
            if state.destroyed_at is None:
                await repo.destroy(tx, sec.id, version, rt.clock())
            await audit.record_in(tx, rt, ctx, status=204)

        await rt.units.run(unit)

    async def history(
        self, rt: Runtime, ctx: RequestContext, *, project: str, environment: str, name: str
    ) -> tuple[int, list[VersionInfo]]:
        """The current version number and every version's metadata, newest first."""

        async def unit(tx: Tx) -> tuple[int, list[list[Any]]]:
            if audit.must_wait(rt, tx):
                raise MustWait()
            sec = await _secret(tx, project, environment, name, lock=False)
            rows = await repo.history(tx, sec.id)
            await audit.record_in(tx, rt, ctx)
            return sec.current_version, rows

        current, rows = await rt.units.run(unit)
        return current, [VersionInfo(r[0], r[1], r[4], r[2] is not None, r[3] is not None) for r in rows]

    async def rollback(
        self,
        rt: Runtime,
        ctx: RequestContext,
        actor: Actor,
        *,
        project: str,
        environment: str,
        name: str,
        version: int,
    ) -> SecretMeta:
        """Write a new version holding an older version's value."""

        async def unit(tx: Tx) -> SecretMeta:
            return await _roll_back(
                tx, rt, ctx, actor, project=project, environment=environment, name=name, version=version
            )

        return await rt.units.run(unit)

    async def list(
        self, rt: Runtime, ctx: RequestContext, *, project: str, environment: str, include_deleted: bool
    ) -> list[SecretMeta]:
        """Names and metadata of an environment's own secrets."""

        async def unit(tx: Tx) -> list[repo.Listed]:
            if audit.must_wait(rt, tx):
                raise MustWait()
            _, env_id = await require_environment(tx, project, environment)
            rows = await repo.list_secrets(tx, env_id)
            await audit.record_in(tx, rt, ctx)
            return rows

        out = []
        for r in await rt.units.run(unit):
            deleted = r.deleted_at is not None or r.destroyed_at is not None
            if deleted and not include_deleted:
                continue
            out.append(
                SecretMeta(r.name, r.current_version, r.sensitive, deleted, r.created_at, r.updated_at)
            )
        return out

    async def resolve(
        self, rt: Runtime, ctx: RequestContext, *, project: str, environment: str
    ) -> dict[str, ResolvedValue]:
        """Every value the environment sees, inheritance applied, nearest environment winning."""

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

        # One statement reads the whole chain and nothing else is written but the event: each may commit by
        # itself (on PostgreSQL the event then joins other requests' in one grouped insert and commit).
        seen, texts = await rt.units.run(unit, atomic=False)
        return {
            s.row.name: ResolvedValue(SecretValue(text), s.row.version, s.environment, s.row.sensitive)
            for s, text in zip(seen, texts, strict=True)
        }


async def _write_version(
    tx: Tx,
    rt: Runtime,
    ctx: RequestContext,
    actor: Actor,
    w: _Write,
) -> SecretMeta:
    """A write's unit: the new version and its event commit together."""
    if audit.must_wait(rt, tx) or must_wait_to_seal(rt, tx):
        raise MustWait()
    now = rt.clock()
    # The common case (a new version of an existing secret) finds the environment and locks the row in
    # one statement, then moves the version and inserts it in one more (one on PostgreSQL).
    project, environment, name = w.project, w.environment, w.name
    found = await repo.lock_secret_at(tx, project, environment, name)
    if found is None:
        project_id, env_id = await require_environment(tx, project, environment)
        # A concurrent blind create that inserts the row first makes add_secret fail on the unique key:
        # the write then runs again and finds the row (DatabaseStore.write).
        if w.cas not in (None, 0):
            raise Conflict(
                f"{where(project, environment, name)}: cas {w.cas} is stale; the secret does not exist"
            )
        secret_id = await repo.add_secret(tx, env_id=env_id, name=name, sensitive=w.sensitive, now=now)
        at = Place(project_id, project, env_id, environment, secret_id, name)
        version, created_at = 1, now
        await store_version(tx, rt, at, version=version, data=w.data, author_id=actor.principal_id, now=now)
    else:
        at, sec = _replacing(rt, found, project=project, environment=environment, name=name, cas=w.cas)
        version, created_at = sec.current_version + 1, sec.created_at
        if not await store_version(
            tx,
            rt,
            at,
            version=version,
            data=w.data,
            author_id=actor.principal_id,
            now=now,
            advance=(sec.current_version, w.sensitive),
        ):
            raise Conflict(f"{where(project, environment, name)}: changed concurrently; read it and retry")
    ctx.version = version
    audit.saw_value(rt, ctx, environment=environment, name=name, version=version, value=w.value)
    await audit.record_in(tx, rt, ctx)
    return SecretMeta(name, version, w.sensitive, False, created_at, now)


def _replacing(
    rt: Runtime,
    found: tuple[int, int, LockedSecret],
    *,
    project: str,
    environment: str,
    name: str,
    cas: int | None,
) -> tuple[Place, LockedSecret]:
    """Where an existing secret a write replaces is served, once its binding and `cas` are checked."""
    project_id, env_id, sec = found
    at = Place(project_id, project, env_id, environment, sec.id, name)
    served_as(rt, sec.binding, at, current_version=sec.current_version)
    if cas is not None and cas != sec.current_version:
        raise Conflict(
            f"{where(project, environment, name)}: cas {cas} is stale; current version is {sec.current_version}"
        )
    return at, sec


async def _write_optimistic(
    tx: PgOneStatement,
    rt: Runtime,
    ctx: RequestContext,
    actor: Actor,
    w: _Write,
) -> SecretMeta | Literal["missing", "moved"]:
    """A new version of an existing secret in two round trips (PostgreSQL): the row read unlocked, the
    next version sealed, then one statement that moves the version from the one read, inserts it and
    inserts the request's event, or writes neither when a concurrent writer moved it first ("moved":
    this request has recorded nothing yet). "missing": no such secret (or environment)."""
    if audit.must_wait(rt, tx) or must_wait_to_seal(rt, tx):
        raise MustWait()
    project, environment, name = w.project, w.environment, w.name
    found = await repo.lock_secret_at(tx, project, environment, name, lock=False)
    if found is None:
        return "missing"
    at, sec = _replacing(rt, found, project=project, environment=environment, name=name, cas=w.cas)
    version = sec.current_version + 1
    # Sealed before the events are shaped: once they are, only the statement itself can fail (as in the
    # locked unit, whose seal also comes first), so a clock anomaly noted with them is not dropped by a
    # key service's failure.
    sealed = await seal_version(rt, at, version=version, data=w.data)
    now = rt.clock()
    earlier_version, seen, counted = ctx.version, len(ctx.values), rt.audit.counters["events"]
    ctx.version = version
    audit.saw_value(rt, ctx, environment=environment, name=name, version=version, value=w.value)
    await audit.record_in(tx, rt, ctx)  # held by `tx` for the one statement below
    moved = ran = False
    try:
        moved = await store_version(
            tx,
            rt,
            at,
            version=version,
            data=sealed,
            author_id=actor.principal_id,
            now=now,
            advance=(sec.current_version, w.sensitive),
            events=tx.take_held(audit_repo.APPEND_UNLINKED),
        )
        ran = True
    finally:
        if not moved:  # nothing written (a lost race, or a failure the request then records): no event,
            # and no version this request could claim in the event it records instead. A statement that
            # ran wrote the events before the request's own (a clock anomaly) all the same.
            ctx.version = earlier_version
            del ctx.values[seen:]
            audit.not_recorded(rt, ctx, events=1 if ran else rt.audit.counters["events"] - counted)
    return SecretMeta(name, version, w.sensitive, False, sec.created_at, now) if moved else "moved"


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
    """A rollback's unit: the old value, sealed anew as the next version, and the event commit together."""
    if audit.must_wait(rt, tx) or must_wait_to_seal(rt, tx):
        raise MustWait()
    path = where(project, environment, name)
    now = rt.clock()
    found = await repo.lock_secret_at(tx, project, environment, name)
    if found is None:
        await require_environment(tx, project, environment)
        raise NotFound(f"{path}: no such secret")
    project_id, env_id, sec = found
    at = Place(project_id, project, env_id, environment, sec.id, name)
    served_as(rt, sec.binding, at, current_version=sec.current_version)
    old = await repo.read_one(tx, project=project, environment=environment, name=name, version=version)
    if old is None or old.version is None:
        raise NotFound(f"{path}: no version {version}")
    if old.ciphertext is None or old.wrapped_dek is None or old.kek_id is None:
        raise Conflict(f"{path}: version {version} was destroyed")
    if old.kek_id in rt.keys.remote and not tx.can_wait:
        raise MustWait()  # nothing written yet
    sealed = Sealed(ciphertext=old.ciphertext, wrapped_dek=old.wrapped_dek, kek_id=old.kek_id)
    aad = at.aad(version)
    text = await open_sealed(rt, sealed, aad) if tx.can_wait else open_local(rt, sealed, aad)
    new_version = sec.current_version + 1
    if not await store_version(
        tx,
        rt,
        at,
        version=new_version,
        data=text.encode(),
        author_id=actor.principal_id,
        now=now,
        advance=(sec.current_version, sec.sensitive),
    ):
        raise Conflict(f"{path}: changed concurrently; retry")
    ctx.version = new_version
    audit.saw_value(rt, ctx, environment=environment, name=name, version=new_version, value=text)
    await audit.record_in(tx, rt, ctx)
    return SecretMeta(name, new_version, sec.sensitive, False, sec.created_at, now)


async def _left_alone(
    rt: Runtime, ctx: RequestContext, *, project: str, environment: str, name: str
) -> Generated | None:
    """The existing secret's metadata, this request audited as a no-op; None if there is no such secret."""

    async def unit(tx: Tx) -> Generated | None:
        if audit.must_wait(rt, tx):
            raise MustWait()
        _, env_id = await require_environment(tx, project, environment)
        sec = await repo.find_secret(tx, env_id, name)
        if sec is None:
            return None
        deleted = _gone(await repo.version_state(tx, sec.id, sec.current_version))
        ctx.version = sec.current_version
        ctx.reason = "already exists; left unchanged (rotate not asked)"
        await audit.record_in(tx, rt, ctx)
        meta = SecretMeta(name, sec.current_version, sec.sensitive, deleted, sec.created_at, sec.updated_at)
        return Generated(meta, generated=False, rotated=False)

    return await rt.units.run(unit)
