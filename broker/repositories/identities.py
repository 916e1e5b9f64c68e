"""Principal and token rows."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, Text, bindparam, func, insert, select, type_coerce, update
from sqlalchemy.ext.asyncio import AsyncConnection

from broker.db.base import DbRow
from broker.db.units import Statement, Tx
from broker.models import principals, tokens

PrincipalRow = DbRow

_PRINCIPAL_COLS = (
    principals.c.id,
    principals.c.type,
    principals.c.name,
    principals.c.client_id,
    principals.c.secret_hash,
    principals.c.scopes,
    principals.c.token_ttl,
    principals.c.token_max_ttl,
    principals.c.bound_cidrs,
    principals.c.created_at,
    principals.c.disabled_at,
    principals.c.previous_secret_hash,
    principals.c.previous_secret_expires_at,
    principals.c.deleted_at,
)


async def count_principals(conn: AsyncConnection) -> int:
    """How many principals exist."""
    return int((await conn.execute(select(func.count()).select_from(principals))).scalar_one())


async def get_principal_by_client_id(conn: AsyncConnection, client_id: str) -> PrincipalRow | None:
    """A principal by client id, or None."""
    return (await conn.execute(select(*_PRINCIPAL_COLS).where(principals.c.client_id == client_id))).first()


async def get_principal(conn: AsyncConnection, principal_id: int) -> PrincipalRow | None:
    """A principal by id, or None."""
    return (await conn.execute(select(*_PRINCIPAL_COLS).where(principals.c.id == principal_id))).first()


async def list_principals(conn: AsyncConnection) -> list[PrincipalRow]:
    """Every principal, oldest first."""
    return list((await conn.execute(select(*_PRINCIPAL_COLS).order_by(principals.c.id))).all())


async def add_principal(
    conn: AsyncConnection,
    *,
    type_: str,
    name: str,
    client_id: str,
    secret_hash: bytes,
    scopes: list[Any],
    token_ttl: int,
    token_max_ttl: int,
    bound_cidrs: list[str],
    now: datetime,
) -> int:
    """Insert a principal and return its id."""
    result = await conn.execute(
        insert(principals)
        .values(
            type=type_,
            name=name,
            client_id=client_id,
            secret_hash=secret_hash,
            scopes=scopes,
            token_ttl=token_ttl,
            token_max_ttl=token_max_ttl,
            bound_cidrs=bound_cidrs,
            created_at=now,
        )
        .returning(principals.c.id)
    )
    return int(result.scalar_one())


async def disable_principal(conn: AsyncConnection, principal_id: int, now: datetime) -> None:
    """Disable a principal so it can no longer exchange credentials."""
    await conn.execute(update(principals).where(principals.c.id == principal_id).values(disabled_at=now))


async def enable_principal(conn: AsyncConnection, principal_id: int) -> None:
    """Let a disabled principal exchange its credential again."""
    await conn.execute(update(principals).where(principals.c.id == principal_id).values(disabled_at=None))


async def delete_principal(
    conn: AsyncConnection, principal_id: int, *, now: datetime, disabled_at: datetime
) -> None:
    """Mark a principal deleted and disabled; the row stays for the audit trail, its client id stays taken."""
    await conn.execute(
        update(principals)
        .where(principals.c.id == principal_id)
        .values(disabled_at=disabled_at, deleted_at=now)
    )


async def set_secret(
    conn: AsyncConnection,
    principal_id: int,
    *,
    secret_hash: bytes,
    previous_hash: bytes | None,
    previous_expires_at: datetime | None,
) -> None:
    """Replace a principal's secret hash, keeping the old one (hashed) until `previous_expires_at`."""
    await conn.execute(
        update(principals)
        .where(principals.c.id == principal_id)
        .values(
            secret_hash=secret_hash,
            previous_secret_hash=previous_hash,
            previous_secret_expires_at=previous_expires_at,
        )
    )


TokenRow = DbRow

_TOKEN_COLS = (
    tokens.c.id,
    tokens.c.accessor,
    tokens.c.principal_id,
    tokens.c.parent_id,
    tokens.c.scopes,
    tokens.c.bound_cidrs,
    tokens.c.ttl,
    tokens.c.created_at,
    tokens.c.expires_at,
    tokens.c.max_expires_at,
    tokens.c.num_uses,
    tokens.c.uses_remaining,
    tokens.c.revoked_at,
    principals.c.type,
    principals.c.name,
    principals.c.disabled_at,
)


# The token look-up every request makes: scopes and CIDRs as their stored text, which the service parses
# once per distinct text (the same token comes back again and again).
def token_by_hash() -> Select[Any]:
    """The token with the HMAC `token_hash` joined to its principal (see TokenByHash)."""
    return (
        select(
            *(
                type_coerce(c, Text).label(c.name) if c.name in ("scopes", "bound_cidrs") else c
                for c in _TOKEN_COLS
            )
        )
        .join(principals, principals.c.id == tokens.c.principal_id)
        .where(tokens.c.token_hash == bindparam("token_hash"))
    )


TOKEN_BY_HASH = Statement(token_by_hash)
TOKEN_FIELDS = tuple(c.name for c in _TOKEN_COLS)
USE_ONCE = Statement(
    lambda: (
        update(tokens)
        .where(tokens.c.id == bindparam("token_id"), tokens.c.uses_remaining > 0)
        .values(uses_remaining=tokens.c.uses_remaining - 1)
    )
)


