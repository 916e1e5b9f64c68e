"""The life of an identity after its creation: show, enable, disable, delete, rotate its client secret.

Creation, listing and the credential exchange live in broker.services.auth; every change here is audited
in the same transaction, and the audit record names the identity by the request's path (its client id).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from broker.domain.request import Actor, RequestContext
from broker.domain.scopes import Action
from broker.errors import Conflict, Forbidden, Invalid, NotFound
from broker.repositories import identities as repo
from broker.services import audit
from broker.services.auth import (
    SECRET_PREFIX,
    Identity,
    _identity,
    _random,
    keyed_hash,
    require,
)
from broker.services.runtime import Runtime

MAX_GRACE_SECONDS = 31 * 86400


@dataclass(frozen=True)
class RotatedSecret:
    """A new client secret, shown once, and until when the previous one is still accepted."""

    identity: Identity
    client_secret: str
    previous_valid_until: datetime | None

    def __repr__(self) -> str:
        return f"RotatedSecret(client_id={self.identity.client_id!r}, client_secret=***)"


async def _principal(conn: Any, client_id: str) -> repo.PrincipalRow:
    row = await repo.get_principal_by_client_id(conn, client_id[:128])
    if row is None:
        raise NotFound("client_id: no identity has this client id")
    return row


def _not_self(actor: Actor, row: repo.PrincipalRow, what: str) -> None:
    # An admin locking themselves out (possibly the only admin) cannot be undone from the same session.
    if row.id == actor.principal_id:
        raise Forbidden(f"client_id: you cannot {what} the identity you are signed in as; ask another admin")


async def show_identity(rt: Runtime, ctx: RequestContext, actor: Actor, *, client_id: str) -> Identity:
    """One identity, deleted or not (admins)."""
    ctx.about("identity.read")
    require(actor, Action.ADMIN, None, None)
    async with rt.engine.begin() as conn:
        row = await _principal(conn, client_id)
        await audit.record(conn, rt, ctx)
    return _identity(row)


async def enable_identity(rt: Runtime, ctx: RequestContext, actor: Actor, *, client_id: str) -> Identity:
    """Let a disabled identity exchange its credential again; its revoked tokens stay revoked."""
    ctx.about("identity.enable")
    require(actor, Action.ADMIN, None, None)
    async with rt.engine.begin() as conn:
        row = await _principal(conn, client_id)
        if row.deleted_at is not None:
            raise Conflict("client_id: this identity is deleted and cannot be enabled; create a new one")
        await repo.enable_principal(conn, row.id)
        row = await _principal(conn, client_id)
        await audit.record(conn, rt, ctx)
    return _identity(row)


async def disable_identity(rt: Runtime, ctx: RequestContext, actor: Actor, *, client_id: str) -> Identity:
    """Disable an identity and revoke every token it holds (reversible with enable)."""
    ctx.about("identity.disable")
    require(actor, Action.ADMIN, None, None)
    async with rt.engine.begin() as conn:
        row = await _principal(conn, client_id)
        _not_self(actor, row, "disable")
        now = rt.clock()
        if row.disabled_at is None:
            await repo.disable_principal(conn, row.id, now)
        await repo.revoke_tree(conn, await repo.token_ids_of(conn, row.id), now)
        row = await _principal(conn, client_id)
        await audit.record(conn, rt, ctx)
    return _identity(row)


async def delete_identity(rt: Runtime, ctx: RequestContext, actor: Actor, *, client_id: str) -> None:
    """Delete an identity: disabled for good, its tokens revoked, hidden from lists; its client id stays
    taken so the audit trail keeps naming one principal."""
    ctx.about("identity.delete")
    require(actor, Action.ADMIN, None, None)
    async with rt.engine.begin() as conn:
        row = await _principal(conn, client_id)
        _not_self(actor, row, "delete")
        now = rt.clock()
        await repo.delete_principal(conn, row.id, now=now, disabled_at=row.disabled_at or now)
        await repo.revoke_tree(conn, await repo.token_ids_of(conn, row.id), now)
        await audit.record(conn, rt, ctx, status=204)


async def rotate_secret(
    rt: Runtime, ctx: RequestContext, actor: Actor, *, client_id: str, grace: int | None
) -> RotatedSecret:
    """Give an identity a new client secret, shown once; the old one is accepted for `grace` seconds
    (none: refused at once). Tokens already issued are not touched."""
    ctx.about("identity.rotate-secret")
    require(actor, Action.ADMIN, None, None)
    if grace is not None and not 0 <= grace <= MAX_GRACE_SECONDS:
        raise Invalid(f"grace: must be between 0 and {MAX_GRACE_SECONDS} seconds", field="grace")
    async with rt.engine.begin() as conn:
        row = await _principal(conn, client_id)
        if row.deleted_at is not None:
            raise Conflict("client_id: this identity is deleted; its secret cannot be rotated")
        now = rt.clock()
        secret = _random(SECRET_PREFIX)
        until = now + timedelta(seconds=grace) if grace else None
        await repo.set_secret(
            conn,
            row.id,
            secret_hash=keyed_hash(rt.keys.hmac_key, b"client-secret", secret),
            previous_hash=bytes(row.secret_hash) if until is not None else None,
            previous_expires_at=until,
        )
        row = await _principal(conn, client_id)
        await audit.record(conn, rt, ctx)
    return RotatedSecret(identity=_identity(row), client_secret=secret, previous_valid_until=until)
