"""Audit: one event per request, in the transaction of the change, before any value leaves; the hash
chain, signed checkpoints, the start-up rollback check, and the auditor's queries and exports.

Writing. `record` shapes the request's event and writes it inside the caller's transaction, so a
change and its event commit together and a read's event commits before the value is returned. With
secondary sinks (a JSON-lines file, syslog) the database insert runs in a savepoint and the event is
also written to every other sink before the commit: the request goes on when at least one sink recorded
it (the failures are reported as `audit.sink_failure` events and counters) and fails closed otherwise.

Linking. On SQLite, where every transaction already holds the one write lock, an event is linked
(seq, prev_hash, hash) in the transaction that writes it. On PostgreSQL events are inserted unlinked
and the chainer links them in id order shortly after their commit, one pass at a time across every
broker process (pg_advisory_xact_lock); requests never wait for the chain. The chainer also runs
synchronously before every checkpoint, list, export and verify, so those always see a linked chain.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import json
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from broker.audit import canonical
from broker.audit.canonical import GENESIS, JSON_FIELDS, canonical_json, format_time, record_hash
from broker.audit.checkpoint import CheckpointError, PublicKey, SignedCheckpoint, series_problem
from broker.audit.checkpoint import parse as parse_checkpoint
from broker.audit.fingerprint import fingerprint, is_fingerprint
from broker.audit.sinks import SinkError, describe
from broker.audit.verify import CSV_COLUMNS, EXPORT_FORMAT, ChainVerifier, Report, csv_row
from broker.db.units import ConnTx, MustWait, Tx
from broker.domain.request import Actor, RequestContext, ValueSeen
from broker.domain.scopes import Action, allowed
from broker.errors import Forbidden, Invalid, RateLimited, Unavailable
from broker.repositories import audit as audit_repo
from broker.services.runtime import Runtime

log = logging.getLogger("strongroom.audit")

BATCH = 1000
OUTCOMES = ("ok", "denied", "invalid", "error")
FAILURE_REPORT_EVERY = 60.0  # seconds between audit.sink_failure events for one failing sink
UNAVAILABLE = "the audit trail is unavailable; retry later"

_TEXT_LIMITS = {
    "request_id": 64,
    "actor_type": 16,
    "actor_name": 128,
    "token_accessor": 64,
    "source_addr": 64,
    "user_agent": 512,
    "client_kind": 16,
    "method": 16,
    "route": 256,
    "action": 64,
    "project": 64,
    "environment": 64,
    "secret_name": 256,
    "backend": 64,
    "upstream_path": 512,
    "upstream_version": 128,
    "outcome": 16,
    "reason": 2000,
}


class AuditUnavailable(Unavailable):
    """No sink could record the event: the request must fail and roll back."""

    def __init__(self) -> None:
        super().__init__(UNAVAILABLE)


# ---- shaping events ------------------------------------------------------------------------------


def outcome_for(status: int) -> str:
    """Outcome label for an HTTP status."""
    if status < 400:
        return "ok"
    if status in (401, 403, 429):
        return "denied"
    if status < 500:
        return "invalid"
    return "error"


def client_kind(user_agent: str | None) -> str:
    """cli, web or api, from the user agent (a hint for auditors, not a security boundary)."""
    if user_agent is None:
        return "api"
    if user_agent.startswith("strongroom-cli/"):
        return "cli"
    if user_agent.startswith("Mozilla/"):
        return "web"
    return "api"


def _text(value: str | None, key: str) -> str | None:
    if not value:
        return None
    # PostgreSQL text holds neither NUL nor lone surrogates; a refused name carrying either must still
    # be audited, so both are replaced rather than refused.
    clean = value.replace("\x00", "\\x00")
    if not clean.isascii():
        clean = clean.encode("utf-8", "replace").decode("utf-8")
    return clean[: _TEXT_LIMITS[key]]


def _values_json(values: Sequence[ValueSeen]) -> str | None:
    if not values:
        return None
    items = []
    for v in values:
        item: dict[str, Any] = {"fingerprint": v.fingerprint}
        if v.environment is not None:
            item["environment"] = v.environment
        if v.name is not None:
            item["name"] = v.name
        if v.version is not None:
            item["version"] = v.version
        items.append(item)
    return canonical_json(items).decode("ascii")


def shape(ctx: RequestContext, *, outcome: str, status: int, now: datetime) -> dict[str, Any]:
    """The request's event as column values (clipped, cleaned; never a value, only fingerprints)."""
    actor = ctx.actor
    return {
        "occurred_at": now,
        "request_id": ctx.request_id,
        "actor_id": actor.principal_id if actor else None,
        "actor_type": _text(actor.principal_type, "actor_type") if actor else "anonymous",
        "actor_name": _text(actor.name, "actor_name") if actor else None,
        "token_accessor": _text(actor.accessor, "token_accessor") if actor else None,
        "scopes": canonical_json([s.to_json() for s in actor.scopes]).decode("ascii") if actor else None,
        "source_addr": _text(ctx.source_addr, "source_addr"),
        "user_agent": _text(ctx.user_agent, "user_agent"),
        "client_kind": _text(ctx.client_kind or client_kind(ctx.user_agent), "client_kind"),
        "method": _text(ctx.method, "method") or "-",
        "route": _text(ctx.route, "route") or "-",
        "action": _text(ctx.action, "action"),
        "project": _text(ctx.project, "project"),
        "environment": _text(ctx.environment, "environment"),
        "secret_name": _text(ctx.secret_name, "secret_name"),
        "version": ctx.version,
        "fingerprints": _values_json(ctx.values),
        "backend": _text(ctx.backend, "backend"),
        "upstream_path": _text(ctx.upstream_path, "upstream_path"),
        "upstream_version": _text(ctx.upstream_version, "upstream_version"),
        "outcome": outcome,
        "status": status,
        "reason": _text(ctx.reason, "reason"),
    }


