"""Linking and checkpoints: the chainer links committed events in id order, one pass at a time across
every broker process (a PostgreSQL advisory lock), so requests never wait for the chain; it runs
synchronously before every checkpoint, list, export and verify, so those always see a linked chain.
The background chainer only tries the lock: while another process links (everyone's events, the
chain is one), it skips its pass instead of holding a pooled connection while it waits.
Checkpoints are signed here, published to the external directory, and the database is checked
against them (whole-chain verification, and the start-up rollback check)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from broker.audit.canonical import GENESIS, format_time, parse_time, record_hash
from broker.audit.checkpoint import CheckpointError, PublicKey, SignedCheckpoint, series_problem
from broker.audit.checkpoint import parse as parse_checkpoint
from broker.audit.restore import RestoreMarker, accepted, verifies
from broker.audit.restore import sign as sign_restore
from broker.audit.sinks import SinkError, describe
from broker.audit.verify import ChainVerifier, Report
from broker.errors import Invalid, Unavailable
from broker.repositories import audit as audit_repo
from broker.services.audit import other_sinks
from broker.services.audit.events import BATCH, link_hash, system_event, to_record
from broker.services.audit.writing import record_system, touched_keys, write_events
from broker.services.runtime import Runtime

log = logging.getLogger("strongroom.audit")


@dataclass(frozen=True)
class ChainPass:
    """What one chain pass did; `skipped` when it did nothing because another process held the lock."""

    linked: int
    head_seq: int
    checkpoint: SignedCheckpoint | None
    skipped: bool = False


async def chain(
    rt: Runtime, *, checkpoints: bool = True, force_checkpoint: bool = False, wait: bool = True
) -> ChainPass:
    """Link every committed, unlinked event (oldest id first); then sign a checkpoint if one is due.

    With wait=False the pass stops (`skipped` set) as soon as another process holds the chain lock
    instead of waiting for it: that process is linking everyone's events, but may have read its
    backlog before the caller's last events committed, so the caller should try again soon.
    """
    trail = rt.audit
    linked = 0
    made: SignedCheckpoint | None = None
    async with trail.chain_lock():
        while True:
            async with rt.engine.begin() as conn:
                if wait:
                    await audit_repo.lock_chain(conn)
                elif not await audit_repo.try_lock_chain(conn):
                    trail.counters["chain_passes_skipped"] += 1
                    trail.counters["linked"] += linked
                    return ChainPass(linked, trail.head_seq, made, skipped=True)
                seq, prev = await audit_repo.head(conn)
                head = prev or GENESIS
                rows = await audit_repo.pending(conn, limit=BATCH)
                links = []
                for row in rows:
                    seq += 1
                    digest = link_hash(row._mapping, seq=seq, prev_hash=head)
                    links.append((int(row.id), seq, head, digest))
                    head = digest
                if links:
                    await audit_repo.link(conn, links)
                    # An event's key rows are written in the transaction that links it (never a null seq).
                    keyed = [
                        (event_id, n, key)
                        for (event_id, n, _, _), row in zip(links, rows, strict=True)
                        if row.secret_name is not None or row.fingerprints is not None
                        for key in touched_keys(row._mapping)
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
        # The pass read the newest checkpoint (whoever signed it): only one not yet copied needs a look.
        if checkpoints and trail.read_only is None and trail.checkpoint_seq > trail.published_seq:
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
            trail.counters["checkpoint_publish_failures"] += 1
            log.error(
                "cannot write checkpoint %d to %s: %s", signed.seq, trail.checkpoints.path, describe(exc)
            )
            if other_sinks.mark_failed(rt, "checkpoints", describe(exc)):
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


def trusted_series(
    rt: Runtime, published: list[SignedCheckpoint], markers: list[RestoreMarker]
) -> tuple[list[SignedCheckpoint], str | None]:
    """The directory's checkpoints that count once accepted restores are applied, and why the directory
    cannot be trusted (None: it can): every marker and checkpoint signed by the configured key, the series
    never shrinking or running backwards."""
    public = rt.audit.signer.public
    kept, problem = accepted(published, markers, public)
    if problem is None:
        problem = series_problem(kept, public)
    if problem is not None:
        return kept, f"the checkpoints in {rt.audit.checkpoints.path} cannot be trusted: {problem}"
    return kept, None


async def rollback_problem(
    rt: Runtime, latest: SignedCheckpoint | None, marker: RestoreMarker | None = None
) -> str | None:
    """Why the database cannot be the one the newest external checkpoint (and the newest accepted restore)
    vouches for (None: it is)."""
    trail = rt.audit
    where = trail.checkpoints.path
    if marker is not None and (latest is None or marker.seq > latest.seq):
        # Accepted, but its own checkpoint was never written: the database must still hold the acceptance.
        async with rt.engine.connect() as conn:
            row = await audit_repo.event_at(conn, marker.seq)
        if row is None or record_hash(to_record(row)) != marker.restore.head:
            return (
                f"the database does not hold the restore accepted at {marker.restore.time} in {where} "
                f"(audit event {marker.seq}): it was rolled back again or replaced"
            )
    if latest is None:
        return None
    public = trail.signer.public
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
            "(was the database restored from an older backup? If so, and the loss is accepted, run "
            "`strongroom-server audit accept-restore --from BACKUP --reason TEXT`)"
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


async def linked_records(rt: Runtime, low: int, high: int) -> AsyncIterator[list[dict[str, Any]]]:
    """The records of the linked events low..high in sequence order, a batch at a time (constant memory;
    no connection is held between batches)."""
    cursor = low
    while cursor <= high:
        async with rt.engine.connect() as conn:
            rows = await audit_repo.events_between(conn, cursor, high, limit=BATCH)
        if not rows:
            return
        names = rows[0]._fields
        yield [to_record(row, names=names) for row in rows]
        cursor = int(rows[-1].seq) + 1


async def _verify_rows(rt: Runtime, verifier: ChainVerifier, low: int, high: int) -> Report:
    async for records in linked_records(rt, low, high):
        for record in records:
            if not verifier.feed(record):
                return verifier.finish()
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
    try:
        markers = await asyncio.to_thread(trail.checkpoints.markers)
    except SinkError as exc:
        log.error("%s", exc)
        markers = []
    # A restore accepted with the configured key explains its gap instead of failing the whole chain.
    key = public or trail.signer.public
    signed, problem = accepted(signed, markers, key)
    async with rt.engine.connect() as conn:
        low = await audit_repo.first_seq(conn)
    verifier = ChainVerifier(public or trail.signer.public, signed, as_of=format_time(as_of), from_start=True)
    if problem is not None:
        verifier.fail(None, problem)
    report = await _verify_rows(rt, verifier, max(low, 1), seq)
    report.notes += [m.explain(str(trail.checkpoints.path)) for m in markers if verifies(key, m)]
    return report


async def verify_linked(
    engine: AsyncEngine, public: PublicKey, checkpoints: list[SignedCheckpoint]
) -> Report:
    """Verify a database's linked chain as it stands (nothing is linked first) against the given checkpoints:
    a backup file, or a restored database, against the checkpoints of its own time."""
    async with engine.connect() as conn:
        low = await audit_repo.first_seq(conn)
        high, _ = await audit_repo.head(conn)
    verifier = ChainVerifier(public, checkpoints, from_start=True)
    cursor = max(low, 1)
    while cursor <= high:
        async with engine.connect() as conn:
            rows = await audit_repo.events_between(conn, cursor, high, limit=BATCH)
        if not rows:
            break
        names = rows[0]._fields
        for row in rows:
            if not verifier.feed(to_record(row, names=names)):
                return verifier.finish()
        cursor = int(rows[-1].seq) + 1
    return verifier.finish()


@dataclass(frozen=True)
class Acceptance:
    """What `accept_restore` did: the marker it signed and where the superseded checkpoints went."""

    marker: RestoreMarker
    set_aside: Path
    checkpoint: SignedCheckpoint | None


async def accept_restore(
    rt: Runtime, *, backup_seq: int, backup_head: str | None, manifest: str, actor: str, reason: str
) -> Acceptance:
    """Accept that the database was restored from the backup whose audit head is (backup_seq, backup_head):
    record an audit event naming the lost range, sign a marker for the checkpoint directory that supersedes
    exactly the checkpoints signed since, set those aside, and checkpoint the continued chain at once (so
    rolling back to the same backup again is refused). Invalid when the database is not behind the directory,
    is not that backup, or its chain does not match the checkpoints it still has."""
    trail = rt.audit
    where = trail.checkpoints.path
    try:
        published = await asyncio.to_thread(trail.checkpoints.between, 0, None)
        markers = await asyncio.to_thread(trail.checkpoints.markers)
    except (OSError, SinkError) as exc:
        raise Unavailable(f"audit: {describe(exc)}") from None
    kept, problem = trusted_series(rt, published, markers)
    if problem is not None:
        raise Invalid(f"accept-restore: {problem}; nothing was accepted")
    await chain(rt, checkpoints=False)
    async with rt.engine.connect() as conn:
        seq, _ = await audit_repo.head(conn)
        at_backup = await audit_repo.event_at(conn, backup_seq) if backup_seq else None
    latest = kept[-1] if kept else None
    if latest is None or seq >= latest.seq:
        raise Invalid(
            f"accept-restore: the database holds {seq} linked audit events and the newest checkpoint in "
            f"{where} vouches for {latest.seq if latest else 0}: it is not behind, so there is no restore to "
            "accept (nothing was accepted)"
        )
    if backup_seq and (at_backup is None or record_hash(to_record(at_backup)) != backup_head):
        raise Invalid(
            f"--from: the database's audit event {backup_seq} is not the backup's head: the database was not "
            "restored from this backup (nothing was accepted)"
        )
    # The restored chain must be an earlier state of the same chain: it matches every checkpoint it reaches.
    report = await verify_linked(rt.engine, trail.signer.public, [c for c in kept if c.seq <= seq])
    if not report.ok:
        raise Invalid(
            f"accept-restore: the database's audit chain does not match the checkpoints in {where} "
            f"({report.problem}); only a restore of an earlier state can be accepted (nothing was accepted)"
        )
    superseded = [c for c in kept if c.seq > seq]
    newest = superseded[-1]
    lost = f"seq {seq + 1}..{newest.seq}"
    text = (
        f"{reason}; the database was restored to audit seq {seq} (backup manifest {manifest}); {lost} of the "
        f"replaced branch lost, superseding the checkpoint at seq {newest.seq} signed at {newest.checkpoint.time}"
    )
    event = system_event("audit.restore_accepted", now=rt.clock(), reason=text)
    event["actor_type"] = "operator"
    event["actor_name"] = actor
    async with rt.engine.begin() as conn:
        await write_events(conn, rt, [event])
    await chain(rt, checkpoints=False)
    async with rt.engine.connect() as conn:
        accepted_seq, accepted_head = await audit_repo.head(conn)
    assert accepted_head is not None
    now = max(rt.clock(), parse_time(newest.checkpoint.time))
    marker = sign_restore(
        trail.signer,
        seq=accepted_seq,
        head=accepted_head,
        restored_seq=seq,
        superseded_seq=newest.seq,
        superseded_head=newest.checkpoint.head,
        superseded_time=newest.checkpoint.time,
        time=format_time(now),
        manifest=manifest,
        accepted_by=actor,
        reason=reason,
    )
    await asyncio.to_thread(trail.checkpoints.write_marker, marker)
    folder = await asyncio.to_thread(
        trail.checkpoints.set_aside, [c.seq for c in superseded], marker_seq=accepted_seq
    )
    trail.published_seq = 0
    made = (await chain(rt, force_checkpoint=True)).checkpoint
    return Acceptance(marker=marker, set_aside=folder, checkpoint=made)


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
