"""Compile a manifest, check it, read named values, compare environments; values only in no-store responses."""

from __future__ import annotations

import base64
from typing import Annotated

from fastapi import APIRouter, Query, Response

from broker.api.deps import ActorDep, CtxDep, RuntimeDep
from broker.api.routes.common import NO_STORE, PROBLEMS
from broker.api.routes.lean import LeanRoute
from broker.api.schemas import ResolvedValueOut
from broker.api.schemas.compile import (
    CheckOut,
    CheckRequest,
    CompileOut,
    CompileRequest,
    DifferentOut,
    DiffOut,
    FileOut,
    FingerprintOut,
    KeyOut,
    ProblemOut,
    ValuesOut,
    ValuesRequest,
)
from broker.domain.manifest import Problem
from broker.renderers.base import RenderedFile
from broker.services import compile as svc

router = APIRouter(
    route_class=LeanRoute, prefix="/v1/projects/{project}", responses=PROBLEMS, tags=["compile"]
)


def _problem(p: Problem) -> ProblemOut:
    return ProblemOut(path=p.where, line=p.line, level=p.level, message=p.message)


def _keys(keys: list[svc.KeyRead]) -> list[KeyOut]:
    return [KeyOut(name=k.name, environment=k.environment, version=k.version) for k in keys]


def _file(f: RenderedFile) -> FileOut:
    try:
        content, encoding = f.content.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        content, encoding = base64.b64encode(f.content).decode("ascii"), "base64"
    return FileOut(
        path=f.path,
        content=content,
        encoding="utf-8" if encoding == "utf-8" else "base64",
        holds_values=f.holds_values,
        mode=f.mode,
    )


@router.post("/environments/{environment}/compile", response_model=CompileOut)
async def compile_manifest(
    project: str,
    environment: str,
    body: CompileRequest,
    rt: RuntimeDep,
    ctx: CtxDep,
    actor: ActorDep,
    response: Response,
) -> CompileOut:
    """Render the targets for the environment; 400 names every problem when one stops the compile."""
    result = await svc.compile_manifest(
        rt,
        ctx,
        actor,
        project=project,
        environment=environment,
        manifest=body.manifest,
        targets=list(body.targets),
        role=body.role,
    )
    response.headers.update(NO_STORE)
    return CompileOut(
        project=project,
        environment=environment,
        files=[_file(f) for f in result.files],
        warnings=[_problem(p) for p in result.warnings],
        keys=_keys(result.keys),
    )


@router.post("/environments/{environment}/check", response_model=CheckOut)
async def check_manifest(
    project: str,
    environment: str,
    body: CheckRequest,
    rt: RuntimeDep,
    ctx: CtxDep,
    actor: ActorDep,
    response: Response,
) -> CheckOut:
    """Every problem a compile of these targets would meet; never a value."""
    result = await svc.check_manifest(
        rt,
        ctx,
        actor,
        project=project,
        environment=environment,
        manifest=body.manifest,
        targets=list(body.targets),
        role=body.role,
    )
    response.headers.update(NO_STORE)
    return CheckOut(
        project=project,
        environment=environment,
        ok=not any(p.level == "error" for p in result.problems),
        problems=[_problem(p) for p in result.problems],
        keys=_keys(result.keys),
    )


@router.post("/environments/{environment}/values", response_model=ValuesOut)
async def read_values(
    project: str,
    environment: str,
    body: ValuesRequest,
    rt: RuntimeDep,
    ctx: CtxDep,
    actor: ActorDep,
    response: Response,
) -> ValuesOut:
    """The named values (inheritance applied), all or nothing; what `strongroom kamal fetch` prints."""
    values = await svc.read_values(
        rt, ctx, actor, project=project, environment=environment, names=list(body.names)
    )
    response.headers.update(NO_STORE)
    return ValuesOut(
        project=project,
        environment=environment,
        values={
            name: ResolvedValueOut(
                value=v.value, version=v.version, environment=v.environment, sensitive=v.sensitive
            )
            for name, v in values.items()
        },
    )


@router.get("/diff", response_model=DiffOut)
async def diff_environments(
    project: str,
    rt: RuntimeDep,
    ctx: CtxDep,
    actor: ActorDep,
    response: Response,
    a: Annotated[str, Query(min_length=1, max_length=64)],
    b: Annotated[str, Query(min_length=1, max_length=64)],
) -> DiffOut:
    """Keys only in one environment and keys whose values differ, by fingerprint (never values)."""
    diff = await svc.diff_environments(rt, ctx, actor, project=project, a=a, b=b)
    response.headers.update(NO_STORE)

    def fp(f: svc.Fingerprint) -> FingerprintOut:
        return FingerprintOut(fingerprint=f.fingerprint, version=f.version, environment=f.environment)

    return DiffOut(
        project=project,
        a=a,
        b=b,
        only_in_a=diff.only_in_a,
        only_in_b=diff.only_in_b,
        different=[DifferentOut(name=n, a=fp(x), b=fp(y)) for n, x, y in diff.different],
        same=diff.same,
    )
