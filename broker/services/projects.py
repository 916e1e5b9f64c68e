"""Projects and environments."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.exc import IntegrityError as DbIntegrityError

from broker.db.base import DbRow
from broker.domain.inheritance import MAX_DEPTH
from broker.domain.names import check_slug
from broker.domain.request import Actor, RequestContext
from broker.domain.scopes import Action, allowed
from broker.errors import Conflict, Forbidden, Invalid, NotFound
from broker.repositories import projects as repo
from broker.services import audit
from broker.services.auth import require
from broker.services.runtime import Runtime


@dataclass(frozen=True)
class ProjectView:
    """A project as the API shows it."""

    slug: str
    description: str
    created_at: datetime


@dataclass(frozen=True)
class EnvironmentView:
    """An environment as the API shows it."""

    slug: str
    parent: str | None
    created_at: datetime


def _any_access(actor: Actor, project: str, environment: str | None = None) -> bool:
    if environment is None:
        return any(s.touches(project) for s in actor.scopes)
    return any(allowed(actor.scopes, a, project, environment) for a in Action)


def _require_any(actor: Actor, project: str, environment: str | None = None) -> None:
    if not _any_access(actor, project, environment):
        where = project if environment is None else f"{project}/{environment}"
        raise Forbidden(f"this token grants nothing on {where}")


async def list_projects(rt: Runtime, ctx: RequestContext, actor: Actor) -> list[ProjectView]:
    """Projects the caller holds any scope on."""
    ctx.about("project.list")
    if not actor.scopes:
        raise Forbidden("this token grants nothing")
    async with rt.engine.begin() as conn:
        rows = await repo.list_projects(conn)
        await audit.record(conn, rt, ctx)
    return [ProjectView(r.slug, r.description, r.created_at) for r in rows if _any_access(actor, r.slug)]


async def create_project(
    rt: Runtime, ctx: RequestContext, actor: Actor, *, slug: str, description: str
) -> ProjectView:
    """Create a project (admin on it)."""
    ctx.about("project.create", project=slug[:64])
    check_slug(slug, field="slug")
    require(actor, Action.ADMIN, slug, None)
    if len(description) > 1000:
        raise Invalid("description: at most 1000 characters", field="description")
    now = rt.clock()
    try:
        async with rt.engine.begin() as conn:
            await repo.add_project(conn, slug=slug, description=description, now=now)
            await audit.record(conn, rt, ctx, status=201)
    except DbIntegrityError:
        raise Conflict(f"slug: project {slug} already exists") from None
    return ProjectView(slug, description, now)


async def get_project(rt: Runtime, ctx: RequestContext, actor: Actor, *, project: str) -> ProjectView:
    """One project (any scope on it)."""
    ctx.about("project.read", project=project)
    check_slug(project, field="project")
    _require_any(actor, project)
    async with rt.engine.begin() as conn:
        row = await repo.get_project(conn, project)
        if row is None:
            raise NotFound(f"projects/{project}: no such project")
        await audit.record(conn, rt, ctx)
    return ProjectView(row.slug, row.description, row.created_at)


async def update_project(
    rt: Runtime, ctx: RequestContext, actor: Actor, *, project: str, description: str
) -> ProjectView:
    """Change a project's description (admin)."""
    ctx.about("project.update", project=project)
    check_slug(project, field="project")
    require(actor, Action.ADMIN, project, None)
    if len(description) > 1000:
        raise Invalid("description: at most 1000 characters", field="description")
    async with rt.engine.begin() as conn:
        row = await repo.get_project(conn, project)
        if row is None:
            raise NotFound(f"projects/{project}: no such project")
        await repo.update_project(conn, row.id, description=description)
        await audit.record(conn, rt, ctx)
    return ProjectView(row.slug, description, row.created_at)


async def delete_project(rt: Runtime, ctx: RequestContext, actor: Actor, *, project: str) -> None:
    """Delete an empty project (admin)."""
    ctx.about("project.delete", project=project)
    check_slug(project, field="project")
    require(actor, Action.ADMIN, project, None)
    async with rt.engine.begin() as conn:
        row = await repo.get_project(conn, project)
        if row is None:
            raise NotFound(f"projects/{project}: no such project")
        if await repo.count_environments(conn, row.id):
            raise Conflict(f"projects/{project}: delete its environments first")
        await repo.delete_project(conn, row.id)
        await audit.record(conn, rt, ctx, status=204)


