"""Secrets: the use cases. Each checks names and scopes, chooses the store once, and calls it.

Where the values live is broker.services.stores' concern: `stores.choose` picks the database store or the
upstream (Vault, AWS) store for the request, and every use case here calls the store it was given. A read
by bearer token is one unit of work with the token look-up: the store is chosen inside that unit, a
database value is served there (`_served`), an upstream one after it.
"""

from __future__ import annotations

import base64
import math
import secrets
import string

from broker.crypto.keyring import Sealed
from broker.db.units import MustWait, Tx
from broker.domain.names import check_name, check_slug, check_value
from broker.domain.request import Actor, RequestContext
from broker.domain.scopes import Action
from broker.domain.values import SecretValue
from broker.errors import BrokerError, Invalid, NotFound
from broker.repositories import secrets as repo
from broker.services import audit, stores
from broker.services.auth import Found, authenticate_in, bearer_digest, check_header, require
from broker.services.runtime import Runtime
from broker.services.stores import UpstreamStore
from broker.services.stores.base import Generated, ResolvedValue, SecretMeta, SecretRead, VersionInfo, where
from broker.services.stores.sealing import Place, open_local, open_sealed, served_as

__all__ = [
    "GENERATE_FORMATS",
    "Generated",
    "ResolvedValue",
    "SecretMeta",
    "SecretRead",
    "VersionInfo",
    "delete_secret",
    "destroy_version",
    "generate_secret",
    "generate_value",
    "history",
    "list_secrets",
    "read_secret",
    "resolve",
    "rollback",
    "undelete_secret",
    "write_secret",
]


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


