"""The auditor's routes: list, export, checkpoints, value fingerprints, status. Each is itself audited."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import ValidationError

from broker.api.deps import ActorDep, CtxDep, RuntimeDep
from broker.api.routes.common import NO_STORE, PROBLEMS
from broker.api.routes.lean import LeanRoute
from broker.api.schemas.audit import (
    AuditEventList,
    AuditEventOut,
    AuditStatusOut,
    ChainHeadOut,
    CheckpointList,
    CheckpointOut,
    FingerprintOut,
    FingerprintRequest,
    SinkOut,
)
from broker.errors import Invalid
from broker.services.audit import export as audit_export
from broker.services.audit import search as audit_search

router = APIRouter(route_class=LeanRoute, prefix="/v1/audit", responses=PROBLEMS, tags=["audit"])

Text64 = Annotated[str | None, Query(max_length=64)]
When = Annotated[
    str | None,
    Query(max_length=40, description="ISO 8601 date or time (UTC if no zone), or an age: 90d, 12h, 30m"),
]


def _events(records: list[dict[str, Any]]) -> list[AuditEventOut]:
    return [AuditEventOut.model_validate(r) for r in records]


@router.get("/events", response_model=AuditEventList)
async def list_events(
    rt: RuntimeDep,
    ctx: CtxDep,
    actor: ActorDep,
    actor_name: Annotated[str | None, Query(alias="actor", max_length=128, description="Actor name")] = None,
    accessor: Text64 = None,
    project: Text64 = None,
    environment: Text64 = None,
    name: Annotated[str | None, Query(max_length=256, description="Secret name")] = None,
    action: Annotated[
        str | None, Query(max_length=65, description="An action, or a prefix: secret.*")
    ] = None,
    outcome: Literal["ok", "denied", "invalid", "error"] | None = None,
    since: When = None,
    until: When = None,
    source: Annotated[str | None, Query(max_length=64, description="Source address or CIDR")] = None,
    fingerprint: Annotated[str | None, Query(max_length=80)] = None,
    cursor: Annotated[int | None, Query(ge=0, le=2**62)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    order: Literal["newest", "oldest"] = "newest",
) -> AuditEventList:
    """Events this token may audit, filtered, newest first; page with `cursor`."""
    audit_search.require_auditor(ctx, actor, "audit.list")
    page = await audit_search.list_events(
        rt,
        ctx,
        actor,
        audit_search.EventQuery(
            actor=actor_name,
            accessor=accessor,
            project=project,
            environment=environment,
            name=name,
            action=action,
            outcome=outcome,
            since=since,
            until=until,
            source=source,
            fingerprint=fingerprint,
            cursor=cursor,
            limit=limit,
            oldest_first=order == "oldest",
        ),
    )
    return AuditEventList(
        events=_events(page.events),
        next_cursor=page.next_cursor,
        head=ChainHeadOut(seq=page.head_seq, hash=page.head_hash),
    )


@router.get(
    "/export",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "JSON lines (header, checkpoints, records, end line) or CSV records",
            "content": {
                "application/x-ndjson": {"schema": {"type": "string"}},
                "text/csv": {"schema": {"type": "string"}},
            },
        }
    },
)
async def export(
    rt: RuntimeDep,
    ctx: CtxDep,
    actor: ActorDep,
    since: When = None,
    until: When = None,
    format: Literal["jsonl", "csv"] = "jsonl",  # the query parameter is called format
) -> StreamingResponse:
    """Every record of a time range (a contiguous, verifiable stretch of the chain) with the checkpoints
    that cover it; needs audit on every project. Verify it offline with `strongroom audit verify`."""
    audit_search.require_auditor(ctx, actor, "audit.export")
    plan = await audit_export.plan_export(rt, ctx, actor, since=since, until=until, fmt=format)
    media = "text/csv" if format == "csv" else "application/x-ndjson"
    name = f"strongroom-audit-{plan.low}-{plan.high}.{format}"
    return StreamingResponse(
        audit_export.export_lines(rt, plan),
        media_type=media,
        headers={**NO_STORE, "Content-Disposition": f'attachment; filename="{name}"'},
    )


def _checkpoint(document: dict[str, Any]) -> CheckpointOut:
    return CheckpointOut.model_validate(document)


@router.get("/checkpoints", response_model=CheckpointList)
async def checkpoints(
    rt: RuntimeDep,
    ctx: CtxDep,
    actor: ActorDep,
    from_seq: Annotated[int, Query(ge=0, le=2**62)] = 0,
    to_seq: Annotated[int | None, Query(ge=0, le=2**62)] = None,
) -> CheckpointList:
    """Signed checkpoints in a sequence range, and the public key that verifies them."""
    audit_search.require_auditor(ctx, actor, "audit.checkpoints")
    signed = await audit_export.checkpoint_list(rt, ctx, actor, from_seq=from_seq, to_seq=to_seq)
    public = rt.audit.signer.public
    return CheckpointList(
        key_id=public.key_id,
        public_key=public.pem().decode("ascii"),
        checkpoints=[_checkpoint(c.as_json()) for c in signed],
    )


@router.post(
    "/fingerprint",
    response_model=FingerprintOut,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": FingerprintRequest.model_json_schema()}},
        }
    },
)
async def fingerprint(request: Request, rt: RuntimeDep, ctx: CtxDep, actor: ActorDep) -> FingerprintOut:
    """Was this exact value ever read or written? Its fingerprint and the events that touched it.

    Rate limited and audited. The audit grant is checked before the body is even parsed: the body is a
    candidate secret, and a caller who may not ask learns nothing about it, not even its validation.
    """
    audit_search.require_auditor(ctx, actor, "audit.fingerprint")
    try:
        body = FingerprintRequest.model_validate_json(await request.body())
    except ValidationError:
        raise Invalid(
            'body: must be {"value": "<text of at most 65536 characters>"} and nothing else', field="value"
        ) from None
    page = await audit_search.fingerprint_search(rt, ctx, actor, value=body.value)
    return FingerprintOut(
        fingerprint=str(page.extra["fingerprint"]),
        events=_events(page.events),
        more=page.next_cursor is not None,
    )


@router.get("/status", response_model=AuditStatusOut)
async def status(rt: RuntimeDep, ctx: CtxDep, actor: ActorDep) -> AuditStatusOut:
    """The chain's head, unlinked events, checkpoints, sink health and counters (the audit metrics)."""
    audit_search.require_auditor(ctx, actor, "audit.status")
    st = await audit_export.status(rt, ctx, actor)
    return AuditStatusOut(
        head=ChainHeadOut(seq=st.head_seq, hash=st.head_hash),
        unlinked=st.unlinked,
        last_checkpoint=_checkpoint(st.last_checkpoint.as_json()) if st.last_checkpoint else None,
        published_seq=st.published_seq,
        read_only=st.read_only,
        key_id=st.key_id,
        public_key=st.public_key_pem,
        sinks=[SinkOut.model_validate(s) for s in st.sinks],
        counters=st.counters,
    )