def system_event(action: str, *, now: datetime, reason: str, outcome: str = "ok") -> dict[str, Any]:
    """An event the broker records about itself (clock anomaly, sink failure, prune, rollback)."""
    return {
        "occurred_at": now,
        "request_id": "sys-" + uuid.uuid4().hex,
        "actor_type": "system",
        "actor_name": "strongroom",
        "client_kind": "system",
        "method": "-",
        "route": "-",
        "action": action,
        "outcome": outcome,
        "status": 0,
        "reason": _text(reason, "reason"),
    }


@functools.lru_cache(maxsize=4096)
def _parse_json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        # Not JSON any more (someone edited the row): keep the text, which verification then refuses.
        return text


def _json_field(value: Any) -> Any:
    # Scopes and fingerprints repeat from event to event (the same token, the same values): a small
    # cache of parsed texts saves most of the parsing when verifying or exporting a long chain. The
    # parsed lists are shared, so nothing may modify a record's lists.
    return _parse_json(value) if isinstance(value, str) and len(value) <= 4096 else _json_loads_or_text(value)


def _json_loads_or_text(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


_KEEP = frozenset((*canonical.FIELDS, "hash"))


def to_record(columns: Any, *, names: Sequence[str] | None = None, **chain: Any) -> dict[str, Any]:
    """The canonical record of an event from its column values (a mapping, or a row with its column
    `names`), plus `hash` when the row has one; `chain` (seq, prev_hash) overrides the row's. Null fields
    are left out."""
    if names is None and hasattr(columns, "_fields"):
        names = columns._fields
    pairs = zip(names, columns, strict=True) if names is not None else columns.items()
    out: dict[str, Any] = {}
    for key, raw in pairs:
        if raw is None or key not in _KEEP:
            continue
        if key == "occurred_at":
            out[key] = format_time(raw)
        elif key in JSON_FIELDS:
            out[key] = _json_field(raw)
        else:
            out[key] = raw
    out.update(chain)
    return out


def saw_value(
    rt: Runtime,
    ctx: RequestContext,
    *,
    environment: str | None,
    name: str | None,
    version: int | None,
    value: str,
) -> None:
    """Note a value the request read or wrote: its keyed fingerprint goes in the event, never the value."""
    ctx.values.append(ValueSeen(environment, name, version, fingerprint(rt.keys.audit_key, value)))


# ---- writing -------------------------------------------------------------------------------------


def _request_events(rt: Runtime, ctx: RequestContext, status: int) -> list[dict[str, Any]]:
    now = rt.clock()
    events = []
    step = rt.audit.clock_step(now)
    if step is not None:
        rt.audit.counters["clock_anomalies"] += 1
        log.error("the wall clock stepped back %.3f s", step.total_seconds())
        events.append(
            system_event(
                "audit.clock_anomaly",
                now=now,
                outcome="error",
                reason=f"the wall clock stepped back {step.total_seconds():.3f} s; sequence numbers, "
                "not times, order the audit trail",
            )
        )
    events.append(shape(ctx, outcome=outcome_for(status), status=status, now=now))
    return events


async def record(conn: AsyncConnection, rt: Runtime, ctx: RequestContext, *, status: int = 200) -> None:
    """Write the request's event inside the caller's transaction (and to every other sink, before the
    commit); raises when no sink could record it, so the caller's transaction rolls back."""
    await write_events(conn, rt, _request_events(rt, ctx, status))
    ctx.audited = True


def must_wait(rt: Runtime, tx: Tx) -> bool:
    """Whether recording in `tx` would wait on other sinks (a unit then raises MustWait up front)."""
    return bool(rt.audit.sinks) and not tx.can_wait


async def record_in(tx: Tx, rt: Runtime, ctx: RequestContext, *, status: int = 200) -> None:
    """`record` for a unit of work: the same events through the same appender."""
    if rt.audit.sinks:
        if not isinstance(tx, ConnTx):
            raise MustWait()
        await record(tx.conn, rt, ctx, status=status)
        return
    events = _request_events(rt, ctx, status)
    rt.audit.counters["events"] += len(events)
    await to_database(tx, rt, events)
    ctx.audited = True


async def record_alone(rt: Runtime, ctx: RequestContext, *, status: int) -> None:
    """Write the request's event in its own transaction (failures, and requests no service recorded).

    When the database cannot even start a transaction, the other sinks (if any) record it alone, so an
    outage's failures are still on record somewhere.
    """
    try:
        async with rt.engine.begin() as conn:
            await record(conn, rt, ctx, status=status)
        return
    except AuditUnavailable:
        raise
    except Exception as exc:
        if not rt.audit.sinks or ctx.audited:
            raise
        failure: BaseException = exc
    now = rt.clock()
    events = [shape(ctx, outcome=outcome_for(status), status=status, now=now)]
    recorded, failures, recovered = await _to_other_sinks(rt, events)
    await _report(None, rt, [("database", failure), *failures], recovered, now)
    if not recorded:
        raise AuditUnavailable()
    ctx.audited = True


def touched_keys(event: Mapping[str, Any]) -> list[audit_repo.TouchedKey]:
    """The keys an event touched, as (project, environment, name), from its own columns: its
    secret_name, and every named value in its fingerprints. A value read where it lives (`common`)
    through another environment (`production`) counts in both, so `--environment` finds it either way.

    The index behind `audit list --name`; migration 0005 holds a copy for the backfill (a test keeps
    them equal).
    """
    project, environment = (event.get("project") or "")[:64], (event.get("environment") or "")[:64]
    found: dict[audit_repo.TouchedKey, None] = {}
    if event.get("secret_name"):
        found[project, environment, event["secret_name"][:256]] = None
    prints = event.get("fingerprints")
    items = _json_loads_or_text(prints) if isinstance(prints, str) else prints or []
    for item in items if isinstance(items, list) else []:
        name = item.get("name") if isinstance(item, dict) else None
        if not isinstance(name, str) or not name:
            continue
        where = item.get("environment")
        stored = where[:64] if isinstance(where, str) and where else environment
        found[project, stored, name[:256]] = None
        if environment and stored != environment:
            found[project, environment, name[:256]] = None
    return list(found)


async def to_database(tx: Tx, rt: Runtime, events: Sequence[dict[str, Any]]) -> None:
    """The one database appender: on SQLite each event is linked into the chain in the unit's
    transaction (which holds the write lock); on PostgreSQL it is inserted unlinked for the chainer."""
    if tx.dialect.name != "sqlite":
        for event in events:
            await audit_repo.append(tx, event, touched_keys(event))
        return
    seq, prev = await audit_repo.head_of(tx)
    prev = prev or GENESIS
    for event in events:
        seq += 1
        digest = record_hash(to_record(event, seq=seq, prev_hash=prev))
        linked = {**event, "seq": seq, "prev_hash": prev, "hash": digest}
        await audit_repo.append(tx, linked, touched_keys(event))
        prev = digest
    rt.audit.head_seq = seq


async def write_events(conn: AsyncConnection, rt: Runtime, events: Sequence[dict[str, Any]]) -> None:
    """Record events in the database (inside `conn`'s transaction) and every other sink; see the module doc."""
    trail = rt.audit
    trail.counters["events"] += len(events)
    if not trail.sinks:
        await to_database(ConnTx(conn), rt, events)
        return
    failures: list[tuple[str, BaseException]] = []
    recovered: list[str] = []
    recorded = 0
    try:
        async with conn.begin_nested():
            await to_database(ConnTx(conn), rt, events)
        recorded += 1
        db_ok = True
    except Exception as exc:  # any database failure is this sink failing
        db_ok = False
        failures.append(("database", exc))
    else:
        if not trail.sink_health("database").ok:
            recovered.append("database")
    others, other_failures, other_recovered = await _to_other_sinks(rt, events)
    recorded += others
    failures += other_failures
    recovered += other_recovered
    if failures or recovered:
        await _report(conn if db_ok else None, rt, failures, recovered, events[-1]["occurred_at"])
    if not recorded:
        raise AuditUnavailable()


async def _to_other_sinks(
    rt: Runtime, events: Sequence[dict[str, Any]]
) -> tuple[int, list[tuple[str, BaseException]], list[str]]:
    """Write events to every sink besides the database: (how many recorded them, failures, recoveries)."""
    trail = rt.audit
    data = b"".join(canonical.line(to_record(event)) for event in events)
    recorded = 0
    failures: list[tuple[str, BaseException]] = []
    recovered: list[str] = []
    for sink in trail.sinks:
        try:
            await sink.write(data)
        except Exception as exc:  # any failure of a sink is reported, never raised past here
            failures.append((sink.name, exc))
        else:
            recorded += 1
            if not trail.sink_health(sink.name).ok:
                recovered.append(sink.name)
    return recorded, failures, recovered


async def _report(
    conn: AsyncConnection | None,
    rt: Runtime,
    failures: Sequence[tuple[str, BaseException]],
    recovered: Sequence[str],
    now: datetime,
) -> None:
    """Count, log and (at most once a minute per sink) record sink failures; record recoveries."""
    trail = rt.audit
    notes = []
    mono = time.monotonic()
    for name, exc in failures:
        health = trail.sink_health(name)
        why = describe(exc)
        health.ok, health.failures, health.last_error = False, health.failures + 1, why
        trail.counters[f"sink_failures:{name}"] += 1
        log.error("audit sink %s failed: %s", name, why)
        if health.reported_at is None or mono - health.reported_at >= FAILURE_REPORT_EVERY:
            health.reported_at = mono
            notes.append(
                system_event("audit.sink_failure", now=now, outcome="error", reason=f"{name}: {why}")
            )
    for name in recovered:
        health = trail.sink_health(name)
        health.ok, health.reported_at = True, None
        log.warning("audit sink %s works again", name)
        notes.append(system_event("audit.sink_recovered", now=now, reason=f"{name} records events again"))
    if not notes:
        return
    failed = {name for name, _ in failures}
    if conn is not None:
        with contextlib.suppress(Exception):
            async with conn.begin_nested():
                await to_database(ConnTx(conn), rt, notes)
    data = b"".join(canonical.line(to_record(n)) for n in notes)
    for sink in trail.sinks:
        if sink.name not in failed:
            with contextlib.suppress(Exception):
                await sink.write(data)


async def record_system(rt: Runtime, action: str, *, reason: str, outcome: str = "ok") -> None:
    """Record one system event in its own transaction."""
    async with rt.engine.begin() as conn:
        await write_events(conn, rt, [system_event(action, now=rt.clock(), reason=reason, outcome=outcome)])


# ---- the chain and checkpoints ------------------------------------------------------------------


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


async def _check_against(rt: Runtime, latest: SignedCheckpoint | None) -> str | None:
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
    signed = await _known_checkpoints(rt, 0, None)
    async with rt.engine.connect() as conn:
        low = await audit_repo.first_seq(conn)
    verifier = ChainVerifier(public or trail.signer.public, signed, as_of=format_time(as_of), from_start=True)
    return await _verify_rows(rt, verifier, max(low, 1), seq)


async def _known_checkpoints(rt: Runtime, low: int, high: int | None) -> list[SignedCheckpoint]:
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


# ---- start-up, the background chainer, retention -----------------------------------------------


async def start(rt: Runtime) -> None:
    """Start-up: check the sinks, link what is pending, compare the database with the newest external
    checkpoint (refuse, or serve read-only, when it is behind), then start the chainer."""
    trail = rt.audit
    try:
        await asyncio.to_thread(trail.checkpoints.ensure, trail.signer.public)
        for sink in trail.sinks:
            check = getattr(sink, "check", None)
            if check is not None:
                await asyncio.to_thread(check)
        published = await asyncio.to_thread(trail.checkpoints.between, 0, None)
    except (OSError, SinkError) as exc:
        raise Unavailable(f"audit: {describe(exc)}") from None
    latest = published[-1] if published else None
    await chain(rt, checkpoints=False)
    problem = series_problem(published, trail.signer.public)
    if problem is not None:
        problem = f"the checkpoints in {trail.checkpoints.path} cannot be trusted: {problem}"
    else:
        problem = await _check_against(rt, latest)
    if problem is not None:
        if trail.on_rollback == "refuse":
            raise Unavailable(
                f"audit: {problem}; refusing to serve (set STRONGROOM_AUDIT_ON_ROLLBACK=read-only to serve "
                "reads only while you investigate)"
            )
        trail.read_only = problem
        log.error("audit: %s; serving read-only: every change is refused with 503", problem)
        await record_system(rt, "audit.rollback_detected", outcome="error", reason=problem)
    trail.published_seq = latest.seq if latest is not None else 0
    trail._wake = asyncio.Event()
    trail._task = asyncio.create_task(_run(rt), name="strongroom-audit-chainer")


async def stop(rt: Runtime) -> None:
    """Stop the chainer after a last pass, and the sinks' threads."""
    trail = rt.audit
    task, trail._task, trail._wake = trail._task, None, None
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        with contextlib.suppress(Exception):
            await chain(rt)
    for sink in trail.sinks:
        await asyncio.to_thread(sink.close)


async def _run(rt: Runtime) -> None:
    trail = rt.audit
    last_prune = 0.0
    while True:
        wake = trail._wake
        if wake is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), timeout=trail.checkpoint_interval)
        wake.clear()
        try:
            await chain(rt)
            if trail.retention is not None and time.monotonic() - last_prune >= 3600:
                last_prune = time.monotonic()
                await prune(rt, older_than=trail.retention)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the chainer must survive a database outage
            trail.counters["chain_failures"] += 1
            log.error("audit chainer pass failed (%s); retrying", describe(exc))
            await asyncio.sleep(1.0)  # back off: the database is probably down


