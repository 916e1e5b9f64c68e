"""Audit request and response bodies (the auditor's API)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class FingerprintRequest(BaseModel):
    """A candidate value (say, a string found in a leak) to look up by its fingerprint."""

    model_config = ConfigDict(extra="forbid", strict=True)

    value: str = Field(max_length=65536, description="The candidate value; it is never stored or logged")


class ValueFingerprintOut(BaseModel):
    """A value an event read or wrote: where, which version, and its keyed fingerprint."""

    fingerprint: str
    environment: str | None = None
    name: str | None = None
    version: int | None = None


class AuditEventOut(BaseModel):
    """One audit record with its place in the chain. Null fields are left out of the hashed bytes."""

    seq: int
    prev_hash: str
    hash: str
    occurred_at: str = Field(description="UTC, YYYY-MM-DDTHH:MM:SS.ffffffZ")
    request_id: str
    actor_id: int | None = None
    actor_type: str | None = None
    actor_name: str | None = None
    token_accessor: str | None = None
    scopes: list[dict[str, Any]] | None = None
    source_addr: str | None = None
    user_agent: str | None = None
    client_kind: str | None = None
    method: str
    route: str
    action: str | None = None
    project: str | None = None
    environment: str | None = None
    secret_name: str | None = None
    version: int | None = None
    fingerprints: list[ValueFingerprintOut] | None = None
    backend: str | None = None
    upstream_path: str | None = None
    upstream_version: str | None = None
    outcome: str
    status: int
    reason: str | None = None


class ChainHeadOut(BaseModel):
    """The newest linked record."""

    seq: int
    hash: str | None


class AuditEventList(BaseModel):
    """A page of events; pass `next_cursor` as `cursor` for the next one (null: no more)."""

    events: list[AuditEventOut]
    next_cursor: int | None
    head: ChainHeadOut


class FingerprintOut(BaseModel):
    """The candidate's fingerprint and the events that read or wrote exactly that value."""

    fingerprint: str
    events: list[AuditEventOut]
    more: bool


class CheckpointBodyOut(BaseModel):
    """What a checkpoint signs."""

    format: str
    seq: int
    head: str
    time: str
    key_id: str


class CheckpointOut(BaseModel):
    """A signed checkpoint, as stored in the checkpoint directory."""

    checkpoint: CheckpointBodyOut
    signature: str


class CheckpointList(BaseModel):
    """Checkpoints and the key that signs them (get the key from your operator too, not only from here)."""

    key_id: str
    public_key: str
    checkpoints: list[CheckpointOut]


class SinkOut(BaseModel):
    """One sink's health in this broker process."""

    name: str
    ok: bool
    failures: int
    last_error: str | None


class AuditStatusOut(BaseModel):
    """The audit trail's state and counters, as this broker process sees it."""

    head: ChainHeadOut
    unlinked: int
    last_checkpoint: CheckpointOut | None
    published_seq: int
    read_only: str | None
    key_id: str
    public_key: str
    sinks: list[SinkOut]
    counters: dict[str, int]
