"""Key-encryption-key maintenance: re-wrap data keys under the current KEK, online and resumable."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from broker.crypto.envelope import secret_aad
from broker.crypto.keyring import Sealed
from broker.repositories import secrets as repo
from broker.services.runtime import Runtime


@dataclass(frozen=True)
class RewrapReport:
    """How a re-wrap pass went."""

    rewrapped: int
    skipped: int
    current: str


Fetch = Callable[[AsyncConnection, str, int, int], Awaitable[list[Any]]]
Transform = Callable[[Sealed, bytes], Awaitable[Sealed]]


async def _walk(
    rt: Runtime, *, fetch: Fetch, transform: Transform, batch: int, on_batch: Callable[[int], None] | None
) -> RewrapReport:
    """Re-wrap rows batch by batch; each batch commits on its own and each row changes only if its
    wrapped key is still the one read, so an interrupted run resumes and a rerun changes nothing."""
    current = rt.keys.keyring.current_id
    done = skipped = 0
    after = 0
    while True:
        async with rt.engine.begin() as conn:
            rows = await fetch(conn, current, after, batch)
            if not rows:
                break
            for row_id, project_id, env_id, name, version, ct, wrapped, kek in rows:
                aad = secret_aad(project_id=project_id, environment_id=env_id, name=name, version=version)
                new = await transform(Sealed(ciphertext=ct, wrapped_dek=wrapped, kek_id=kek), aad)
                if new.wrapped_dek != wrapped and await repo.rewrap_row(
                    conn, row_id, old_kek=kek, wrapped_dek=new.wrapped_dek, kek_id=new.kek_id
                ):
                    done += 1
                else:
                    skipped += 1
                after = row_id
        if on_batch is not None:
            on_batch(done)
    return RewrapReport(rewrapped=done, skipped=skipped, current=current)


async def rewrap(
    rt: Runtime, *, batch: int = 200, on_batch: Callable[[int], None] | None = None
) -> RewrapReport:
    """Re-wrap every data key not under the current KEK; value ciphertext is never touched."""
    keyring = rt.keys.keyring
    remote = rt.keys.remote

    async def transform(sealed: Sealed, aad: bytes) -> Sealed:
        if sealed.kek_id in remote or keyring.current_id in remote:
            # AWS KMS / Vault transit on either side: blocking SDK calls, off the event loop.
            return await asyncio.to_thread(keyring.rewrap, sealed, aad)
        return keyring.rewrap(sealed, aad)

    async def fetch(conn: AsyncConnection, current: str, after: int, limit: int) -> list[Any]:
        return await repo.versions_not_under(conn, current, after_id=after, limit=limit)

    return await _walk(rt, fetch=fetch, transform=transform, batch=batch, on_batch=on_batch)


async def usage(rt: Runtime, kek_id: str) -> int:
    """How many versions still need a KEK."""
    async with rt.engine.begin() as conn:
        return await repo.count_under(conn, kek_id)


async def refresh_upstream(
    rt: Runtime, *, batch: int = 200, on_batch: Callable[[int], None] | None = None
) -> RewrapReport:
    """Vault transit rewrap of every data key under the current KEK to the transit key's newest version.

    Run after `transit/keys/NAME/rotate`; then `min_decryption_version` can be raised. The DEK never
    leaves Vault and the KEK id does not change; a KEK that cannot do this (local, KMS) changes nothing.
    """
    keyring = rt.keys.keyring

    async def transform(sealed: Sealed, aad: bytes) -> Sealed:
        return await asyncio.to_thread(keyring.refresh, sealed, aad)

    async def fetch(conn: AsyncConnection, current: str, after: int, limit: int) -> list[Any]:
        return await repo.versions_under(conn, current, after_id=after, limit=limit)

    return await _walk(rt, fetch=fetch, transform=transform, batch=batch, on_batch=on_batch)
