"""Move a whole broker database onto an empty, migrated PostgreSQL (`strongroom-server db copy`).

Rows move as they are stored: ciphertexts, wrapped data keys, bindings, token hashes and the audit chain
keep their bytes and ids, so the same keyring and audit key serve and verify them on the target. No value
is decrypted to copy it; a sample is decrypted afterwards only to prove the keyring still opens them."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from broker.audit.verify import Report
from broker.crypto.envelope import secret_aad
from broker.crypto.keyring import Sealed
from broker.db import migrate
from broker.db.engine import make_engine
from broker.errors import BrokerError, Conflict, Invalid
from broker.repositories import copying as repo
from broker.services.audit import chaining
from broker.services.runtime import Runtime

BATCH = 500


@dataclass(frozen=True)
class Copied:
    """What `copy_rows` moved: rows per table (in copy order) and the schema revision of both sides."""

    revision: str
    tables: list[tuple[str, int]] = field(default_factory=list)

    @property
    def rows(self) -> int:
        """Rows copied in all."""
        return sum(n for _, n in self.tables)


@dataclass(frozen=True)
class Verified:
    """The checks run on the target after the copy."""

    counts_match: bool
    audit: Report
    sampled: int
    # Sampled values the keyring did not open, as "name version N (environment id E)"; empty when all did.
    undecryptable: list[str] = field(default_factory=list)


async def _revision(url: str) -> str | None:
    engine = make_engine(url, pool_size=1)
    try:
        return await migrate.current_revision(engine)
    finally:
        await engine.dispose()


async def copy_rows(*, source_url: str, target_url: str, batch: int = BATCH) -> Copied:
    """Copy every row of the source into the empty target in one transaction: all or nothing.

    Refused (Invalid) unless the target is PostgreSQL and both sides are at this broker's newest schema
    revision; refused (Conflict) when any target table holds a row."""
    if not target_url.startswith("postgresql"):
        raise Invalid("--to: the target must be a PostgreSQL URL (postgresql://...)")
    if source_url == target_url:
        raise Invalid("--from/--to: the source and the target are the same database")
    head = migrate.head_revision(target_url)
    for url, option in ((source_url, "--from"), (target_url, "--to")):
        current = await _revision(url)
        if current != head:
            raise Invalid(
                f"{option}: the database schema is at {current or 'nothing'} but this broker needs {head}; "
                "run `strongroom-server db upgrade` on it first (nothing was copied)"
            )
    assert head is not None
    source = make_engine(source_url, pool_size=1)
    target = make_engine(target_url, pool_size=1)
    copied: list[tuple[str, int]] = []
    try:
        async with target.begin() as dst:
            filled = await repo.first_filled(dst)
            if filled is not None:
                raise Conflict(
                    f"--to: table {filled} already holds rows; db copy only fills an empty database "
                    "(nothing was copied)"
                )
            # One read transaction: every table comes from the same snapshot of the source.
            async with source.connect() as src, src.begin():
                for name, expected, n, landed in await repo.copy_tables(src, dst, batch=batch):
                    if not (n == expected == landed):
                        raise Conflict(
                            f"--to: table {name}: {expected} rows in the source, {n} read, {landed} "
                            "written; the copy was rolled back"
                        )
                    copied.append((name, n))
            await repo.move_sequences_past_ids(dst)
    finally:
        await source.dispose()
        await target.dispose()
    return Copied(revision=head, tables=copied)


async def _undecryptable(rt: Runtime, picked: list[Any]) -> list[str]:
    """The sampled stored values the runtime's keyring does not open (the plaintexts are dropped)."""
    keyring = rt.keys.keyring
    failed = []
    for project_id, env_id, name, version, ct, wrapped, kek in picked:
        aad = secret_aad(project_id=project_id, environment_id=env_id, name=name, version=version)
        try:
            await asyncio.to_thread(keyring.open, Sealed(ciphertext=ct, wrapped_dek=wrapped, kek_id=kek), aad)
        except BrokerError:
            failed.append(f"{name} version {version} (environment id {env_id})")
    return failed


async def source_undecryptable(rt: Runtime, *, source_url: str, sample: int) -> tuple[int, list[str]]:
    """Before copying: how many stored values of the source were sampled, and which of them the
    configured keyring does not open (a wrong keyring is then refused with nothing written)."""
    engine = make_engine(source_url, pool_size=1)
    try:
        async with engine.connect() as conn:
            picked = await repo.sample_versions(conn, limit=sample)
    finally:
        await engine.dispose()
    return len(picked), await _undecryptable(rt, picked)


async def verify_target(rt: Runtime, *, copied: Copied, sample: int = 20) -> Verified:
    """Check the target after the copy: row counts, the audit chain against the checkpoints with the
    configured keys, and that a sample of stored values decrypts with the keyring (values are dropped)."""
    async with rt.engine.connect() as conn:
        counts = {t.name: await repo.count(conn, t) for t in repo.tables()}
        picked = await repo.sample_versions(conn, limit=sample)
    # Verifying links any events still pending, which adds rows to the audit tables only.
    counts_match = all(counts[name] == n for name, n in copied.tables)
    failed = await _undecryptable(rt, picked)
    report = await chaining.verify_database(rt)
    return Verified(counts_match=counts_match, audit=report, sampled=len(picked), undecryptable=failed)