async def list_environments(
    rt: Runtime, ctx: RequestContext, actor: Actor, *, project: str
) -> list[EnvironmentView]:
    """Environments of a project that the caller holds any scope on."""
    ctx.about("environment.list", project=project)
    check_slug(project, field="project")
    _require_any(actor, project)
    async with rt.engine.begin() as conn:
        row = await repo.get_project(conn, project)
        if row is None:
            raise NotFound(f"projects/{project}: no such project")
        envs = await repo.list_environments(conn, row.id)
        await audit.record(conn, rt, ctx)
    by_id = {e.id: e.slug for e in envs}
    return [
        EnvironmentView(e.slug, by_id.get(e.parent_id) if e.parent_id else None, e.created_at)
        for e in envs
        if _any_access(actor, project, e.slug)
    ]


async def _parent_id(conn: object, project_id: int, env_id: int | None, parent: str | None) -> int | None:
    if parent is None:
        return None
    check_slug(parent, field="parent")
    tree = await repo.environment_slugs(conn, project_id)  # type: ignore[arg-type]
    by_slug = {slug: (eid, pid) for eid, (slug, pid) in tree.items()}
    if parent not in by_slug:
        raise Invalid(f"parent: no environment {parent} in this project", field="parent")
    pid: int | None = by_slug[parent][0]
    target = pid
    depth = 0
    # Walk up from the new parent: meeting ourselves would make a cycle.
    while pid is not None:
        if pid == env_id:
            raise Invalid(
                f"parent: {parent} inherits from this environment; that would make a cycle", field="parent"
            )
        depth += 1
        if depth >= MAX_DEPTH:
            raise Invalid(f"parent: inheritance deeper than {MAX_DEPTH} levels", field="parent")
        pid = tree[pid][1]
    return target


async def create_environment(
    rt: Runtime, ctx: RequestContext, actor: Actor, *, project: str, slug: str, parent: str | None
) -> EnvironmentView:
    """Create an environment, optionally inheriting from a parent (admin on it)."""
    ctx.about("environment.create", project=project, environment=slug[:64])
    check_slug(project, field="project")
    check_slug(slug, field="slug")
    require(actor, Action.ADMIN, project, slug)
    now = rt.clock()
    try:
        async with rt.engine.begin() as conn:
            row = await repo.get_project(conn, project)
            if row is None:
                raise NotFound(f"projects/{project}: no such project")
            parent_id = await _parent_id(conn, row.id, None, parent)
            await repo.add_environment(conn, project_id=row.id, slug=slug, parent_id=parent_id, now=now)
            await audit.record(conn, rt, ctx, status=201)
    except DbIntegrityError:
        raise Conflict(f"slug: environment {slug} already exists in {project}") from None
    return EnvironmentView(slug, parent, now)


async def _require_env(conn: object, project: str, environment: str) -> DbRow:
    row = await repo.get_environment(conn, project, environment)  # type: ignore[arg-type]
    if row is None:
        raise NotFound(f"projects/{project}/environments/{environment}: no such environment")
    return row


async def get_environment(
    rt: Runtime, ctx: RequestContext, actor: Actor, *, project: str, environment: str
) -> EnvironmentView:
    """One environment (any scope on it)."""
    ctx.about("environment.read", project=project, environment=environment)
    check_slug(project, field="project")
    check_slug(environment, field="environment")
    _require_any(actor, project, environment)
    async with rt.engine.begin() as conn:
        row = await _require_env(conn, project, environment)
        tree = await repo.environment_slugs(conn, row[0])
        await audit.record(conn, rt, ctx)
    parent = tree[row[2]][0] if row[2] is not None else None
    return EnvironmentView(environment, parent, row[4])


async def update_environment(
    rt: Runtime, ctx: RequestContext, actor: Actor, *, project: str, environment: str, parent: str | None
) -> EnvironmentView:
    """Change what an environment inherits from (admin)."""
    ctx.about("environment.update", project=project, environment=environment)
    check_slug(project, field="project")
    check_slug(environment, field="environment")
    require(actor, Action.ADMIN, project, environment)
    async with rt.engine.begin() as conn:
        row = await _require_env(conn, project, environment)
        parent_id = await _parent_id(conn, row[0], row[1], parent)
        await repo.set_parent(conn, row[1], parent_id)
        await audit.record(conn, rt, ctx)
    return EnvironmentView(environment, parent, row[4])


async def delete_environment(
    rt: Runtime, ctx: RequestContext, actor: Actor, *, project: str, environment: str
) -> None:
    """Delete an environment with no secrets and no children (admin)."""
    ctx.about("environment.delete", project=project, environment=environment)
    check_slug(project, field="project")
    check_slug(environment, field="environment")
    require(actor, Action.ADMIN, project, environment)
    async with rt.engine.begin() as conn:
        row = await _require_env(conn, project, environment)
        if await repo.environment_in_use(conn, row[1]):
            raise Conflict(
                f"projects/{project}/environments/{environment}: still has secrets or inheriting environments"
            )
        await repo.delete_environment(conn, row[1])
        await audit.record(conn, rt, ctx, status=204)
