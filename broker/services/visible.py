"""The values an environment sees through inheritance: one statement, one walk, one decrypt loop.

Every use case that serves values through inheritance loads them here: resolve (`run`, export), compile,
check, read by name, diff, the deploy bundle, and the resolve of a project kept partly upstream. The rows
of the whole chain come back in one statement (repositories.secrets.chain_rows), the choice of the value
each name shows is broker.domain.inheritance.visible, and decryption is a plain loop: a local KEK opens
inline (no coroutine or thread hop per value), remote KEKs (KMS, transit) open together in one worker
thread, off the event loop. Each value served is checked against its binding first (broker.crypto.binding),
and the request's audit event gets every value's keyed fingerprint, computed in one batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from sqlalchemy.ext.asyncio import AsyncConnection

from broker.audit.fingerprint import fingerprints
from broker.crypto import binding
from broker.crypto.envelope import secret_aad
from broker.crypto.keyring import Keyring, Sealed
from broker.db.units import ConnTx, Tx
from broker.domain.inheritance import MAX_DEPTH, Seen, StoredRow, Tree, visible
from broker.domain.request import RequestContext, ValueSeen
from broker.errors import KeyUnavailable, NotFound
from broker.repositories import secrets as repo
from broker.services.runtime import Runtime


class Chain(NamedTuple):
    """An environment's inheritance chain as stored: the tree it walks and the current rows along it."""

    project_id: int
    environment_id: int
    tree: Tree
    rows: list[StoredRow]


@dataclass(frozen=True, slots=True)
class Visible:
    """The value each name shows in an environment (nearest environment wins), still sealed."""

    project_id: int
    project: str
    rows: Mapping[str, Seen[StoredRow]]
    tree: Tree


async def load_chain(conn: AsyncConnection | Tx, project: str, environment: str) -> Chain:
    """The chain's tree and current rows in one statement; NotFound if there is no such environment."""
    tx = ConnTx(conn) if isinstance(conn, AsyncConnection) else conn
    found = await repo.chain_rows(tx, project, environment, depth=MAX_DEPTH)
    if not found:
        raise NotFound(f"projects/{project}/environments/{environment}: no such environment")
    tree: dict[int, tuple[str, int | None]] = {}
    rows: list[StoredRow] = []
    start = 0
    for r in found:
        tree[r[1]] = (r[2], r[3])
        if r[2] == environment:
            start = r[1]
        if r[4] is not None:
            rows.append(
                StoredRow(
                    r[1], r[4], r[5], r[6] or 0, r[7], r[8], r[9], r[10], r[11], bool(r[12]), bool(r[13])
                )
            )
    return Chain(found[0][0], start, tree, rows)


async def load(conn: AsyncConnection | Tx, project: str, environment: str) -> Visible:
    """What the environment sees, name by name; NotFound if there is no such environment."""
    chain = await load_chain(conn, project, environment)
    return Visible(
        chain.project_id, project, visible(chain.environment_id, chain.tree, chain.rows), chain.tree
    )


def needs_remote_key(rt: Runtime, seen: Sequence[Seen[StoredRow]]) -> bool:
    """Whether opening these values calls a remote key service (a unit of work that cannot wait then
    raises MustWait before writing anything)."""
    remote = rt.keys.remote
    return bool(remote) and any(row.kek_id in remote for row, _environment in seen)


async def reveal(rt: Runtime, *, project_id: int, project: str, seen: Sequence[Seen[StoredRow]]) -> list[str]:
    """The values, in order, each checked against its binding first; IntegrityError if one fails."""
    keyring, remote, key = rt.keys.keyring, rt.keys.remote, rt.keys.binding_key
    out: list[str] = []
    later: list[tuple[int, Sealed, bytes]] = []
    for row, environment in seen:
        ct, wrapped, kek = row.ciphertext, row.wrapped_dek, row.kek_id
        assert (
            ct is not None and wrapped is not None and kek is not None
        )  # visible() serves only readable rows
        binding.check(
            key,
            row.binding,
            project_id=project_id,
            project=project,
            environment_id=row.environment_id,
            environment=environment,
            secret_id=row.secret_id,
            name=row.name,
            version=row.version,
        )
        aad = secret_aad(
            project_id=project_id, environment_id=row.environment_id, name=row.name, version=row.version
        )
        sealed = Sealed(ciphertext=ct, wrapped_dek=wrapped, kek_id=kek)
        if kek in remote:
            later.append((len(out), sealed, aad))
            out.append("")
            continue
        try:
            out.append(keyring.open(sealed, aad).decode("utf-8"))
        except KeyUnavailable:
            later.append((len(out), sealed, aad))
            out.append("")
    if later:
        opened = await _open_later(rt, [(sealed, aad) for _i, sealed, aad in later])
        for (i, _sealed, _aad), text in zip(later, opened, strict=True):
            out[i] = text
    return out


def _open_each(keyring: Keyring, items: Sequence[tuple[Sealed, bytes]]) -> list[str]:
    return [keyring.open(sealed, aad).decode("utf-8") for sealed, aad in items]


async def _open_off_loop(rt: Runtime, items: Sequence[tuple[Sealed, bytes]]) -> list[str]:
    keyring = rt.keys.keyring
    if any(sealed.kek_id in rt.keys.remote for sealed, _aad in items):
        # AWS KMS / Vault transit calls block: all of them in one worker thread (ARCHITECTURE rule 7).
        return await asyncio.to_thread(_open_each, keyring, items)
    return _open_each(keyring, items)


async def _open_later(rt: Runtime, items: Sequence[tuple[Sealed, bytes]]) -> list[str]:
    try:
        return await _open_off_loop(rt, items)
    except KeyUnavailable:
        # A key this process lacks: perhaps a rotation it has not picked up yet.
        if not rt.refresh_keys():
            raise
        return await _open_off_loop(rt, items)


def note(
    rt: Runtime, ctx: RequestContext, reads: Sequence[tuple[str, str, int | None]], values: Sequence[str]
) -> None:
    """Put each value read, as (environment, name, version) and its keyed fingerprint, in the audit event."""
    prints = fingerprints(rt.keys.audit_key, values)
    ctx.values.extend(
        ValueSeen(environment, name, version, fp)
        for (environment, name, version), fp in zip(reads, prints, strict=True)
    )
