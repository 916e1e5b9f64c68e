"""Typed SQLAlchemy models; the hot path queries their tables with Core, not ORM objects."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Double,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from broker.db.base import Base, BigId, UTCDateTime


class Project(Base):
    """A tenant: an application with its environments."""

    __tablename__ = "projects"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Environment(Base):
    """An environment of a project; may inherit from a parent in the same project."""

    __tablename__ = "environments"
    __table_args__ = (UniqueConstraint("project_id", "slug"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    slug: Mapped[str] = mapped_column(String(64))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("environments.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Secret(Base):
    """A named variable in one environment; its values live in versions."""

    __tablename__ = "secrets"
    __table_args__ = (UniqueConstraint("environment_id", "name"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    environment_id: Mapped[int] = mapped_column(ForeignKey("environments.id"), index=True)
    name: Mapped[str] = mapped_column(String(256))
    current_version: Mapped[int] = mapped_column(Integer)
    sensitive: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # HMAC binding project, environment, name and current_version (broker/crypto/binding.py).
    binding: Mapped[bytes | None] = mapped_column(LargeBinary(32))


class SecretVersion(Base):
    """One immutable value of a secret: ciphertext under a per-version data key wrapped by a KEK."""

    __tablename__ = "secret_versions"
    __table_args__ = (UniqueConstraint("secret_id", "version"), Index("ix_secret_versions_kek_id", "kek_id"))
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    secret_id: Mapped[int] = mapped_column(ForeignKey("secrets.id"))
    version: Mapped[int] = mapped_column(Integer)
    ciphertext: Mapped[bytes | None] = mapped_column(LargeBinary)
    wrapped_dek: Mapped[bytes | None] = mapped_column(LargeBinary)
    kek_id: Mapped[str | None] = mapped_column(String(64))
    author_id: Mapped[int | None] = mapped_column(ForeignKey("principals.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    destroyed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Principal(Base):
    """A user or machine identity; its client secret is stored only as a keyed hash."""

    __tablename__ = "principals"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    type: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(128))
    client_id: Mapped[str] = mapped_column(String(128), unique=True)
    secret_hash: Mapped[bytes] = mapped_column(LargeBinary)
    scopes: Mapped[list[Any]] = mapped_column(JSON)
    token_ttl: Mapped[int] = mapped_column(Integer)
    token_max_ttl: Mapped[int] = mapped_column(Integer)
    bound_cidrs: Mapped[list[Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # A rotated-out secret, accepted until previous_secret_expires_at (the rotation's grace period).
    previous_secret_hash: Mapped[bytes | None] = mapped_column(LargeBinary)
    previous_secret_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class OidcReplay(Base):
    """A `jti` already used to log in, kept until its token expires (plus leeway): replay is refused."""

    __tablename__ = "oidc_replays"
    __table_args__ = (Index("ix_oidc_replays_expires_at", "expires_at"),)
    issuer: Mapped[str] = mapped_column(String(32), primary_key=True)
    jti_hash: Mapped[bytes] = mapped_column(LargeBinary(32), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Token(Base):
    """An access token, stored only as an HMAC; the accessor can look up and revoke, never authenticate."""

    __tablename__ = "tokens"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    token_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    accessor: Mapped[str] = mapped_column(String(64), unique=True)
    principal_id: Mapped[int] = mapped_column(ForeignKey("principals.id"), index=True)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("tokens.id"), index=True)
    scopes: Mapped[list[Any]] = mapped_column(JSON)
    bound_cidrs: Mapped[list[Any]] = mapped_column(JSON)
    ttl: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    max_expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    num_uses: Mapped[int | None] = mapped_column(Integer)
    uses_remaining: Mapped[int | None] = mapped_column(Integer)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class AuditEvent(Base):
    """One event per request: who, what, when, from where, outcome; never a value (only fingerprints).

    `seq`, `prev_hash` and `hash` place the event in the hash chain (broker/audit/canonical.py); they
    are null from the event's commit until the chainer links it (at once on SQLite, shortly after the
    commit on PostgreSQL). The unique `seq` makes a fork impossible even if two chainers ran at once.
    """

    __tablename__ = "audit_events"
    # The chainer's backlog: only unlinked events, in id order, however long the linked history.
    __table_args__ = (
        Index(
            "ix_audit_events_unlinked",
            "id",
            postgresql_where=text("seq IS NULL"),
            sqlite_where=text("seq IS NULL"),
        ),
        # The trail's filters (`audit list --actor/--action/--outcome`, the console): a page is a range of
        # one of these, in sequence order, however rare the value (revision 0009).
        Index("ix_audit_events_actor_seq", "actor_name", "seq"),
        Index("ix_audit_events_action_seq", "action", "seq"),
        Index("ix_audit_events_outcome_seq", "outcome", "seq"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    seq: Mapped[int | None] = mapped_column(BigInteger, unique=True)
    prev_hash: Mapped[str | None] = mapped_column(String(64))
    hash: Mapped[str | None] = mapped_column(String(64))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    request_id: Mapped[str] = mapped_column(String(64))
    actor_id: Mapped[int | None] = mapped_column(Integer)
    actor_type: Mapped[str | None] = mapped_column(String(16))
    actor_name: Mapped[str | None] = mapped_column(String(128))
    token_accessor: Mapped[str | None] = mapped_column(String(64))
    source_addr: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(512))
    method: Mapped[str] = mapped_column(String(16))
    route: Mapped[str] = mapped_column(String(256))
    action: Mapped[str | None] = mapped_column(String(64))
    project: Mapped[str | None] = mapped_column(String(64))
    environment: Mapped[str | None] = mapped_column(String(64))
    secret_name: Mapped[str | None] = mapped_column(String(256))
    version: Mapped[int | None] = mapped_column(Integer)
    outcome: Mapped[str] = mapped_column(String(16))
    status: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str | None] = mapped_column(Text)
    # Canonical JSON: the token's scopes at that moment; the fingerprints of every value read or written.
    scopes: Mapped[str | None] = mapped_column(Text)
    fingerprints: Mapped[str | None] = mapped_column(Text)
    client_kind: Mapped[str | None] = mapped_column(String(16))
    # Where a proxied value came from (issue 7): backend name, upstream path and version.
    backend: Mapped[str | None] = mapped_column(String(64))
    upstream_path: Mapped[str | None] = mapped_column(String(512))
    upstream_version: Mapped[str | None] = mapped_column(String(128))


class AuditEventKey(Base):
    """A key a linked audit event touched (read, revealed, resolved, compiled, bundled, written, refused):
    the index behind `audit list --name`, derived from the event's project, environment, secret_name
    and fingerprints (`broker.services.audit.touched_keys`) and written in the transaction that links
    the event (at once on SQLite, by the chainer on PostgreSQL), so every linked event has its rows and
    no row waits for a seq (revision 0010).

    Not part of the hash chain: it can be rebuilt from the records, and `audit verify` never reads it.
    The primary key (name, seq, ...) is the index `audit list --name` walks; on SQLite the table is
    WITHOUT ROWID, so a row is one B-tree entry (an environment of 50 values writes 50 of them per read).
    No foreign key: the index must never stand in the way of the trail it indexes (a prune deletes
    both). `environment` is where the value lives, plus a second row for the environment the request
    named when that differs (a value `production` inherits from `common`).
    """

    __tablename__ = "audit_event_keys"
    __table_args__ = (
        PrimaryKeyConstraint("name", "seq", "project", "environment"),
        {"sqlite_with_rowid": False},
    )
    name: Mapped[str] = mapped_column(String(256))
    seq: Mapped[int] = mapped_column(BigInteger, autoincrement=False)
    project: Mapped[str] = mapped_column(String(64))  # "" when none
    environment: Mapped[str] = mapped_column(String(64))  # "" when none
    event_id: Mapped[int] = mapped_column(BigInteger)


class AuditCheckpoint(Base):
    """A signed checkpoint of the chain, kept beside the events for coordination and exports.

    The copy that counts is the one in the external checkpoint directory (a database restored from a
    backup restores this table too); the start-up check reads the directory, never this table.
    """

    __tablename__ = "audit_checkpoints"
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    head: Mapped[str] = mapped_column(String(64))
    signed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    key_id: Mapped[str] = mapped_column(String(64))
    document: Mapped[str] = mapped_column(Text)


class Deploy(Base):
    """One deploy (or rollback) of a service to an environment: who started it, with which token, how it ended.

    Project and environment are slugs, as in the audit trail: the ledger is history and outlives them.
    """

    __tablename__ = "deploys"
    __table_args__ = (
        Index("ix_deploys_project_environment_started", "project", "environment", "started_at"),
    )
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    project: Mapped[str] = mapped_column(String(64))
    environment: Mapped[str] = mapped_column(String(64))
    service: Mapped[str] = mapped_column(String(64))
    version: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(16))
    via: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    principal_id: Mapped[int] = mapped_column(ForeignKey("principals.id"))
    principal_name: Mapped[str] = mapped_column(String(128))
    token_accessor: Mapped[str] = mapped_column(String(64), unique=True)
    manifest_digest: Mapped[str] = mapped_column(String(80))
    # The manifest holds names, never values; kept so the bundle renders exactly the plan that was approved.
    manifest: Mapped[str] = mapped_column(Text)
    hosts: Mapped[list[Any] | None] = mapped_column(JSON)  # the --hosts selection, None: every host


class DeployHost(Base):
    """What a deploy did on one host: outcome, container, image digest, env-file fingerprint (never values)."""

    __tablename__ = "deploy_hosts"
    __table_args__ = (Index("ix_deploy_hosts_host_at", "host", "at"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    deploy_id: Mapped[str] = mapped_column(ForeignKey("deploys.id"), index=True)
    host: Mapped[str] = mapped_column(String(253))
    role: Mapped[str] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(16))
    container: Mapped[str | None] = mapped_column(String(256))
    image_digest: Mapped[str | None] = mapped_column(String(256))
    env_fingerprint: Mapped[str | None] = mapped_column(String(80))
    error: Mapped[str | None] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(UTCDateTime)


class DeployKey(Base):
    """A secret version a deploy was served, with its audit fingerprint (HMAC), never the value."""

    __tablename__ = "deploy_keys"
    __table_args__ = (UniqueConstraint("deploy_id", "environment", "name"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    deploy_id: Mapped[str] = mapped_column(ForeignKey("deploys.id"), index=True)
    environment: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(256))
    version: Mapped[int] = mapped_column(Integer)
    fingerprint: Mapped[str] = mapped_column(String(80))


class DeployHostKey(Base):
    """A secret version one host (in one role) of a deploy was served in its env file, by fingerprint."""

    __tablename__ = "deploy_host_keys"
    __table_args__ = (UniqueConstraint("deploy_id", "host", "role", "environment", "name"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    deploy_id: Mapped[str] = mapped_column(ForeignKey("deploys.id"), index=True)
    host: Mapped[str] = mapped_column(String(253))
    role: Mapped[str] = mapped_column(String(64))
    environment: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(256))
    version: Mapped[int] = mapped_column(Integer)
    fingerprint: Mapped[str] = mapped_column(String(80))


class BrokerKeyring(Base):
    """One running broker process and the KEK ids its keyring holds, refreshed by a heartbeat.

    `keys rewrap` reads these rows and refuses while a live broker could not unwrap under the new
    current key (it would still write new values under an old one, or fail to read moved ones)."""

    __tablename__ = "broker_keyrings"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    host: Mapped[str] = mapped_column(String(253))
    pid: Mapped[int] = mapped_column(Integer)
    current_kek: Mapped[str] = mapped_column(String(64))
    kek_ids: Mapped[list[Any]] = mapped_column(JSON)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime)


class RateLimitEvent(Base):
    """One counted event (a failed authentication, a fingerprint look-up) under one limiter key, until it
    leaves the sliding window; in the database so that every broker process sharing it shares the budget."""

    __tablename__ = "rate_limit_events"
    __table_args__ = (
        Index("ix_rate_limit_events_key_expires", "key", "expires_at"),
        Index("ix_rate_limit_events_kind_expires", "kind", "expires_at"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    # Which limiter ("auth", "fingerprint"); expired rows are pruned per limiter, by its own clock.
    kind: Mapped[str] = mapped_column(String(16))
    # SHA-256 (hex) of the limiter and its key ("principal:<canonical id>", "addr:<ip>"): fixed size,
    # whatever the caller sent.
    key: Mapped[str] = mapped_column(String(64))
    # Seconds since the epoch when this event stops counting (its time plus the window).
    expires_at: Mapped[float] = mapped_column(Double)


projects: Table = Project.__table__  # type: ignore[assignment]
environments: Table = Environment.__table__  # type: ignore[assignment]
secrets: Table = Secret.__table__  # type: ignore[assignment]
secret_versions: Table = SecretVersion.__table__  # type: ignore[assignment]
principals: Table = Principal.__table__  # type: ignore[assignment]
tokens: Table = Token.__table__  # type: ignore[assignment]
oidc_replays: Table = OidcReplay.__table__  # type: ignore[assignment]
audit_events: Table = AuditEvent.__table__  # type: ignore[assignment]
audit_event_keys: Table = AuditEventKey.__table__  # type: ignore[assignment]
audit_checkpoints: Table = AuditCheckpoint.__table__  # type: ignore[assignment]
deploys: Table = Deploy.__table__  # type: ignore[assignment]
deploy_hosts: Table = DeployHost.__table__  # type: ignore[assignment]
deploy_keys: Table = DeployKey.__table__  # type: ignore[assignment]
deploy_host_keys: Table = DeployHostKey.__table__  # type: ignore[assignment]
broker_keyrings: Table = BrokerKeyring.__table__  # type: ignore[assignment]
rate_limit_events: Table = RateLimitEvent.__table__  # type: ignore[assignment]
