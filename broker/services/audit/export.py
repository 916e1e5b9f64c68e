"""The auditor's exports (a contiguous, verifiable stretch of the chain with its checkpoints), the
checkpoint list and the trail's status."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from broker.audit import canonical
from broker.audit.canonical import canonical_json, format_time
from broker.audit.checkpoint import SignedCheckpoint
from broker.audit.checkpoint import parse as parse_checkpoint
from broker.audit.verify import CSV_COLUMNS, EXPORT_FORMAT, csv_row
from broker.domain.request import Actor, RequestContext
from broker.errors import Forbidden, Invalid
from broker.repositories import audit as audit_repo
from broker.services.audit.chaining import chain, known_checkpoints
from broker.services.audit.events import BATCH, to_record
from broker.services.audit.search import full_auditor, parse_when
from broker.services.audit.writing import record, record_alone
from broker.services.runtime import Runtime


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
    if not full_auditor(actor):
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
    signed = [c for c in await known_checkpoints(rt, max(low - 1, 1), high) if c.seq <= high]
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
    signed = await known_checkpoints(rt, from_seq, to_seq)
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
