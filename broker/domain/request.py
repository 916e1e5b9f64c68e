"""What one request is about, collected as it goes, for its audit event."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from broker.domain.scopes import Scope


@dataclass(slots=True)
class Actor:
    """The authenticated caller."""

    principal_id: int
    principal_type: str
    name: str
    token_id: int
    accessor: str
    scopes: tuple[Scope, ...] = ()
    bound_cidrs: tuple[str, ...] = ()
    expires_at: datetime | None = None
    max_expires_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class ValueSeen:
    """A value the request read or wrote, as the audit trail sees it: where, which version, a keyed
    fingerprint (`hmac-sha256:...`), never the value."""

    environment: str | None
    name: str | None
    version: int | None
    fingerprint: str


@dataclass(slots=True)
class RequestContext:
    """Per-request audit facts; services fill in the action and resource, the edge the rest."""

    request_id: str
    method: str
    route: str
    source_addr: str | None
    user_agent: str | None
    actor: Actor | None = None
    action: str | None = None
    project: str | None = None
    environment: str | None = None
    secret_name: str | None = None
    version: int | None = None
    # Where a proxied value came from (issue 7): the backend's name, the upstream path and version.
    backend: str | None = None
    upstream_path: str | None = None
    upstream_version: str | None = None
    reason: str | None = None
    audited: bool = field(default=False)
    # cli, api or web, from the user agent (set by the edge).
    client_kind: str | None = None
    values: list[ValueSeen] = field(default_factory=list)

    def about(
        self,
        action: str,
        *,
        project: str | None = None,
        environment: str | None = None,
        secret_name: str | None = None,
        version: int | None = None,
    ) -> None:
        """Name the action and resource this request is about."""
        self.action = action
        self.project = project
        self.environment = environment
        self.secret_name = secret_name
        self.version = version
