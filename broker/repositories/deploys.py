"""Deploy ledger rows: deploys, what each host got, which secret versions were served (never values)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from broker.db.base import DbRow
from broker.models import deploy_host_keys, deploy_hosts, deploy_keys, deploys, tokens

_DEPLOY = (
    deploys.c.id,
    deploys.c.project,
    deploys.c.environment,
    deploys.c.service,
    deploys.c.version,
    deploys.c.kind,
    deploys.c.via,
    deploys.c.status,
    deploys.c.started_at,
    deploys.c.finished_at,
    deploys.c.principal_name,
    deploys.c.token_accessor,
    deploys.c.manifest_digest,
    deploys.c.manifest,
    deploys.c.hosts,
    # The deploy token's state: a running deploy whose token is dead was abandoned.
    tokens.c.expires_at.label("token_expires_at"),
    tokens.c.revoked_at.label("token_revoked_at"),
    tokens.c.uses_remaining.label("token_uses_remaining"),
)
_DEPLOYS = deploys.outerjoin(tokens, tokens.c.accessor == deploys.c.token_accessor)
_HOST = (
    deploy_hosts.c.id,
    deploy_hosts.c.deploy_id,
    deploy_hosts.c.host,
    deploy_hosts.c.role,
    deploy_hosts.c.outcome,
    deploy_hosts.c.container,
    deploy_hosts.c.image_digest,
    deploy_hosts.c.env_fingerprint,
    deploy_hosts.c.error,
    deploy_hosts.c.at,
)
_KEY = (deploy_keys.c.environment, deploy_keys.c.name, deploy_keys.c.version, deploy_keys.c.fingerprint)


async def add_deploy(conn: AsyncConnection, **values: Any) -> None:
    """Insert a deploy row (columns as in broker.models.Deploy)."""
    await conn.execute(insert(deploys).values(**values))


async def get_deploy(conn: AsyncConnection, deploy_id: str) -> DbRow | None:
    """The deploy row (the _DEPLOY columns) or None."""
    return (
        await conn.execute(select(*_DEPLOY).select_from(_DEPLOYS).where(deploys.c.id == deploy_id))
    ).first()


async def list_deploys(
    conn: AsyncConnection, project: str, environment: str, limit: int, *, running_only: bool = False
) -> list[DbRow]:
    """An environment's deploys (only those never finished, with `running_only`), newest first."""
    where = [deploys.c.project == project, deploys.c.environment == environment]
    if running_only:
        where.append(deploys.c.status == "running")
    result = await conn.execute(
        select(*_DEPLOY)
        .select_from(_DEPLOYS)
        .where(*where)
        .order_by(deploys.c.started_at.desc(), deploys.c.id)
        .limit(limit)
    )
    return list(result.all())


async def finish(conn: AsyncConnection, deploy_id: str, *, status: str, now: datetime) -> bool:
    """Mark a running deploy finished; False if it was not running."""
    result = await conn.execute(
        update(deploys)
        .where(deploys.c.id == deploy_id, deploys.c.status == "running")
        .values(status=status, finished_at=now)
    )
    return bool(result.rowcount)


async def add_host(conn: AsyncConnection, **values: Any) -> int:
    """Insert a host outcome and return its id."""
    result = await conn.execute(insert(deploy_hosts).values(**values).returning(deploy_hosts.c.id))
    return int(result.scalar_one())


async def hosts_of(conn: AsyncConnection, deploy_id: str) -> list[DbRow]:
    """A deploy's host outcomes, oldest first."""
    result = await conn.execute(
        select(*_HOST).where(deploy_hosts.c.deploy_id == deploy_id).order_by(deploy_hosts.c.id)
    )
    return list(result.all())


async def set_keys(conn: AsyncConnection, deploy_id: str, keys: Sequence[tuple[str, str, int, str]]) -> None:
    """Replace the (environment, name, version, fingerprint) rows served to a deploy."""
    await conn.execute(delete(deploy_keys).where(deploy_keys.c.deploy_id == deploy_id))
    if keys:
        await conn.execute(
            insert(deploy_keys),
            [
                {"deploy_id": deploy_id, "environment": e, "name": n, "version": v, "fingerprint": f}
                for e, n, v, f in keys
            ],
        )


