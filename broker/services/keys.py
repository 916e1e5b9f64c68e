"""Key-encryption-key maintenance: re-wrap data keys under the current KEK, online and resumable."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

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


async def rewrap(
    rt: Runtime, *, batch: int = 200, on_batch: Callable[[int], None] | None = None
) -> RewrapReport:
    """Re-wrap every data key not under the current KEK; value ciphertext is never touched.

    Each batch commits on its own, and each row is updated only if still under its old key,
    so an interrupted run resumes where it stopped and a rerun changes nothing.
    """
    keyring = rt.keys.keyring
    current = keyring.current_id
    done = skipped = 0
    after = 0
    while True:
        async with rt.engine.begin() as conn:
            rows = await repo.versions_not_under(conn, current, after_id=after, limit=batch)
            if not rows:
                break
            for row_id, project_id, env_id, name, version, ct, wrapped, kek in rows:
                aad = secret_aad(project_id=project_id, environment_id=env_id, name=name, version=version)
                sealed = Sealed(ciphertext=ct, wrapped_dek=wrapped, kek_id=kek)
                if kek in rt.keys.remote or current in rt.keys.remote:
                    # AWS KMS / Vault transit on either side: blocking SDK calls, off the event loop.
                    new = await asyncio.to_thread(keyring.rewrap, sealed, aad)
                else:
                    new = keyring.rewrap(sealed, aad)
                if await repo.rewrap_row(
                    conn, row_id, old_kek=kek, wrapped_dek=new.wrapped_dek, kek_id=new.kek_id
                ):
                    done += 1
                else:
                    skipped += 1
                after = row_id
        if on_batch is not None:
            on_batch(done)
    return RewrapReport(rewrapped=done, skipped=skipped, current=current)


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
    current = keyring.current_id
    done = skipped = 0
    after = 0
    while True:
        async with rt.engine.begin() as conn:
            rows = await repo.versions_under(conn, current, after_id=after, limit=batch)
            if not rows:
                break
            for row_id, project_id, env_id, name, version, ct, wrapped, kek in rows:
                aad = secret_aad(project_id=project_id, environment_id=env_id, name=name, version=version)
                sealed = Sealed(ciphertext=ct, wrapped_dek=wrapped, kek_id=kek)
                new = await asyncio.to_thread(keyring.refresh, sealed, aad)
                if new.wrapped_dek != wrapped and await repo.rewrap_row(
                    conn, row_id, old_kek=kek, wrapped_dek=new.wrapped_dek, kek_id=kek
                ):
                    done += 1
                else:
                    skipped += 1
                after = row_id
        if on_batch is not None:
            on_batch(done)
    return RewrapReport(rewrapped=done, skipped=skipped, current=current)
