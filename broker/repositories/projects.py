"""Project and environment rows."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from broker.db.base import DbRow
from broker.models import environments, projects, secrets


async def get_project(conn: AsyncConnection, slug: str) -> DbRow | None:
    """The project row (id, slug, description, created_at) or None."""
    result = await conn.execute(
        select(projects.c.id, projects.c.slug, projects.c.description, projects.c.created_at).where(
            projects.c.slug == slug
        )
    )
    return result.first()


async def list_projects(conn: AsyncConnection) -> list[DbRow]:
    """Every project, by slug."""
    result = await conn.execute(
        select(projects.c.id, projects.c.slug, projects.c.description, projects.c.created_at).order_by(
            projects.c.slug
        )
    )
    return list(result.all())


async def add_project(conn: AsyncConnection, *, slug: str, description: str, now: datetime) -> int:
    """Insert a project and return its id."""
    result = await conn.execute(
        insert(projects).values(slug=slug, description=description, created_at=now).returning(projects.c.id)
    )
    return int(result.scalar_one())


async def update_project(conn: AsyncConnection, project_id: int, *, description: str) -> None:
    """Change a project's description."""
    await conn.execute(update(projects).where(projects.c.id == project_id).values(description=description))


async def delete_project(conn: AsyncConnection, project_id: int) -> None:
    """Delete a project row."""
    await conn.execute(delete(projects).where(projects.c.id == project_id))


async def count_environments(conn: AsyncConnection, project_id: int) -> int:
    """How many environments a project has."""
    result = await conn.execute(
        select(func.count()).select_from(environments).where(environments.c.project_id == project_id)
    )
    return int(result.scalar_one())


async def list_environments(conn: AsyncConnection, project_id: int) -> list[DbRow]:
    """Environments of a project (id, slug, parent_id, created_at)."""
    result = await conn.execute(
        select(environments.c.id, environments.c.slug, environments.c.parent_id, environments.c.created_at)
        .where(environments.c.project_id == project_id)
        .order_by(environments.c.slug)
    )
    return list(result.all())


async def get_environment(conn: AsyncConnection, project_slug: str, env_slug: str) -> DbRow | None:
    """(project_id, env_id, parent_id, slug, created_at) for a project and environment slug, or None."""
    result = await conn.execute(
        select(
            projects.c.id,
            environments.c.id,
            environments.c.parent_id,
            environments.c.slug,
            environments.c.created_at,
        )
        .join(environments, environments.c.project_id == projects.c.id)
        .where(projects.c.slug == project_slug, environments.c.slug == env_slug)
    )
    return result.first()


async def environment_slugs(conn: AsyncConnection, project_id: int) -> dict[int, tuple[str, int | None]]:
    """Map env id -> (slug, parent id) for a project, to walk inheritance without more queries."""
    result = await conn.execute(
        select(environments.c.id, environments.c.slug, environments.c.parent_id).where(
            environments.c.project_id == project_id
        )
    )
    return {row[0]: (row[1], row[2]) for row in result.all()}


async def add_environment(
    conn: AsyncConnection, *, project_id: int, slug: str, parent_id: int | None, now: datetime
) -> int:
    """Insert an environment and return its id."""
    result = await conn.execute(
        insert(environments)
        .values(project_id=project_id, slug=slug, parent_id=parent_id, created_at=now)
        .returning(environments.c.id)
    )
    return int(result.scalar_one())


async def set_parent(conn: AsyncConnection, env_id: int, parent_id: int | None) -> None:
    """Change an environment's parent."""
    await conn.execute(update(environments).where(environments.c.id == env_id).values(parent_id=parent_id))


async def environment_in_use(conn: AsyncConnection, env_id: int) -> bool:
    """Whether an environment still has secrets or child environments."""
    kids = await conn.execute(select(environments.c.id).where(environments.c.parent_id == env_id).limit(1))
    if kids.first() is not None:
        return True
    held = await conn.execute(select(secrets.c.id).where(secrets.c.environment_id == env_id).limit(1))
    return held.first() is not None


async def delete_environment(conn: AsyncConnection, env_id: int) -> None:
    """Delete an environment row."""
    await conn.execute(delete(environments).where(environments.c.id == env_id))
