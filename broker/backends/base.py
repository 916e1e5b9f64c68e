"""The SecretBackend protocol and the plain data it returns.

A backend answers for one upstream (one Vault address and KV v2 mount, or one AWS account and region)
and only for paths under its configured prefix. Its methods are blocking (SDK calls): the services run
them in the backend's worker threads, never on the event loop (ARCHITECTURE rule 7). Every method
raises only BrokerErrors: NotFound, Forbidden, Conflict, Invalid, Unavailable (Throttled included).

`rel` arguments are paths relative to the backend's prefix (for example `production/DATABASE_URL`);
backends check them again before any call, so a path outside the prefix never reaches the upstream.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from broker.domain.values import SecretValue


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a value came from: the configured backend's name, its kind, the upstream path and version."""

    backend: str
    kind: str
    path: str
    upstream_version: str | None


@dataclass(frozen=True, slots=True)
class UpstreamValue:
    """One value read from an upstream."""

    value: SecretValue
    version: int
    created_at: datetime | None
    origin: Origin


@dataclass(frozen=True, slots=True)
class UpstreamMeta:
    """A secret's current version upstream, without its value."""

    name: str
    version: int
    deleted: bool
    created_at: datetime | None
    updated_at: datetime | None
    origin: Origin


@dataclass(frozen=True, slots=True)
class UpstreamVersion:
    """One entry of an upstream secret's history."""

    version: int
    created_at: datetime | None
    deleted: bool
    destroyed: bool
    upstream_version: str | None


class SecretBackend(Protocol):
    """A proxy to an upstream secret store; blocking methods, BrokerErrors only."""

    @property
    def name(self) -> str:
        """The backend's name in the backends file."""
        ...

    @property
    def kind(self) -> str:
        """`vault-kv2`, `aws-sm` (one secret per key) or `aws-sm-json` (one JSON secret, many keys)."""
        ...

    def read(self, rel: str, *, version: int | None = None, pin: str | None = None) -> UpstreamValue:
        """The current value, version `version`, or the upstream version `pin` (a stage or version id)."""
        ...

    def write(self, rel: str, value: str, *, cas: int | None) -> UpstreamMeta:
        """A new version; `cas` 0: only if absent, N: only if the current version is N (else Conflict)."""
        ...

    def list_dir(self, rel_dir: str) -> list[UpstreamMeta]:
        """The secrets directly under a directory (deleted ones flagged), sorted by name."""
        ...

    def read_many(self, rel_dir: str) -> dict[str, UpstreamValue]:
        """Every readable current value directly under a directory (deleted ones left out)."""
        ...

    def delete(self, rel: str) -> int:
        """Soft-delete the current version (undelete brings it back); returns that version."""
        ...

    def undelete(self, rel: str) -> UpstreamMeta:
        """Bring back a soft-deleted current version."""
        ...

    def destroy(self, rel: str, version: int) -> None:
        """Erase one version for good."""
        ...

    def history(self, rel: str) -> tuple[int, list[UpstreamVersion]]:
        """The current version and every version's metadata, newest first."""
        ...

    def list_source(self, rel_dir: str) -> dict[str, UpstreamValue]:
        """For import: every value under a directory, named as it will be in Strongroom."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...
