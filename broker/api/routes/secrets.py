"""Secrets of an environment; values only in responses marked no-store."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Path, Query, Request, Response
from fastapi.responses import JSONResponse

from broker.api.deps import ActorDep, CtxDep, RuntimeDep
from broker.api.routes.common import NO_STORE, PROBLEMS
from broker.api.routes.lean import LeanRoute
from broker.api.schemas import (
    GenerateOut,
    GenerateRequest,
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
from broker.backends.base import Origin
from broker.services import secrets as svc

router = APIRouter(
    route_class=LeanRoute,
    prefix="/v1/projects/{project}/environments/{environment}",
    responses=PROBLEMS,
    tags=["secrets"],
)

# `X-Strongroom-Reveal: 1`: the client will display the value, so the read is audited as `secret.reveal`.
RevealHeader = Annotated[
    str | None, Header(alias="X-Strongroom-Reveal", max_length=16, description="1: audited as a reveal")
]


def wants_reveal(header: str | None) -> bool:
    """Whether an X-Strongroom-Reveal header asks for a reveal."""
    return (header or "").strip().lower() in ("1", "true", "yes")


def _meta(m: svc.SecretMeta) -> SecretMetaOut:
    out = SecretMetaOut(
        name=m.name,
        version=m.version,
        sensitive=m.sensitive,
        deleted=m.deleted,
        created_at=m.created_at,
        updated_at=m.updated_at,
    )
    if m.origin is not None:
        out.backend, out.upstream_path, out.upstream_version = _source(m.origin)
    return out


def _source(origin: Origin) -> tuple[str, str, str | None]:
    return origin.backend, origin.path, origin.upstream_version


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


@router.get(
    "/secrets/{name}",
    response_model=SecretValueOut,
    response_class=JSONResponse,
    # The service reads the raw header; the scheme is declared for the OpenAPI document only.
    openapi_extra={"security": [{"HTTPBearer": []}]},
)
async def read_secret(
    project: str,
    environment: str,
    name: str,
    request: Request,
    ctx: CtxDep,
    version: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
    upstream_version: Annotated[
        str | None,
        Query(
            max_length=256,
            description="proxied secrets: a Vault version, an AWS staging label (AWSCURRENT, AWSPREVIOUS) "
            "or an AWS version id",
        ),
    ] = None,
    x_strongroom_reveal: RevealHeader = None,
) -> Response:
    """Read one value (the current version, or `version`, or an upstream version).

    Authentication happens in the service, in the same unit of work as the read and its audit event
    (one transaction, one thread hop on SQLite); the body is the model's JSON, written once."""
    got = await svc.read_secret(
        request.app.state.runtime,
        ctx,
        authorization=request.headers.get("authorization"),
        project=project,
        environment=environment,
        name=name,
        version=version,
        pin=upstream_version,
        reveal=wants_reveal(x_strongroom_reveal),
    )
    out = SecretValueOut(
        name=got.name,
        value=got.value.reveal(),
        version=got.version,
        sensitive=got.sensitive,
        environment=got.environment,
        created_at=got.created_at,
    )
    if got.origin is not None:
        out.backend, out.upstream_path, out.upstream_version = _source(got.origin)
    return Response(out.model_dump_json().encode(), media_type="application/json", headers=NO_STORE)


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
                upstream_version=v.upstream_version,
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


@router.post("/secrets/{name}/generate", response_model=GenerateOut)
async def generate(
    project: str,
    environment: str,
    name: str,
    body: GenerateRequest,
    rt: RuntimeDep,
    ctx: CtxDep,
    actor: ActorDep,
) -> GenerateOut:
    """Generate and store a random value once; an existing one is left alone unless `rotate`; never returns it."""
    done = await svc.generate_secret(
        rt,
        ctx,
        actor,
        project=project,
        environment=environment,
        name=name,
        size=body.bytes,
        encoding=body.format,
        rotate=body.rotate,
    )
    return GenerateOut(generated=done.generated, rotated=done.rotated, secret=_meta(done.meta))


@router.get("/resolved", response_model=ResolvedOut)
async def resolved(
    project: str,
    environment: str,
    rt: RuntimeDep,
    ctx: CtxDep,
    actor: ActorDep,
    x_strongroom_reveal: RevealHeader = None,
) -> Response:
    """Every value the environment sees, inheritance applied; each says where it came from."""
    values = await svc.resolve(
        rt, ctx, actor, project=project, environment=environment, reveal=wants_reveal(x_strongroom_reveal)
    )
    out = ResolvedOut(
        project=project,
        environment=environment,
        values={k: _resolved(v) for k, v in values.items()},
    )
    # The body is the model's JSON, written once (no `Response` parameter: the route's parameters are
    # planned, see routes/lean.py).
    return Response(out.model_dump_json().encode(), media_type="application/json", headers=NO_STORE)


def _resolved(v: svc.ResolvedValue) -> ResolvedValueOut:
    out = ResolvedValueOut(
        value=v.value.reveal(), version=v.version, environment=v.environment, sensitive=v.sensitive
    )
    if v.origin is not None:
        out.backend, out.upstream_path, out.upstream_version = _source(v.origin)
    return out