async def list_secrets(
    rt: Runtime, ctx: RequestContext, actor: Actor, *, project: str, environment: str, include_deleted: bool
) -> list[SecretMeta]:
    """Names and metadata of an environment's own secrets (and, where mapped, its upstream ones)."""
    _check(ctx, "secret.list", project, environment)
    require(actor, Action.READ, project, environment)
    store = stores.choose(rt, project=project, environment=environment)
    return await store.list(
        rt, ctx, project=project, environment=environment, include_deleted=include_deleted
    )


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

    async def unit(tx: Tx) -> SecretRead | UpstreamStore | BrokerError:
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
    if isinstance(got, UpstreamStore):
        # Chosen in the unit, read after it: no transaction is held across the network.
        return await got.read(
            rt, ctx, project=project, environment=environment, name=name, version=version, pin=pin
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
) -> SecretRead | UpstreamStore | BrokerError:
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
        store = stores.choose(rt, project=project, environment=environment, name=name)
        if isinstance(store, UpstreamStore):
            return store
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
        raise NotFound(f"{where(project, environment)}: no such environment")
    if row.secret_id is None or row.current_version is None or row.version is None:
        missing = "no such secret" if version is None else f"no version {version}"
        raise NotFound(f"{where(project, environment, name)}: {missing}")
    at = Place(row.project_id, project, row.env_id, environment, row.secret_id, name)
    served_as(rt, row.binding, at, current_version=row.current_version)
    ver, ct, wrapped, kek = row.version, row.ciphertext, row.wrapped_dek, row.kek_id
    ctx.version = ver
    if row.destroyed_at is not None or ct is None or wrapped is None or kek is None:
        raise NotFound(f"{where(project, environment, name)}: version {ver} was destroyed")
    if row.deleted_at is not None:
        raise NotFound(f"{where(project, environment, name)}: version {ver} is deleted (undelete it to read)")
    sealed = Sealed(ciphertext=ct, wrapped_dek=wrapped, kek_id=kek)
    aad = at.aad(ver)
    # Only a unit that may wait gets here with a remote key (see _read_in).
    text = await open_sealed(rt, sealed, aad) if kek in rt.keys.remote else open_local(rt, sealed, aad)
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
) -> SecretMeta:
    """Store a new version; with `cas`, only if the current version is still `cas` (0: must not exist)."""
    _check(ctx, "secret.write", project, environment, name)
    check_value(value, field="value")
    if cas is not None and cas < 0:
        raise Invalid("cas: must be 0 (create only) or the current version", field="cas")
    require(actor, Action.WRITE, project, environment, key=name)
    store = stores.choose(rt, project=project, environment=environment, name=name)
    return await store.write(
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


async def delete_secret(
    rt: Runtime, ctx: RequestContext, actor: Actor, *, project: str, environment: str, name: str
) -> None:
    """Soft-delete the current version: hidden from lists and resolution until undeleted."""
    _check(ctx, "secret.delete", project, environment, name)
    require(actor, Action.WRITE, project, environment, key=name)
    store = stores.choose(rt, project=project, environment=environment, name=name)
    await store.delete(rt, ctx, project=project, environment=environment, name=name)


async def undelete_secret(
    rt: Runtime, ctx: RequestContext, actor: Actor, *, project: str, environment: str, name: str
) -> SecretMeta:
    """Bring back a soft-deleted current version."""
    _check(ctx, "secret.undelete", project, environment, name)
    require(actor, Action.WRITE, project, environment, key=name)
    store = stores.choose(rt, project=project, environment=environment, name=name)
    return await store.undelete(rt, ctx, project=project, environment=environment, name=name)


async def destroy_version(
    rt: Runtime, ctx: RequestContext, actor: Actor, *, project: str, environment: str, name: str, version: int
) -> None:
    """Erase one version's ciphertext for good (admin: it cannot be undone)."""
    _check(ctx, "secret.destroy", project, environment, name)
    ctx.version = version
    require(actor, Action.ADMIN, project, environment, key=name)
    store = stores.choose(rt, project=project, environment=environment, name=name)
    await store.destroy(rt, ctx, project=project, environment=environment, name=name, version=version)


async def history(
    rt: Runtime, ctx: RequestContext, actor: Actor, *, project: str, environment: str, name: str
) -> tuple[int, list[VersionInfo]]:
    """The current version number and every version's metadata, newest first."""
    _check(ctx, "secret.history", project, environment, name)
    require(actor, Action.READ, project, environment, key=name)
    store = stores.choose(rt, project=project, environment=environment, name=name)
    return await store.history(rt, ctx, project=project, environment=environment, name=name)


async def rollback(
    rt: Runtime, ctx: RequestContext, actor: Actor, *, project: str, environment: str, name: str, version: int
) -> SecretMeta:
    """Write a new version holding an older version's value."""
    _check(ctx, "secret.rollback", project, environment, name)
    require(actor, Action.WRITE, project, environment, key=name)
    store = stores.choose(rt, project=project, environment=environment, name=name)
    return await store.rollback(
        rt, ctx, actor, project=project, environment=environment, name=name, version=version
    )


async def resolve(
    rt: Runtime, ctx: RequestContext, actor: Actor, *, project: str, environment: str, reveal: bool = False
) -> dict[str, ResolvedValue]:
    """Every value the environment sees, inheritance applied, nearest environment winning."""
    _check(ctx, "secret.reveal" if reveal else "secret.resolve", project, environment)
    require(actor, Action.READ, project, environment)
    store = stores.choose(rt, project=project, environment=environment)
    return await store.resolve(rt, ctx, project=project, environment=environment)


GENERATE_FORMATS = ("hex", "base64", "alnum")
GENERATE_MIN_BYTES, GENERATE_MAX_BYTES = 16, 1024
_ALNUM = string.ascii_letters + string.digits


def generate_value(size: int, encoding: str) -> str:
    """`size` bytes from the OS CSPRNG as hex, base64, or as many [A-Za-z0-9] characters as hold 8*size bits."""
    if encoding == "hex":
        return secrets.token_hex(size)
    if encoding == "base64":
        return base64.b64encode(secrets.token_bytes(size)).decode("ascii")
    length = math.ceil(size * 8 / math.log2(len(_ALNUM)))
    return "".join(secrets.choice(_ALNUM) for _ in range(length))


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
    store = stores.choose(rt, project=project, environment=environment, name=name)
    return await store.generate(
        rt,
        ctx,
        actor,
        project=project,
        environment=environment,
        name=name,
        value=generate_value(size, encoding),
        rotate=rotate,
    )