async def prune(rt: Runtime, *, older_than: timedelta) -> tuple[int, int | None]:
    """Delete events older than the newest published checkpoint signed before now - older_than.

    The checkpoint stays as the anchor the rest of the chain starts from, so it remains verifiable.
    Returns (events deleted, anchor seq).
    """
    await chain(rt)
    trail = rt.audit
    async with rt.engine.begin() as conn:
        await audit_repo.lock_chain(conn)
        anchor = await audit_repo.prune_anchor(conn, rt.clock() - older_than)
        if anchor is None or anchor.seq <= 0:
            return 0, None
        published = await asyncio.to_thread(trail.checkpoints.between, int(anchor.seq), int(anchor.seq))
        if not published:
            return 0, None
        gone = await audit_repo.prune_through(conn, int(anchor.seq))
        if gone:
            reason = (
                f"pruned {gone} events up to seq {anchor.seq} (older than {older_than.days} days); the chain "
                f"now starts from the checkpoint signed at {format_time(anchor.signed_at)}"
            )
            await write_events(conn, rt, [system_event("audit.prune", now=rt.clock(), reason=reason)])
    return gone, int(anchor.seq)


# ---- the auditor's side --------------------------------------------------------------------------

_AGE = re.compile(r"(\d{1,7})([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_when(text: str | None, *, now: datetime, field: str) -> datetime | None:
    """An ISO 8601 date or time (naive means UTC), or an age such as 90d, 12h, 30m (by the server's clock)."""
    if text is None or text == "":
        return None
    if (m := _AGE.fullmatch(text)) is not None:
        return now - timedelta(seconds=int(m.group(1)) * _UNITS[m.group(2)])
    try:
        moment = datetime.fromisoformat(text) if len(text) <= 40 else None
    except ValueError:
        moment = None
    if moment is None:
        raise Invalid(
            f"{field}: must be an ISO 8601 date or time, or an age such as 90d, 12h or 30m", field=field
        )
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _audit_grants(actor: Actor) -> list[Any]:
    return [s for s in actor.scopes if not s.deny and Action.AUDIT in s.actions]


def require_auditor(ctx: RequestContext, actor: Actor, action: str) -> None:
    """Name the request and refuse a token that holds no audit grant at all."""
    ctx.about(action)
    if not _audit_grants(actor):
        raise Forbidden("this token does not grant audit")


def _can_see(actor: Actor, project: str | None, environment: str | None) -> bool:
    return allowed(actor.scopes, Action.AUDIT, project, environment)


def _full_auditor(actor: Actor) -> bool:
    full = any(s.project == "*" and s.environments == "*" for s in _audit_grants(actor))
    denied = any(s.deny and Action.AUDIT in s.actions for s in actor.scopes)
    return full and not denied


@dataclass
class EventQuery:
    """Filters for listing events; every one is optional."""

    actor: str | None = None
    accessor: str | None = None
    project: str | None = None
    environment: str | None = None
    name: str | None = None
    action: str | None = None
    outcome: str | None = None
    since: str | None = None
    until: str | None = None
    source: str | None = None
    fingerprint: str | None = None
    cursor: int | None = None
    limit: int = 50
    oldest_first: bool = False


@dataclass
class EventPage:
    """A page of events (records with their hash), the cursor of the next page and the head."""

    events: list[dict[str, Any]]
    next_cursor: int | None
    head_seq: int
    head_hash: str | None = None
    scanned: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _conditions(q: EventQuery, now: datetime) -> tuple[list[Any], Network | None]:
    col = audit_repo.column
    where: list[Any] = []
    for key, column_name, limit in (
        ("actor", "actor_name", 128),
        ("accessor", "token_accessor", 64),
        ("project", "project", 64),
        ("environment", "environment", 64),
        ("name", "secret_name", 256),
    ):
        value = getattr(q, key)
        if value is not None:
            if len(value) > limit:
                raise Invalid(f"{key}: at most {limit} characters", field=key)
            # With a name, project and environment narrow the key index instead (see key_filter).
            if q.name is None or key in ("actor", "accessor"):
                where.append(col(column_name) == value)
    if q.action is not None:
        if not re.fullmatch(r"[a-z0-9._-]{1,64}\*?", q.action):
            raise Invalid(
                "action: an action name such as secret.read, or a prefix such as secret.*", field="action"
            )
        if q.action.endswith("*"):
            where.append(col("action").startswith(q.action[:-1], autoescape=True))
        else:
            where.append(col("action") == q.action)
    if q.outcome is not None:
        if q.outcome not in OUTCOMES:
            raise Invalid("outcome: must be one of ok, denied, invalid, error", field="outcome")
        where.append(col("outcome") == q.outcome)
    since = parse_when(q.since, now=now, field="since")
    until = parse_when(q.until, now=now, field="until")
    if since is not None:
        where.append(col("occurred_at") >= since)
    if until is not None:
        where.append(col("occurred_at") < until)
    network: Network | None = None
    if q.source is not None:
        try:
            network = ipaddress.ip_network(q.source, strict=False)
        except ValueError:
            raise Invalid("source: must be an IP address or a CIDR block", field="source") from None
        if network.num_addresses == 1:
            where.append(col("source_addr") == str(network.network_address))
            network = None
    if q.fingerprint is not None:
        if not is_fingerprint(q.fingerprint):
            raise Invalid("fingerprint: must be hmac-sha256: and 64 hex digits", field="fingerprint")
        where.append(col("fingerprints").contains(q.fingerprint, autoescape=True))
    return where, network


def key_filter(q: EventQuery) -> audit_repo.KeyFilter | None:
    """`--name` (with `--project`, `--environment`) as a filter on the key index: every event that
    touched the key, by any route (single read, reveal, resolve, export, compile, deploy bundle, named
    values), in the environment where it lives or through the environment the request named."""
    if q.name is None:
        return None
    return audit_repo.KeyFilter(q.name, q.project, q.environment)


def _visible_row(actor: Actor, row: Any, network: Network | None) -> bool:
    if not _can_see(actor, row.project, row.environment):
        return False
    if network is None:
        return True
    try:
        return ipaddress.ip_address(row.source_addr or "") in network
    except ValueError:
        return False


async def _search(
    conn: AsyncConnection, actor: Actor, where: list[Any], network: Network | None, q: EventQuery, cap: int
) -> tuple[list[dict[str, Any]], int | None, int]:
    grants = _audit_grants(actor)
    if all(s.project != "*" for s in grants):
        # Narrow in SQL to the projects the token may audit; the exact rule (globs, denies) runs below.
        where = [*where, audit_repo.column("project").in_(sorted({s.project for s in grants}))]
    found: list[dict[str, Any]] = []
    cursor, scanned = q.cursor, 0
    key = key_filter(q)
    while len(found) < q.limit and scanned < cap:
        rows = await audit_repo.search(
            conn,
            where,
            key=key,
            cursor=cursor,
            newest_first=not q.oldest_first,
            limit=min(BATCH, 2 * q.limit),
        )
        for row in rows:
            scanned += 1
            if int(row.seq) == cursor:
                continue  # the same event through a second environment (key_filter)
            cursor = int(row.seq)
            if _visible_row(actor, row, network):
                found.append(to_record(row))
                if len(found) == q.limit:
                    break
        if len(rows) < min(BATCH, 2 * q.limit):
            return found, (cursor if len(found) == q.limit else None), scanned
    return found, cursor, scanned


async def list_events(rt: Runtime, ctx: RequestContext, actor: Actor, q: EventQuery) -> EventPage:
    """Events the token may audit, filtered and paged by sequence (newest first unless asked)."""
    if not 1 <= q.limit <= 500:
        raise Invalid("limit: must be between 1 and 500", field="limit")
    where, network = _conditions(q, rt.clock())
    await chain(rt)
    async with rt.engine.begin() as conn:
        found, cursor, scanned = await _search(conn, actor, where, network, q, cap=20 * BATCH)
        head_seq, head_hash = await audit_repo.head(conn)
        await record(conn, rt, ctx)
    return EventPage(found, cursor, head_seq, head_hash, scanned)


async def fingerprint_search(rt: Runtime, ctx: RequestContext, actor: Actor, *, value: str) -> EventPage:
    """The fingerprint of a candidate value and the events (that the token may audit) that served or
    wrote exactly that value, newest first. Rate limited; the candidate's fingerprint is itself audited."""
    wait = await rt.fingerprint_limiter.take([f"accessor:{actor.accessor}", f"addr:{ctx.source_addr}"])
    if wait:
        raise RateLimited("too many fingerprint look-ups; retry later", retry_after=wait)
    digest = fingerprint(rt.keys.audit_key, value)
    ctx.values.append(ValueSeen(None, None, None, digest))
    q = EventQuery(fingerprint=digest, limit=100)
    where, _ = _conditions(q, rt.clock())
    where.append(audit_repo.column("action") != "audit.fingerprint")
    await chain(rt)
    async with rt.engine.begin() as conn:
        found, cursor, scanned = await _search(conn, actor, where, None, q, cap=1_000_000)
        head_seq, head_hash = await audit_repo.head(conn)
        await record(conn, rt, ctx)
    return EventPage(found, cursor, head_seq, head_hash, scanned, {"fingerprint": digest})


@dataclass
class ExportPlan:
    """What an export holds: its header, the checkpoints covering it and the sequence range."""

    header: dict[str, Any]
    checkpoints: list[SignedCheckpoint]
    low: int
    high: int
    fmt: str


async def plan_export(
    rt: Runtime, ctx: RequestContext, actor: Actor, *, since: str | None, until: str | None, fmt: str
) -> ExportPlan:
    """Fix the range of an export (a contiguous stretch of the chain covering the time range) and record
    the export's own event before any record leaves."""
    if not _full_auditor(actor):
        raise Forbidden(
            "export needs an audit grant on every project and environment (a chain with holes cannot be "
            "verified); use audit list for a narrower view"
        )
    if fmt not in ("jsonl", "csv"):
        raise Invalid("format: must be jsonl or csv", field="format")
    now = rt.clock()
    since_at = parse_when(since, now=now, field="since")
    until_at = parse_when(until, now=now, field="until")
    await chain(rt)
    async with rt.engine.begin() as conn:
        # Under the chain lock: no checkpoint is half-made while the range and the time are fixed, so a
        # checkpoint signed before `generated_at` vouches only for records this export can hold.
        await audit_repo.lock_chain(conn)
        as_of = rt.clock()
        low, high = await audit_repo.seq_range(conn, since_at, until_at)
        head_seq, head_hash = await audit_repo.head(conn)
        if low is None or high is None or low > high:
            low, high = head_seq + 1, head_seq
        await record(conn, rt, ctx)
    to_head = until_at is None or until_at > as_of
    signed = [c for c in await _known_checkpoints(rt, max(low - 1, 1), high) if c.seq <= high]
    header = {
        "format": EXPORT_FORMAT,
        "record_format": canonical.RECORD_FORMAT,
        "generated_at": format_time(as_of),
        "since": format_time(since_at) if since_at else None,
        "until": format_time(until_at) if until_at else None,
        "from_seq": low,
        "to_seq": high,
        "to_head": to_head,
        "head": {"seq": head_seq, "hash": head_hash},
        "key_id": rt.audit.signer.public.key_id,
    }
    return ExportPlan(header, signed, low, high, fmt)


async def export_lines(rt: Runtime, plan: ExportPlan) -> AsyncIterator[bytes]:
    """The export, streamed in batches (constant memory): JSON lines, or CSV records."""
    if plan.fmt == "csv":
        yield _csv_line(list(CSV_COLUMNS))
    else:
        yield canonical_json({"export": plan.header}) + b"\n"
        for signed in plan.checkpoints:
            yield signed.document().encode("ascii") + b"\n"
    count, cursor = 0, plan.low
    while cursor <= plan.high:
        async with rt.engine.connect() as conn:
            rows = await audit_repo.events_between(conn, cursor, plan.high, limit=BATCH)
        if not rows:
            break
        chunk = []
        names = rows[0]._fields
        for row in rows:
            record = to_record(row, names=names)
            chunk.append(
                _csv_line(csv_row(record)) if plan.fmt == "csv" else canonical.line({"event": record})
            )
        count += len(rows)
        cursor = int(rows[-1].seq) + 1
        yield b"".join(chunk)
    if plan.fmt != "csv":
        yield canonical_json({"end": {"events": count}}) + b"\n"


def _csv_line(cells: list[str]) -> bytes:
    import csv
    import io

    buf = io.StringIO()
    csv.writer(buf, lineterminator="\r\n").writerow(cells)
    return buf.getvalue().encode("utf-8")


async def checkpoint_list(
    rt: Runtime, ctx: RequestContext, actor: Actor, *, from_seq: int, to_seq: int | None
) -> list[SignedCheckpoint]:
    """Signed checkpoints in a sequence range (the external directory's, plus the database's copies)."""
    signed = await _known_checkpoints(rt, from_seq, to_seq)
    await record_alone(rt, ctx, status=200)
    return signed


@dataclass
class AuditStatus:
    """The trail's health as this process sees it."""

    head_seq: int
    head_hash: str | None
    unlinked: int
    last_checkpoint: SignedCheckpoint | None
    published_seq: int
    read_only: str | None
    key_id: str
    public_key_pem: str
    sinks: list[dict[str, Any]]
    counters: dict[str, int]


async def status(rt: Runtime, ctx: RequestContext, actor: Actor) -> AuditStatus:
    """Head, unlinked events, checkpoints, sink health and counters (the audit trail's metrics)."""
    trail = rt.audit
    async with rt.engine.begin() as conn:
        seq, digest = await audit_repo.head(conn)
        unlinked = await audit_repo.count_pending(conn)
        last = await audit_repo.last_checkpoint(conn)
        await record(conn, rt, ctx)
    sinks = [{"name": "database", "ok": trail.sink_health("database").ok}]
    sinks += [{"name": s.name, "ok": trail.sink_health(s.name).ok} for s in trail.sinks]
    sinks.append({"name": f"checkpoints:{trail.checkpoints.path}", "ok": trail.sink_health("checkpoints").ok})
    for item in sinks:
        key = "checkpoints" if str(item["name"]).startswith("checkpoints:") else str(item["name"])
        health = trail.health.get(key)
        item["failures"] = health.failures if health else 0
        item["last_error"] = health.last_error if health else None
    return AuditStatus(
        head_seq=seq,
        head_hash=digest,
        unlinked=unlinked,
        last_checkpoint=parse_checkpoint(last.document) if last is not None else None,
        published_seq=trail.published_seq,
        read_only=trail.read_only,
        key_id=trail.signer.public.key_id,
        public_key_pem=trail.signer.public.pem().decode("ascii"),
        sinks=sinks,
        counters=dict(trail.counters),
    )
