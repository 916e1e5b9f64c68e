"""What every secret store shares: the results it returns, the `SecretStore` protocol, where-paths.

A store is where the values of one request live: the database (broker.services.stores.database) or an
upstream Vault KV v2 / AWS Secrets Manager (broker.services.stores.upstream). broker.services.stores.choose
picks it once per request; the use cases in broker.services.secrets check names and scopes first, then
call the chosen store. The stores never import each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from sqlalchemy.ext.asyncio import AsyncConnection

from broker.db.units import ConnTx, Tx
from broker.domain.request import Actor, RequestContext
from broker.domain.values import SecretValue
from broker.errors import NotFound
from broker.repositories import secrets as repo
from broker.services.runtime import Runtime

if TYPE_CHECKING:
    from broker.backends.base import Origin


@dataclass(frozen=True)
class SecretMeta:
    """A secret's metadata, never its value."""

    name: str
    version: int
    sensitive: bool
    deleted: bool
    created_at: datetime
    updated_at: datetime
    origin: Origin | None = None  # None: the database


@dataclass(frozen=True)
class SecretRead:
    """One value read, with where it came from."""

    name: str
    value: SecretValue
    version: int
    sensitive: bool
    environment: str
    created_at: datetime
    origin: Origin | None = None  # None: the database


@dataclass(frozen=True)
class ResolvedValue:
    """A value in a resolved environment, saying which environment it came from."""

    value: SecretValue
    version: int
    environment: str
    sensitive: bool
    origin: Origin | None = None  # None: the database


@dataclass(frozen=True)
class VersionInfo:
    """One entry of a secret's history."""

    version: int
    created_at: datetime
    author: str | None
    deleted: bool
    destroyed: bool
    upstream_version: str | None = None


@dataclass(frozen=True)
class Generated:
    """What a generate did: `generated` is False when an existing secret was left alone."""

    meta: SecretMeta
    generated: bool
    rotated: bool


def where(project: str, environment: str, name: str | None = None) -> str:
    """The path errors name: the environment, or one secret of it."""
    base = f"projects/{project}/environments/{environment}"
    return f"{base}/secrets/{name}" if name else base


async def require_environment(conn: AsyncConnection | Tx, project: str, environment: str) -> tuple[int, int]:
    """(project id, environment id); NotFound if there is no such environment."""
    tx = ConnTx(conn) if isinstance(conn, AsyncConnection) else conn
    ids = await repo.env_ids(tx, project, environment)
    if ids is None:
        raise NotFound(f"{where(project, environment)}: no such environment")
    return ids


class SecretStore(Protocol):
    """Where one request's secrets live. Names and scopes are checked, and the actor authorised, before a
    store is called; each method records the request's audit event itself (reads before they return).

    A read by bearer token is not a store method: it authenticates in the same unit of work as the
    database read (broker.services.secrets.read_secret), which chooses the store inside that unit; the
    upstream store's `read` runs after it, never holding a transaction across the network.
    """

    async def write(
        self,
        rt: Runtime,
        ctx: RequestContext,
        actor: Actor,
        *,
        project: str,
        environment: str,
        name: str,
        value: str,
        sensitive: bool,
        cas: int | None,
    ) -> SecretMeta:
        """A new version; with `cas`, only if the current version is still `cas` (0: must not exist)."""
        ...

    async def generate(
        self,
        rt: Runtime,
        ctx: RequestContext,
        actor: Actor,
        *,
        project: str,
        environment: str,
        name: str,
        value: str,
        rotate: bool,
    ) -> Generated:
        """Store a generated value once: an existing secret is left alone unless `rotate`."""
        ...

    async def delete(
        self, rt: Runtime, ctx: RequestContext, *, project: str, environment: str, name: str
    ) -> None:
        """Soft-delete the current version."""
        ...

    async def undelete(
        self, rt: Runtime, ctx: RequestContext, *, project: str, environment: str, name: str
    ) -> SecretMeta:
        """Bring back a soft-deleted current version."""
        ...

    async def destroy(
        self, rt: Runtime, ctx: RequestContext, *, project: str, environment: str, name: str, version: int
    ) -> None:
        """Erase one version for good."""
        ...

    async def history(
        self, rt: Runtime, ctx: RequestContext, *, project: str, environment: str, name: str
    ) -> tuple[int, list[VersionInfo]]:
        """The current version number and every version's metadata, newest first."""
        ...

    async def rollback(
        self,
        rt: Runtime,
        ctx: RequestContext,
        actor: Actor,
        *,
        project: str,
        environment: str,
        name: str,
        version: int,
    ) -> SecretMeta:
        """A new version holding an older version's value."""
        ...

    async def list(
        self, rt: Runtime, ctx: RequestContext, *, project: str, environment: str, include_deleted: bool
    ) -> list[SecretMeta]:
        """Names and metadata of an environment's secrets."""
        ...

    async def resolve(
        self, rt: Runtime, ctx: RequestContext, *, project: str, environment: str
    ) -> dict[str, ResolvedValue]:
        """Every value the environment sees, inheritance applied, nearest environment winning."""
        ...