async def keys_of(conn: AsyncConnection, deploy_id: str) -> list[DbRow]:
    """The (environment, name, version, fingerprint) rows served to a deploy, sorted."""
    result = await conn.execute(
        select(*_KEY)
        .where(deploy_keys.c.deploy_id == deploy_id)
        .order_by(deploy_keys.c.environment, deploy_keys.c.name)
    )
    return list(result.all())


async def set_host_keys(
    conn: AsyncConnection, deploy_id: str, host: str, role: str, rows: Sequence[tuple[str, str, int, str]]
) -> None:
    """Replace the (environment, name, version, fingerprint) rows of one host's env file in a deploy."""
    c = deploy_host_keys.c
    await conn.execute(
        delete(deploy_host_keys).where(c.deploy_id == deploy_id, c.host == host, c.role == role)
    )
    if rows:
        await conn.execute(
            insert(deploy_host_keys),
            [
                {
                    "deploy_id": deploy_id,
                    "host": host,
                    "role": role,
                    "environment": e,
                    "name": n,
                    "version": v,
                    "fingerprint": f,
                }
                for e, n, v, f in rows
            ],
        )


async def host_keys_all(conn: AsyncConnection, deploy_id: str) -> list[DbRow]:
    """Every (host, role, environment, name, version, fingerprint) row of a deploy's env files, in insert order."""
    c = deploy_host_keys.c
    result = await conn.execute(
        select(c.host, c.role, c.environment, c.name, c.version, c.fingerprint)
        .where(c.deploy_id == deploy_id)
        .order_by(c.id)
    )
    return list(result.all())


async def host_keys_of(conn: AsyncConnection, deploy_id: str, host: str, role: str) -> list[DbRow]:
    """The (environment, name, version, fingerprint) rows one host's env file got in a deploy, sorted."""
    c = deploy_host_keys.c
    result = await conn.execute(
        select(c.environment, c.name, c.version, c.fingerprint)
        .where(c.deploy_id == deploy_id, c.host == host, c.role == role)
        .order_by(c.environment, c.name)
    )
    return list(result.all())


async def last_rows(
    conn: AsyncConnection,
    project: str,
    environment: str,
    pairs: Sequence[tuple[str, str]],
    *,
    deployed_only: bool,
) -> dict[tuple[str, str], DbRow]:
    """For each (host, role), its newest row in the environment (`deployed` ones only, or any outcome),
    with the deploy's version and author."""
    if not pairs:
        return {}
    hosts = sorted({h for h, _r in pairs})
    query = (
        select(*_HOST, deploys.c.version, deploys.c.principal_name)
        .join(deploys, deploys.c.id == deploy_hosts.c.deploy_id)
        .where(
            deploys.c.project == project,
            deploys.c.environment == environment,
            deploy_hosts.c.host.in_(hosts),
        )
        .order_by(deploy_hosts.c.id)
    )
    if deployed_only:
        query = query.where(deploy_hosts.c.outcome == "deployed")
    out: dict[tuple[str, str], DbRow] = {}
    for row in (await conn.execute(query)).all():
        out[(row.host, row.role)] = row  # ascending ids: the newest wins
    return {pair: out[pair] for pair in pairs if pair in out}


async def newest_deployed_by_role(
    conn: AsyncConnection, project: str, environment: str, roles: Sequence[str]
) -> dict[str, DbRow]:
    """For each role, the newest `deployed` row on any host of it in the environment, with the deploy's version."""
    if not roles:
        return {}
    result = await conn.execute(
        select(*_HOST, deploys.c.version, deploys.c.principal_name)
        .join(deploys, deploys.c.id == deploy_hosts.c.deploy_id)
        .where(
            deploys.c.project == project,
            deploys.c.environment == environment,
            deploy_hosts.c.role.in_(sorted(set(roles))),
            deploy_hosts.c.outcome == "deployed",
        )
        .order_by(deploy_hosts.c.id)
    )
    out: dict[str, DbRow] = {}
    for row in result.all():
        out[row.role] = row
    return out
