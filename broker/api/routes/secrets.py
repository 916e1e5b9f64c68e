"""Secrets of an environment; values only in responses marked no-store."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from broker.api.deps import ActorDep, CtxDep, RuntimeDep
from broker.api.routes.common import NO_STORE, PROBLEMS
from broker.api.schemas import (
    HistoryOut,
    ResolvedOut,
    ResolvedValueOut,
    RollbackRequest,
    SecretList,
    SecretMetaOut,
    SecretValueOut,
    SecretWrite,
    VersionOut,
)
from broker.services import secrets as svc

router = APIRouter(
    prefix="/v1/projects/{project}/environments/{environment}", responses=PROBLEMS, tags=["secrets"]
)


def _meta(m: svc.SecretMeta) -> SecretMetaOut:
    return SecretMetaOut(
        name=m.name,
        version=m.version,
        sensitive=m.sensitive,
        deleted=m.deleted,
        created_at=m.created_at,
        updated_at=m.updated_at,
    )


@router.get("/secrets", response_model=SecretList)
async def list_secrets(
    project: str,
    environment: str,
    rt: RuntimeDep,
    ctx: CtxDep,
    actor: ActorDep,
    include_deleted: Annotated[bool, Query()] = False,
) -> SecretList:
    """Names and metadata of the environment's own secrets, never values."""
    items = await svc.list_secrets(
        rt, ctx, actor, project=project, environment=environment, include_deleted=include_deleted
    )
    return SecretList(secrets=[_meta(m) for m in items])


@router.get("/secrets/{name}", response_model=SecretValueOut)
async def read_secret(
    project: str,
    environment: str,
    name: str,
    rt: RuntimeDep,
    ctx: CtxDep,
    actor: ActorDep,
    response: Response,
    version: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
) -> SecretValueOut:
    """Read one value (the current version, or `version`)."""
    got = await svc.read_secret(
        rt, ctx, actor, project=project, environment=environment, name=name, version=version
    )
    response.headers.update(NO_STORE)
    return SecretValueOut(
        name=got.name,
        value=got.value.reveal(),
        version=got.version,
        sensitive=got.sensitive,
        environment=got.environment,
        created_at=got.created_at,
    )


@router.put("/secrets/{name}", response_model=SecretMetaOut)
async def write_secret(
    project: str, environment: str, name: str, body: SecretWrite, rt: RuntimeDep, ctx: CtxDep, actor: ActorDep
) -> SecretMetaOut:
    """Write a new version; `cas` makes it conditional (409 when stale, nothing changed)."""
    return _meta(
        await svc.write_secret(
            rt,
            ctx,
            actor,
            project=project,
            environment=environment,
            name=name,
            value=body.value,
            sensitive=body.sensitive,
            cas=body.cas,
        )
    )


@router.delete("/secrets/{name}", status_code=204)
async def delete_secret(
    project: str, environment: str, name: str, rt: RuntimeDep, ctx: CtxDep, actor: ActorDep
) -> Response:
    """Soft-delete the current version."""
    await svc.delete_secret(rt, ctx, actor, project=project, environment=environment, name=name)
    return Response(status_code=204)


@router.post("/secrets/{name}/undelete", response_model=SecretMetaOut)
async def undelete_secret(
    project: str, environment: str, name: str, rt: RuntimeDep, ctx: CtxDep, actor: ActorDep
) -> SecretMetaOut:
    """Undo a soft delete."""
    return _meta(
        await svc.undelete_secret(rt, ctx, actor, project=project, environment=environment, name=name)
    )


@router.get("/secrets/{name}/versions", response_model=HistoryOut)
async def history(
    project: str, environment: str, name: str, rt: RuntimeDep, ctx: CtxDep, actor: ActorDep
) -> HistoryOut:
    """Every version's metadata, newest first."""
    current, versions = await svc.history(rt, ctx, actor, project=project, environment=environment, name=name)
    return HistoryOut(
        name=name,
        current_version=current,
        versions=[
            VersionOut(
                version=v.version,
                created_at=v.created_at,
                author=v.author,
                deleted=v.deleted,
                destroyed=v.destroyed,
            )
            for v in versions
        ],
    )


@router.post("/secrets/{name}/versions/{version}/destroy", status_code=204)
async def destroy_version(
    project: str,
    environment: str,
    name: str,
    version: Annotated[int, Path(ge=1, le=2**31 - 1)],
    rt: RuntimeDep,
    ctx: CtxDep,
    actor: ActorDep,
) -> Response:
    """Erase one version's ciphertext for good."""
    await svc.destroy_version(
        rt, ctx, actor, project=project, environment=environment, name=name, version=version
    )
    return Response(status_code=204)


@router.post("/secrets/{name}/rollback", response_model=SecretMetaOut)
async def rollback(
    project: str,
    environment: str,
    name: str,
    body: RollbackRequest,
    rt: RuntimeDep,
    ctx: CtxDep,
    actor: ActorDep,
) -> SecretMetaOut:
    """Write a new version holding an older version's value."""
    return _meta(
        await svc.rollback(
            rt, ctx, actor, project=project, environment=environment, name=name, version=body.version
        )
    )


@router.get("/resolved", response_model=ResolvedOut)
async def resolved(
    project: str, environment: str, rt: RuntimeDep, ctx: CtxDep, actor: ActorDep, response: Response
) -> ResolvedOut:
    """Every value the environment sees, inheritance applied; each says where it came from."""
    values = await svc.resolve(rt, ctx, actor, project=project, environment=environment)
    response.headers.update(NO_STORE)
    return ResolvedOut(
        project=project,
        environment=environment,
        values={
            k: ResolvedValueOut(
                value=v.value.reveal(), version=v.version, environment=v.environment, sensitive=v.sensitive
            )
            for k, v in values.items()
        },
    )
