"""Sealing and opening a database secret's versions, and the binding that ties a row to its place.

A version's value is sealed under the keyring's current KEK with its (project, environment, name,
version) as associated data; the secret row's binding is a keyed MAC over the ids and names it is served
as, so a database edit of a slug, a name or `current_version` is refused before any value is served.
A remote KEK (AWS KMS, Vault transit) is a blocking call: it runs in a worker thread, and a unit of work
that cannot wait raises MustWait before it writes anything.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from broker.crypto import binding
from broker.crypto.envelope import secret_aad
from broker.crypto.keyring import Sealed
from broker.db.units import Tx
from broker.errors import KeyUnavailable
from broker.repositories import secrets as repo
from broker.services.runtime import Runtime


async def open_version(
    rt: Runtime, *, project_id: int, env_id: int, name: str, version: int, ct: bytes, wrapped: bytes, kek: str
) -> str:
    """One stored version's value."""
    aad = secret_aad(project_id=project_id, environment_id=env_id, name=name, version=version)
    return await open_sealed(rt, Sealed(ciphertext=ct, wrapped_dek=wrapped, kek_id=kek), aad)


async def open_sealed(rt: Runtime, sealed: Sealed, aad: bytes) -> str:
    """Decrypt, waiting on a remote key service where the KEK is remote."""
    if sealed.kek_id not in rt.keys.remote:
        return open_local(rt, sealed, aad)
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


def open_local(rt: Runtime, sealed: Sealed, aad: bytes) -> str:
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


@dataclass(frozen=True, slots=True)
class Place:
    """What a secret row is served as: its project and environment (ids and slugs), its id and name."""

    project_id: int
    project: str
    env_id: int
    environment: str
    secret_id: int
    name: str

    def aad(self, version: int) -> bytes:
        """The associated data a version of this secret is sealed with."""
        return secret_aad(
            project_id=self.project_id, environment_id=self.env_id, name=self.name, version=version
        )


def served_as(rt: Runtime, stored: bytes | None, at: Place, *, current_version: int) -> None:
    """IntegrityError unless the secret row is bound to this project, environment, name and current
    version (a database edit of a slug, a name or `current_version` does not match its binding)."""
    binding.check(
        rt.keys.binding_key,
        stored,
        project_id=at.project_id,
        project=at.project,
        environment_id=at.env_id,
        environment=at.environment,
        secret_id=at.secret_id,
        name=at.name,
        version=current_version,
    )


def bind(rt: Runtime, at: Place, *, version: int) -> bytes:
    """The binding a write stores with the secret's new current version (see served_as)."""
    return binding.compute(
        rt.keys.binding_key,
        project_id=at.project_id,
        project=at.project,
        environment_id=at.env_id,
        environment=at.environment,
        secret_id=at.secret_id,
        name=at.name,
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


async def seal_version(rt: Runtime, at: Place, *, version: int, data: bytes) -> Sealed:
    """`data` sealed as version `version` of the secret at `at` (the AAD binds both)."""
    return await _seal(rt, data, at.aad(version))


async def store_version(
    tx: Tx,
    rt: Runtime,
    at: Place,
    *,
    version: int,
    data: bytes | Sealed,
    author_id: int,
    now: datetime,
    advance: tuple[int, bool] | None = None,
    events: Sequence[Mapping[str, Any]] = (),
) -> bool:
    """Seal `data` (unless `seal_version` already did) as version `version` of a secret and make it
    current, bound to what it is served as; with `advance` (the version it replaces, the sensitivity),
    False if the secret moved on meanwhile; with `events`, they are written in the same statement
    (repositories.secrets.add_version)."""
    sealed = data if isinstance(data, Sealed) else await seal_version(rt, at, version=version, data=data)
    return await repo.add_version(
        tx,
        secret_id=at.secret_id,
        version=version,
        ciphertext=sealed.ciphertext,
        wrapped_dek=sealed.wrapped_dek,
        kek_id=sealed.kek_id,
        author_id=author_id,
        now=now,
        binding=bind(rt, at, version=version),
        advance=advance,
        events=events,
    )
