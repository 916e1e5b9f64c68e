"""Schema migrations through Alembic, driven from the broker's settings."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import AsyncEngine

# The revisions ship inside the package (package data), so an installed broker (`pipx install .`, the image)
# migrates exactly as a checkout does; alembic.ini stays beside the checkout for the `alembic` command.
_SCRIPTS = Path(__file__).resolve().parents[1] / "migrations"
_INI = Path(__file__).resolve().parents[2] / "alembic.ini"


def alembic_config(url: str) -> Config:
    """Alembic config pointing at broker/migrations/ with the given URL."""
    cfg = Config(str(_INI)) if _INI.exists() else Config()
    cfg.set_main_option("script_location", str(_SCRIPTS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Upgrade the schema (blocking; runs its own event loop)."""
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str) -> None:
    """Downgrade the schema (blocking)."""
    command.downgrade(alembic_config(url), revision)


def head_revision(url: str) -> str | None:
    """The newest revision in broker/migrations/."""
    return ScriptDirectory.from_config(alembic_config(url)).get_current_head()


async def current_revision(engine: AsyncEngine) -> str | None:
    """The revision the database is at, or None for an empty database."""
    async with engine.connect() as conn:
        return await conn.run_sync(lambda c: MigrationContext.configure(c).get_current_revision())
