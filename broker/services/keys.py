"""Key-encryption-key maintenance: re-wrap data keys under the current KEK, online and resumable;
running brokers' key heartbeats; binding secrets written before bindings existed."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from broker.crypto import binding
from broker.crypto.envelope import secret_aad
from broker.crypto.keyring import Sealed
from broker.errors import Conflict
from broker.repositories import brokers as brokers_repo
from broker.repositories import secrets as repo
from broker.services.runtime import Runtime

log = logging.getLogger("strongroom.keys")

# A running broker stat()s its keyring file every KEY_CHECK_SECONDS and reports the key ids it holds
# every HEARTBEAT_SECONDS (and at once after a reload); one not heard from for STALE_AFTER is taken to
# be gone (a crashed process leaves its row behind).
KEY_CHECK_SECONDS = 2.0
HEARTBEAT_SECONDS = 10.0
STALE_AFTER = timedelta(seconds=3 * HEARTBEAT_SECONDS)


@dataclass(frozen=True)
class RewrapReport:
    """How a re-wrap pass went."""

    rewrapped: int
    skipped: int
    current: str
    # Data keys already under `current` when the pass began.
    already: int = 0


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
    """Re-wrap every data key not under the current KEK; value ciphertext is never touched.

    Refused (Conflict) while a running broker does not hold the current KEK as its current key: it could
    not read the moved rows, and would keep writing new ones under an old key."""
    keyring = rt.keys.keyring
    remote = rt.keys.remote
    lacking = await brokers_lacking(rt, keyring.current_id)
    if lacking:
        raise Conflict(
            f"keys rewrap: {len(lacking)} running broker(s) do not use key {keyring.current_id} yet: "
            f"{'; '.join(lacking)}. A broker reloads a changed keyring file within {KEY_CHECK_SECONDS:g} s "
            f"and reports within {HEARTBEAT_SECONDS:g} s; one whose keyring comes from STRONGROOM_KEYRING "
            "must be restarted with the new keyring. Nothing was re-wrapped."
        )
    async with rt.engine.begin() as conn:
        already = await repo.count_under(conn, keyring.current_id)

    async def transform(sealed: Sealed, aad: bytes) -> Sealed:
        if sealed.kek_id in remote or keyring.current_id in remote:
            # AWS KMS / Vault transit on either side: blocking SDK calls, off the event loop.
            return await asyncio.to_thread(keyring.rewrap, sealed, aad)
        return keyring.rewrap(sealed, aad)

    async def fetch(conn: AsyncConnection, current: str, after: int, limit: int) -> list[Any]:
        return await repo.versions_not_under(conn, current, after_id=after, limit=limit)

    report = await _walk(rt, fetch=fetch, transform=transform, batch=batch, on_batch=on_batch)
    return RewrapReport(report.rewrapped, report.skipped, report.current, already)


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


async def heartbeat(rt: Runtime) -> None:
    """Record which KEK ids this process holds now (and drop rows of brokers long gone)."""
    keyring = rt.keys.keyring
    now = rt.clock()
    async with rt.engine.begin() as conn:
        await brokers_repo.beat(
            conn,
            instance=rt.instance,
            host=rt.instance.rsplit(":", 2)[0],
            pid=os.getpid(),
            current=keyring.current_id,
            kek_ids=keyring.ids,
            now=now,
        )
        await brokers_repo.prune(conn, now - 10 * STALE_AFTER)


async def forget(rt: Runtime) -> None:
    """Remove this process's heartbeat row (clean shutdown)."""
    async with rt.engine.begin() as conn:
        await brokers_repo.forget(conn, rt.instance)


async def brokers_lacking(rt: Runtime, key_id: str) -> list[str]:
    """Running brokers (heard from within STALE_AFTER) whose current key is not `key_id`, described."""
    async with rt.engine.begin() as conn:
        rows = await brokers_repo.seen_since(conn, rt.clock() - STALE_AFTER)
    return [
        f"{row.host} pid {row.pid} (current {row.current_kek}; holds {', '.join(row.kek_ids)})"
        for row in rows
        if row.current_kek != key_id or key_id not in row.kek_ids
    ]


async def watch(rt: Runtime, stop: asyncio.Event) -> None:
    """Until `stop`: reload the keyring file when it changes and report the held keys (a broker's
    background task; the first report is made before the broker serves, by the caller)."""
    last = time.monotonic()
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), KEY_CHECK_SECONDS)
            break
        except TimeoutError:
            pass
        changed = rt.refresh_keys()
        if changed or time.monotonic() - last >= HEARTBEAT_SECONDS:
            try:
                await heartbeat(rt)
                last = time.monotonic()
            except Exception as exc:  # the database may be briefly away; the next beat tries again
                log.warning("key heartbeat failed: %s", type(exc).__name__)


async def bind_unbound(rt: Runtime, *, batch: int = 200) -> int:
    """Bind every secret that has no binding yet (rows written before revision 0004) to the path and
    current version the database names now; returns how many were bound. Run once after upgrading:
    it trusts the database as it is at that moment."""
    done = after = 0
    while True:
        async with rt.engine.begin() as conn:
            rows = await repo.unbound_secrets(conn, after_id=after, limit=batch)
            if not rows:
                break
            for sid, project_id, project, env_id, environment, name, version in rows:
                tag = binding.compute(
                    rt.keys.binding_key,
                    project_id=project_id,
                    project=project,
                    environment_id=env_id,
                    environment=environment,
                    secret_id=sid,
                    name=name,
                    version=version,
                )
                if await repo.set_binding(conn, sid, version=version, binding=tag):
                    done += 1
                after = sid
    return done
