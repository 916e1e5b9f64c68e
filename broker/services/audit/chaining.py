"""Linking and checkpoints: the chainer links committed events in id order, one pass at a time across
every broker process (pg_advisory_xact_lock), so requests never wait for the chain; it runs
synchronously before every checkpoint, list, export and verify, so those always see a linked chain.
Checkpoints are signed here, published to the external directory, and the database is checked
against them (whole-chain verification, and the start-up rollback check)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncConnection

from broker.audit.canonical import GENESIS, format_time, record_hash
from broker.audit.checkpoint import CheckpointError, PublicKey, SignedCheckpoint
from broker.audit.checkpoint import parse as parse_checkpoint
from broker.audit.sinks import SinkError, describe
from broker.audit.verify import ChainVerifier, Report
from broker.repositories import audit as audit_repo
from broker.services.audit.events import BATCH, to_record
from broker.services.audit.other_sinks import FAILURE_REPORT_EVERY
from broker.services.audit.writing import record_system
from broker.services.runtime import Runtime

log = logging.getLogger("strongroom.audit")


@dataclass(frozen=True)
class ChainPass:
    """What one chain pass did."""

    linked: int
    head_seq: int
    checkpoint: SignedCheckpoint | None


async def chain(rt: Runtime, *, checkpoints: bool = True, force_checkpoint: bool = False) -> ChainPass:
    """Link every committed, unlinked event (oldest id first); then sign a checkpoint if one is due."""
    trail = rt.audit
    linked = 0
    made: SignedCheckpoint | None = None
    async with trail.chain_lock():
        while True:
            async with rt.engine.begin() as conn:
                await audit_repo.lock_chain(conn)
                seq, prev = await audit_repo.head(conn)
                head = prev or GENESIS
                rows = await audit_repo.pending(conn, limit=BATCH)
                links = []
                names = rows[0]._fields if rows else ()
                for row in rows:
                    seq += 1
                    digest = record_hash(to_record(row, names=names, seq=seq, prev_hash=head))
                    links.append((int(row.id), seq, head, digest))
                    head = digest
                if links:
                    await audit_repo.link(conn, links)
                    # Only events that may have key rows (a name, or fingerprints) pay for the update.
                    keyed = [
                        (event_id, n)
                        for (event_id, n, _, _), row in zip(links, rows, strict=True)
                        if row.secret_name is not None or row.fingerprints is not None
                    ]
                    await audit_repo.link_keys(conn, keyed)
                more = len(rows) == BATCH
                if checkpoints and not more and trail.read_only is None:
                    made = await _checkpoint_if_due(conn, rt, seq, head, force=force_checkpoint) or made
            linked += len(links)
            trail.head_seq = max(trail.head_seq, seq)
            if not more:
                break
        trail.counters["chain_passes"] += 1
        trail.counters["linked"] += linked
        if checkpoints and trail.read_only is None:
            await _publish(rt)
    return ChainPass(linked, trail.head_seq, made)


async def _checkpoint_if_due(
    conn: AsyncConnection, rt: Runtime, seq: int, head: str, *, force: bool
) -> SignedCheckpoint | None:
    trail = rt.audit
    last = await audit_repo.last_checkpoint(conn)
    last_seq = int(last.seq) if last is not None else 0
    trail.checkpoint_seq = last_seq
    if seq == 0 or last_seq >= seq:
        return None
    now = rt.clock()
    if trail.started_at is None:
        trail.started_at = now
    if not force:
        age = (now - (last.signed_at if last is not None else trail.started_at)).total_seconds()
        if seq - last_seq < trail.checkpoint_every and age < trail.checkpoint_interval:
            return None
    # A checkpoint's time never runs backwards, even when the wall clock does (a clock_anomaly is recorded).
    when = max(now, last.signed_at) if last is not None else now
    signed = trail.signer.sign(seq=seq, head=head, time=format_time(when))
    await audit_repo.add_checkpoint(
        conn, seq=seq, head=head, signed_at=when, key_id=signed.checkpoint.key_id, document=signed.document()
    )
    trail.checkpoint_seq = seq
    trail.counters["checkpoints"] += 1
    return signed


async def _publish(rt: Runtime) -> None:
    """Copy checkpoints the database holds and the directory does not yet, oldest first."""
    trail = rt.audit
    async with rt.engine.connect() as conn:
        docs = await audit_repo.checkpoint_documents(conn, trail.published_seq + 1, None)
    for doc in docs:
        signed = parse_checkpoint(doc)
        try:
            await asyncio.to_thread(trail.checkpoints.write, signed)
        except OSError as exc:
            health = trail.sink_health("checkpoints")
            health.ok, health.failures, health.last_error = False, health.failures + 1, describe(exc)
            trail.counters["checkpoint_publish_failures"] += 1
            log.error(
                "cannot write checkpoint %d to %s: %s", signed.seq, trail.checkpoints.path, describe(exc)
            )
            mono = time.monotonic()
            if health.reported_at is None or mono - health.reported_at >= FAILURE_REPORT_EVERY:
                health.reported_at = mono
                with contextlib.suppress(Exception):
                    await record_system(
                        rt,
                        "audit.checkpoint_failure",
                        outcome="error",
                        reason=f"checkpoint directory {trail.checkpoints.path}: {describe(exc)}",
                    )
            return
        trail.sink_health("checkpoints").ok = True
        trail.published_seq = signed.seq


async def checkpoint_now(rt: Runtime) -> SignedCheckpoint | None:
    """Link everything and sign a checkpoint of the head now (None when there is nothing new to sign)."""
    return (await chain(rt, force_checkpoint=True)).checkpoint


async def rollback_problem(rt: Runtime, latest: SignedCheckpoint | None) -> str | None:
    """Why the database cannot be the one the newest external checkpoint vouches for (None: it is)."""
    if latest is None:
        return None
    trail = rt.audit
    public = trail.signer.public
    where = trail.checkpoints.path
    if not public.verifies(latest):
        return (
            f"the newest checkpoint in {where} (seq {latest.seq}) is not signed by the configured key "
            f"{public.key_id}; to change keys, start a new checkpoint directory and keep the old one"
        )
    async with rt.engine.connect() as conn:
        seq, _ = await audit_repo.head(conn)
        row = await audit_repo.event_at(conn, latest.seq)
    if seq < latest.seq or row is None:
        return (
            f"the database is behind the last checkpoint: it holds {seq} linked audit events, but the "
            f"checkpoint signed at {latest.checkpoint.time} in {where} vouches for {latest.seq} "
            "(was the database restored from an older backup?)"
        )
    if record_hash(to_record(row)) != latest.checkpoint.head:
        return (
            f"the database's audit event {latest.seq} does not match the checkpoint signed at "
            f"{latest.checkpoint.time} in {where} (the database was altered or replaced)"
        )
    report = await _verify_rows(rt, ChainVerifier(public, [latest]), latest.seq, seq)
    if not report.ok:
        return f"the audit chain after the last checkpoint is broken: {report.problem}"
    return None


async def _verify_rows(rt: Runtime, verifier: ChainVerifier, low: int, high: int) -> Report:
    cursor = low
    while cursor <= high:
        async with rt.engine.connect() as conn:
            rows = await audit_repo.events_between(conn, cursor, high, limit=BATCH)
        if not rows:
            break
        names = rows[0]._fields
        for row in rows:
            if not verifier.feed(to_record(row, names=names)):
                return verifier.finish()
        cursor = int(rows[-1].seq) + 1
    return verifier.finish()


async def _as_of(rt: Runtime) -> tuple[int, str, datetime]:
    """(head seq, head hash, time) read while no chain pass runs, so no checkpoint is half-made."""
    async with rt.engine.begin() as conn:
        await audit_repo.lock_chain(conn)
        seq, prev = await audit_repo.head(conn)
        return seq, prev or GENESIS, rt.clock()


async def verify_database(rt: Runtime, *, public: PublicKey | None = None) -> Report:
    """Verify the whole chain in the database against every checkpoint (directory and table), streaming."""
    await chain(rt)
    trail = rt.audit
    seq, _, as_of = await _as_of(rt)
    signed = await known_checkpoints(rt, 0, None)
    async with rt.engine.connect() as conn:
        low = await audit_repo.first_seq(conn)
    verifier = ChainVerifier(public or trail.signer.public, signed, as_of=format_time(as_of), from_start=True)
    return await _verify_rows(rt, verifier, max(low, 1), seq)


async def known_checkpoints(rt: Runtime, low: int, high: int | None) -> list[SignedCheckpoint]:
    """Checkpoints in [low, high] from the external directory and the database table (deduplicated)."""
    trail = rt.audit
    try:
        found = {c.document(): c for c in await asyncio.to_thread(trail.checkpoints.between, low, high)}
    except SinkError as exc:
        log.error("%s", exc)
        found = {}
    async with rt.engine.connect() as conn:
        for doc in await audit_repo.checkpoint_documents(conn, low, high):
            with contextlib.suppress(CheckpointError):
                signed = parse_checkpoint(doc)
                found.setdefault(signed.document(), signed)
    return sorted(found.values(), key=lambda c: (c.seq, c.checkpoint.time))