@dataclass(frozen=True, slots=True)
class TokenByHash:
    """A token row joined to its principal, as the token look-up returns it (scopes, CIDRs as text)."""

    id: int
    accessor: str
    principal_id: int
    parent_id: int | None
    scopes: str
    bound_cidrs: str
    ttl: int
    created_at: datetime
    expires_at: datetime
    max_expires_at: datetime
    num_uses: int | None
    uses_remaining: int | None
    revoked_at: datetime | None
    type: str
    name: str
    disabled_at: datetime | None


async def get_token_by_hash(tx: Tx, token_hash: bytes) -> TokenByHash | None:
    """The token with this HMAC joined to its principal, or None."""
    row = await tx.one(TOKEN_BY_HASH, {"token_hash": token_hash})
    return TokenByHash(*row) if row is not None else None


async def use_once(tx: Tx, token_id: int) -> bool:
    """Spend one use of a use-limited token; False when none is left."""
    return await tx.execute(USE_ONCE, {"token_id": token_id}) == 1


async def get_token_by_accessor(conn: AsyncConnection, accessor: str) -> TokenRow | None:
    """The token with this accessor joined to its principal, or None."""
    result = await conn.execute(
        select(*_TOKEN_COLS)
        .join(principals, principals.c.id == tokens.c.principal_id)
        .where(tokens.c.accessor == accessor)
    )
    return result.first()


async def get_token(conn: AsyncConnection, token_id: int) -> TokenRow | None:
    """A token by id joined to its principal, or None."""
    result = await conn.execute(
        select(*_TOKEN_COLS)
        .join(principals, principals.c.id == tokens.c.principal_id)
        .where(tokens.c.id == token_id)
    )
    return result.first()


async def lock_chain(conn: AsyncConnection, token_id: int) -> list[TokenRow]:
    """A token and every ancestor up to its root, each row locked until the transaction ends (on
    PostgreSQL; SQLite's transactions already hold the one write lock), root first.

    A revocation updates these rows, so it either commits before this reads them (and the caller sees
    it) or waits until the caller's transaction has committed (and then revokes what it inserted)."""
    ids: list[int] = []
    cursor: int | None = token_id
    while cursor is not None and cursor not in ids:
        ids.append(cursor)
        cursor = (await conn.execute(select(tokens.c.parent_id).where(tokens.c.id == cursor))).scalar()
    # Locked in one statement in id order (ancestors are older, so root first), the order revoke_tree
    # takes them in, so the two never wait on each other in a cycle.
    result = await conn.execute(
        select(*_TOKEN_COLS)
        .join(principals, principals.c.id == tokens.c.principal_id)
        .where(tokens.c.id.in_(ids))
        .order_by(tokens.c.id)
        .with_for_update(of=tokens)
    )
    return list(result.all())


async def list_tokens(
    conn: AsyncConnection, *, now: datetime, include_inactive: bool, limit: int
) -> list[TokenRow]:
    """Tokens joined to their principals, newest first; only live ones unless `include_inactive`."""
    query = select(*_TOKEN_COLS).join(principals, principals.c.id == tokens.c.principal_id)
    if not include_inactive:
        query = query.where(tokens.c.revoked_at.is_(None), tokens.c.expires_at > now)
    result = await conn.execute(query.order_by(tokens.c.id.desc()).limit(limit))
    return list(result.all())


async def add_token(
    conn: AsyncConnection,
    *,
    token_hash: bytes,
    accessor: str,
    principal_id: int,
    parent_id: int | None,
    scopes: list[Any],
    bound_cidrs: list[str],
    ttl: int,
    now: datetime,
    expires_at: datetime,
    max_expires_at: datetime,
    num_uses: int | None,
) -> int:
    """Insert a token and return its id."""
    result = await conn.execute(
        insert(tokens)
        .values(
            token_hash=token_hash,
            accessor=accessor,
            principal_id=principal_id,
            parent_id=parent_id,
            scopes=scopes,
            bound_cidrs=bound_cidrs,
            ttl=ttl,
            created_at=now,
            expires_at=expires_at,
            max_expires_at=max_expires_at,
            num_uses=num_uses,
            uses_remaining=num_uses,
        )
        .returning(tokens.c.id)
    )
    return int(result.scalar_one())


async def set_expiry(conn: AsyncConnection, token_id: int, expires_at: datetime) -> None:
    """Move a token's expiry (renewal)."""
    await conn.execute(update(tokens).where(tokens.c.id == token_id).values(expires_at=expires_at))


async def revoke_tree(conn: AsyncConnection, root_ids: Sequence[int], now: datetime) -> int:
    """Revoke tokens and all their descendants; returns how many rows changed."""
    changed = 0
    frontier = list(root_ids)
    seen: set[int] = set()
    while frontier:
        seen.update(frontier)
        result = await conn.execute(
            update(tokens)
            .where(tokens.c.id.in_(frontier), tokens.c.revoked_at.is_(None))
            .values(revoked_at=now)
        )
        changed += result.rowcount
        kids = await conn.execute(select(tokens.c.id).where(tokens.c.parent_id.in_(frontier)))
        frontier = [k for (k,) in kids.all() if k not in seen]
    return changed


async def token_ids_of(conn: AsyncConnection, principal_id: int) -> list[int]:
    """Every token id issued to a principal."""
    result = await conn.execute(select(tokens.c.id).where(tokens.c.principal_id == principal_id))
    return [row[0] for row in result.all()]
