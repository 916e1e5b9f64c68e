"""Writing: `record` shapes the request's event and writes it inside the caller's transaction, so a
change and its event commit together and a read's event commits before the value is returned. With
secondary sinks (a JSON-lines file, syslog) the database insert runs in a savepoint and the event is
also written to every other sink before the commit: the request goes on when at least one sink recorded
it (the failures are reported as `audit.sink_failure` events and counters) and fails closed otherwise.

On SQLite, where every transaction already holds the one write lock, an event is linked (seq,
prev_hash, hash) in the transaction that writes it; on PostgreSQL it is inserted unlinked and the
chainer (chaining.py) links it shortly after its commit.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from broker.audit.canonical import GENESIS
from broker.audit.fingerprint import fingerprint
from broker.db.units import ConnTx, MustWait, Tx
from broker.domain.request import RequestContext, ValueSeen
from broker.errors import Unavailable
from broker.repositories import audit as audit_repo
from broker.services.audit import other_sinks
from broker.services.audit.events import ValuesJson, json_or_text, link_hash, outcome_for, shape, system_event
from broker.services.runtime import Runtime

log = logging.getLogger("strongroom.audit")

UNAVAILABLE = "the audit trail is unavailable; retry later"


class AuditUnavailable(Unavailable):
    """No sink could record the event: the request must fail and roll back."""

    def __init__(self) -> None:
        super().__init__(UNAVAILABLE)


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


def not_recorded(rt: Runtime, ctx: RequestContext, *, events: int) -> None:
    """Take back `record_in` when the request's `events` were held for a statement that then wrote
    nothing (an optimistic write that lost its race, units.PgOneStatement): the request records again."""
    rt.audit.counters["events"] -= events
    ctx.audited = False


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
    recorded, failures, recovered = await other_sinks.write(rt, events)
    await _report(None, rt, [("database", failure), *failures], recovered, now)
    if not recorded:
        raise AuditUnavailable()
    ctx.audited = True


def touched_keys(event: Mapping[Any, Any]) -> list[audit_repo.TouchedKey]:
    """The keys an event touched, as (project, environment, name), from its own columns: its
    secret_name, and every named value in its fingerprints. A value read where it lives (`common`)
    through another environment (`production`) counts in both, so `--environment` finds it either way.

    The index behind `audit list --name`, written when the event is linked; migrations 0005 and 0010
    hold copies for their backfills (a test keeps them equal).
    """
    project, environment = (event.get("project") or "")[:64], (event.get("environment") or "")[:64]
    found: dict[audit_repo.TouchedKey, None] = {}
    if event.get("secret_name"):
        found[project, environment, event["secret_name"][:256]] = None
    prints = event.get("fingerprints")
    named: Iterable[tuple[Any, Any]]
    if isinstance(prints, ValuesJson):  # just written by this process: its items are at hand
        named = prints.named
    else:
        items = json_or_text(prints) if isinstance(prints, str) else prints or []
        named = (
            (item.get("environment"), item.get("name")) if isinstance(item, dict) else (None, None)
            for item in (items if isinstance(items, list) else [])
        )
    for where, name in named:
        if not isinstance(name, str) or not name:
            continue
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
            await audit_repo.append(tx, event)  # its key rows come with its link (chaining.chain)
        return
    seq, prev = await audit_repo.head_of(tx)
    prev = prev or GENESIS
    for event in events:
        seq += 1
        digest = link_hash(event, seq=seq, prev_hash=prev)
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
    others, other_failures, other_recovered = await other_sinks.write(rt, events)
    recorded += others
    failures += other_failures
    recovered += other_recovered
    if failures or recovered:
        await _report(conn if db_ok else None, rt, failures, recovered, events[-1]["occurred_at"])
    if not recorded:
        raise AuditUnavailable()


async def _report(
    conn: AsyncConnection | None,
    rt: Runtime,
    failures: Sequence[tuple[str, BaseException]],
    recovered: Sequence[str],
    now: datetime,
) -> None:
    """Count, log and (at most once a minute per sink) record sink failures; record recoveries."""
    notes = other_sinks.note_health(rt, failures, recovered, now)
    if not notes:
        return
    if conn is not None:
        with contextlib.suppress(Exception):
            async with conn.begin_nested():
                await to_database(ConnTx(conn), rt, notes)
    await other_sinks.write_quietly(rt, notes, skip={name for name, _ in failures})


async def record_system(rt: Runtime, action: str, *, reason: str, outcome: str = "ok") -> None:
    """Record one system event in its own transaction."""
    async with rt.engine.begin() as conn:
        await write_events(conn, rt, [system_event(action, now=rt.clock(), reason=reason, outcome=outcome)])
