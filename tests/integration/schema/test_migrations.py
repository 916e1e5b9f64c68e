"""Alembic migrations on SQLite and PostgreSQL: up, down, up again; no drift from the models; CLI and
startup schema checks."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from click.testing import CliRunner
from fastapi.testclient import TestClient
from sqlalchemy import inspect
from sqlalchemy.engine import Connection

import broker.models  # noqa: F401  (registers the tables on the metadata)
from broker.cli import main as server_cli
from broker.db import migrate
from broker.db.base import metadata
from broker.db.engine import make_engine
from broker.errors import Unavailable
from broker.main import build_runtime, create_app
from tests.conftest import keyring_json, make_settings

MODEL_TABLES = set(metadata.tables)


async def _inspect(url: str, fn: Any) -> Any:
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(fn)
    finally:
        await engine.dispose()


def tables(url: str) -> set[str]:
    """Table names in the database."""
    return set(asyncio.run(_inspect(url, lambda c: inspect(c).get_table_names())))


def revision(url: str) -> str | None:
    """The revision stamped in the database."""

    async def go() -> str | None:
        engine = make_engine(url)
        try:
            return await migrate.current_revision(engine)
        finally:
            await engine.dispose()

    return asyncio.run(go())


def drift(url: str) -> list[Any]:
    """What autogenerate would change to make the database match the models (empty when none)."""

    def compare(conn: Connection) -> list[Any]:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True})
        return list(compare_metadata(ctx, metadata))

    result: list[Any] = asyncio.run(_inspect(url, compare))
    return result


def test_model_tables_exist() -> None:
    assert {"principals", "secrets", "secret_versions", "audit_events"} <= MODEL_TABLES


def test_upgrade_downgrade_upgrade(empty_db_url: str) -> None:
    url = empty_db_url
    head = migrate.head_revision(url)
    assert head is not None
    assert revision(url) is None
    assert tables(url) == set()

    migrate.upgrade(url)
    assert revision(url) == head
    assert tables(url) == MODEL_TABLES | {"alembic_version"}

    migrate.downgrade(url, "base")
    assert tables(url) == {"alembic_version"}, "downgrade to base must drop every table"
    assert revision(url) is None

    migrate.upgrade(url)
    assert revision(url) == head
    assert tables(url) == MODEL_TABLES | {"alembic_version"}
    # Upgrading an up-to-date database is a no-op.
    migrate.upgrade(url)
    assert revision(url) == head


def test_models_and_migrations_do_not_drift(empty_db_url: str) -> None:
    migrate.upgrade(empty_db_url)
    assert drift(empty_db_url) == []


def test_drift_check_sees_a_difference(empty_db_url: str) -> None:
    """The drift check is not vacuous: on an empty database it reports every table as missing."""
    diffs = drift(empty_db_url)
    added = {d[1].name for d in diffs if d[0] == "add_table"}
    assert added == MODEL_TABLES


def test_cli_db_current_prints_the_revision(
    empty_db_url: str, tmp_path: Path, fresh_settings_cache: None
) -> None:
    env = {
        "STRONGROOM_DATABASE_URL": empty_db_url,
        "STRONGROOM_KEYRING": keyring_json(),
        "STRONGROOM_DATA_DIR": str(tmp_path / "data"),
    }
    head = migrate.head_revision(empty_db_url)
    runner = CliRunner()

    r = runner.invoke(server_cli, ["db", "current"], env=env)
    assert r.exit_code == 0, r.output
    assert "current: empty" in r.output
    assert f"head: {head}" in r.output

    r = runner.invoke(server_cli, ["db", "upgrade"], env=env)
    assert r.exit_code == 0, r.output

    r = runner.invoke(server_cli, ["db", "current"], env=env)
    assert r.exit_code == 0, r.output
    assert f"current: {head}" in r.output
    assert f"head: {head}" in r.output

    r = runner.invoke(server_cli, ["db", "downgrade", "base"], env=env)
    assert r.exit_code == 0, r.output
    r = runner.invoke(server_cli, ["db", "current"], env=env)
    assert "current: empty" in r.output


@pytest.mark.parametrize("empty_db_url", ["postgresql"], indirect=True)
def test_lifespan_refuses_a_database_that_is_behind(empty_db_url: str, tmp_path: Path) -> None:
    runtime = build_runtime(make_settings(empty_db_url, tmp_path))
    app = create_app(runtime)
    with pytest.raises(Unavailable) as info:  # noqa: SIM117
        with TestClient(app):
            pass
    assert "strongroom-server db upgrade" in info.value.message
    assert "nothing" in info.value.message


@pytest.mark.parametrize("empty_db_url", ["postgresql"], indirect=True)
def test_lifespan_starts_once_upgraded(empty_db_url: str, tmp_path: Path) -> None:
    migrate.upgrade(empty_db_url)
    runtime = build_runtime(make_settings(empty_db_url, tmp_path))
    with TestClient(create_app(runtime)) as c:
        assert c.get("/up").status_code == 200
