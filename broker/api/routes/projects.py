"""Projects and environments."""

from __future__ import annotations

from fastapi import APIRouter, Response

from broker.api.deps import ActorDep, CtxDep, RuntimeDep
from broker.api.routes.common import PROBLEMS
from broker.api.routes.lean import LeanRoute
from broker.api.schemas import (
    EnvironmentCreate,
    EnvironmentList,
    EnvironmentOut,
    EnvironmentUpdate,
    ProjectCreate,
    ProjectList,
    ProjectOut,
    ProjectUpdate,
)
from broker.services import projects as svc

router = APIRouter(route_class=LeanRoute, prefix="/v1/projects", responses=PROBLEMS, tags=["projects"])


def _p(view: svc.ProjectView) -> ProjectOut:
    return ProjectOut(slug=view.slug, description=view.description, created_at=view.created_at)


def _e(view: svc.EnvironmentView) -> EnvironmentOut:
    return EnvironmentOut(slug=view.slug, parent=view.parent, created_at=view.created_at)


@router.get("", response_model=ProjectList)
async def list_projects(rt: RuntimeDep, ctx: CtxDep, actor: ActorDep) -> ProjectList:
    """Projects the token holds a scope on."""
    return ProjectList(projects=[_p(p) for p in await svc.list_projects(rt, ctx, actor)])


@router.post("", status_code=201, response_model=ProjectOut)
async def create_project(body: ProjectCreate, rt: RuntimeDep, ctx: CtxDep, actor: ActorDep) -> ProjectOut:
    """Create a project."""
    return _p(await svc.create_project(rt, ctx, actor, slug=body.slug, description=body.description))


@router.get("/{project}", response_model=ProjectOut)
async def get_project(project: str, rt: RuntimeDep, ctx: CtxDep, actor: ActorDep) -> ProjectOut:
    """One project."""
    return _p(await svc.get_project(rt, ctx, actor, project=project))


@router.patch("/{project}", response_model=ProjectOut)
async def update_project(
    project: str, body: ProjectUpdate, rt: RuntimeDep, ctx: CtxDep, actor: ActorDep
) -> ProjectOut:
    """Change a project's description."""
    return _p(await svc.update_project(rt, ctx, actor, project=project, description=body.description))


@router.delete("/{project}", status_code=204)
async def delete_project(project: str, rt: RuntimeDep, ctx: CtxDep, actor: ActorDep) -> Response:
    """Delete a project with no environments."""
    await svc.delete_project(rt, ctx, actor, project=project)
    return Response(status_code=204)


@router.get("/{project}/environments", response_model=EnvironmentList)
async def list_environments(project: str, rt: RuntimeDep, ctx: CtxDep, actor: ActorDep) -> EnvironmentList:
    """Environments of a project."""
    return EnvironmentList(
        environments=[_e(e) for e in await svc.list_environments(rt, ctx, actor, project=project)]
    )


@router.post("/{project}/environments", status_code=201, response_model=EnvironmentOut)
async def create_environment(
    project: str, body: EnvironmentCreate, rt: RuntimeDep, ctx: CtxDep, actor: ActorDep
) -> EnvironmentOut:
    """Create an environment, optionally inheriting from a parent."""
    return _e(
        await svc.create_environment(rt, ctx, actor, project=project, slug=body.slug, parent=body.parent)
    )


@router.get("/{project}/environments/{environment}", response_model=EnvironmentOut)
async def get_environment(
    project: str, environment: str, rt: RuntimeDep, ctx: CtxDep, actor: ActorDep
) -> EnvironmentOut:
    """One environment."""
    return _e(await svc.get_environment(rt, ctx, actor, project=project, environment=environment))


@router.patch("/{project}/environments/{environment}", response_model=EnvironmentOut)
async def update_environment(
    project: str, environment: str, body: EnvironmentUpdate, rt: RuntimeDep, ctx: CtxDep, actor: ActorDep
) -> EnvironmentOut:
    """Change what an environment inherits from."""
    return _e(
        await svc.update_environment(
            rt, ctx, actor, project=project, environment=environment, parent=body.parent
        )
    )


@router.delete("/{project}/environments/{environment}", status_code=204)
async def delete_environment(
    project: str, environment: str, rt: RuntimeDep, ctx: CtxDep, actor: ActorDep
) -> Response:
    """Delete an environment with no secrets and no inheriting environments."""
    await svc.delete_environment(rt, ctx, actor, project=project, environment=environment)
    return Response(status_code=204)
