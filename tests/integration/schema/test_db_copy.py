"""`strongroom-server db copy`: a real SQLite broker database moved onto a real PostgreSQL database."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import os
import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from fastapi.testclient import TestClient
from sqlalchemy import func, inspect, select

from broker.cli import main as server_cli
from broker.db import migrate
from broker.db.engine import make_engine
from broker.main import build_runtime, create_app
from broker.models import Base
from broker.services.audit import chaining
from broker.services.auth import bootstrap_admin
from tests.conftest import keyring_json, make_settings, sqlite_db
from tests.integration.secrets.conftest import random_value
from tests.support import pg

_counter = itertools.count()
ENV = "/v1/projects/shop/environments"


@dataclass
class Source:
    """A broker's SQLite database with secrets, versions, inheritance, tokens and audit, and its keys."""

    url: str
    data_dir: Path
    keyring: str
    admin: dict[str, str]
    reader: dict[str, str]
    values: dict[tuple[str, str], str]
    old_version: str

    def env(self) -> dict[str, str]:
        return {"STRONGROOM_KEYRING": self.keyring, "STRONGROOM_DATA_DIR": str(self.data_dir)}


def counts(url: str) -> dict[str, int]:
    """Rows per table (of the tables the schema has at its revision)."""

    async def go() -> dict[str, int]:
        engine = make_engine(url, pool_size=1)
        try:
            async with engine.connect() as conn:
                present = set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
                return {
                    t.name: int((await conn.execute(select(func.count()).select_from(t))).scalar_one())
                    for t in Base.metadata.sorted_tables
                    if t.name in present
                }
        finally:
            await engine.dispose()

    return asyncio.run(go())


def pg_database(cluster: pg.Cluster, *, migrated: bool = True) -> str:
    name = f"copy{os.getpid()}_{next(_counter)}"
    cluster.psql(f"CREATE DATABASE {name}" + (" TEMPLATE strongroom_template" if migrated else ""))
    return cluster.url(name)


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> Source:
    """The source broker's database, filled once per module through the API (tests get copies of it)."""
    tmp_path = tmp_path_factory.mktemp("copy-source")
    url = sqlite_db(tmp_path / "broker.db", sqlite_template)
    keyring = keyring_json()
    settings = make_settings(url, tmp_path).model_copy(update={"keyring": keyring})
    runtime = build_runtime(settings)
    with TestClient(create_app(runtime), client=("127.0.0.1", 50000)) as c:
        created = c.portal.call(bootstrap_admin, runtime)  # type: ignore[union-attr]
        assert created is not None
        r = c.post("/v1/auth/token", json={"client_id": "admin", "client_secret": created.client_secret})
        admin = {"Authorization": f"Bearer {r.json()['token']}"}
        assert c.post("/v1/projects", json={"slug": "shop"}, headers=admin).status_code == 201
        for slug, parent in (("common", None), ("production", "common")):
            r = c.post(ENV, json={"slug": slug, "parent": parent}, headers=admin)
            assert r.status_code == 201, r.text
        values: dict[tuple[str, str], str] = {}
        old_version = random_value()
        for env, name in (("common", "SHARED"), ("production", "DB_PASSWORD"), ("production", "API_KEY")):
            first = old_version if name == "DB_PASSWORD" else random_value()
            values[env, name] = random_value()
            for value in (first, values[env, name]):
                r = c.put(f"{ENV}/{env}/secrets/{name}", json={"value": value}, headers=admin)
                assert r.status_code == 200, r.text
        r = c.post("/v1/tokens", json={}, headers=admin)
        assert r.status_code in (200, 201), r.text
        reader = {"Authorization": f"Bearer {r.json()['token']}"}
    asyncio.run(runtime.engine.dispose())
    with contextlib.closing(sqlite3.connect(tmp_path / "broker.db")) as conn:
        conn.execute(
            "PRAGMA wal_checkpoint(TRUNCATE)"
        )  # everything in the main file, so a copy of it is whole
    return Source(url, settings.data_dir, keyring, admin, reader, values, old_version)


@pytest.fixture
def source(filled: Source, tmp_path: Path, fresh_settings_cache: None) -> Source:
    """A private copy of the filled database and data directory (keys, audit checkpoints) for one test."""
    data_dir = tmp_path / "data"
    shutil.copytree(filled.data_dir, data_dir)
    url = sqlite_db(tmp_path / "broker.db", Path(filled.url.partition(":///")[2]))
    return dataclasses.replace(filled, url=url, data_dir=data_dir)


def copy(src: Source, *args: str) -> Result:
    return CliRunner().invoke(server_cli, ["db", "copy", "--from", src.url, *args], env=src.env())


def test_copy_moves_everything_and_a_broker_on_the_target_serves_it(
    source: Source, pg_cluster: pg.Cluster
) -> None:
    target = pg_database(pg_cluster)
    before = counts(source.url)

    r = copy(source, "--to", target)

    assert r.exit_code == 0, r.output
    assert "verified on the target" in r.output
    assert f"copied {sum(before.values())} rows" in r.output
    for value in (*source.values.values(), source.old_version):
        assert value not in r.output
    after = counts(target)
    assert {t: n for t, n in after.items() if not t.startswith("audit")} == {
        t: n for t, n in before.items() if not t.startswith("audit")
    }
    assert after["audit_events"] >= before["audit_events"] > 0
    assert counts(source.url) == before  # the source is left as it was

    # A broker on the target, with the source's keys, serves the same values to the same tokens.
    settings = make_settings(target, source.data_dir.parent).model_copy(update={"keyring": source.keyring})
    runtime = build_runtime(settings)
    with TestClient(create_app(runtime), client=("127.0.0.1", 50000)) as c:
        for (env, name), value in source.values.items():
            r = c.get(f"{ENV}/{env}/secrets/{name}", headers=source.reader)
            assert r.status_code == 200, r.text
            assert r.json()["value"] == value
        r = c.get(f"{ENV}/production/secrets/DB_PASSWORD", params={"version": 1}, headers=source.admin)
        assert r.status_code == 200, r.text
        assert r.json()["value"] == source.old_version
        resolved = c.get(f"{ENV}/production/resolved", headers=source.reader).json()["values"]
        assert resolved["SHARED"]["value"] == source.values["common", "SHARED"]
        # New rows get ids past the copied ones (the sequences were moved).
        r = c.put(f"{ENV}/production/secrets/NEW_ONE", json={"value": random_value()}, headers=source.admin)
        assert r.status_code == 200, r.text
        assert (
            c.post(ENV, json={"slug": "staging", "parent": "common"}, headers=source.admin).status_code == 201
        )
        assert c.post("/v1/tokens", json={}, headers=source.admin).status_code in (200, 201)
        report = c.portal.call(chaining.verify_database, runtime)  # type: ignore[union-attr]
    assert report.ok, report
    assert report.events > after["audit_events"] - 1


def test_refuses_a_target_that_holds_rows_and_changes_nothing(source: Source, pg_cluster: pg.Cluster) -> None:
    target = pg_database(pg_cluster)
    assert copy(source, "--to", target).exit_code == 0
    filled = counts(target)

    r = copy(source, "--to", target)

    assert r.exit_code == 1
    assert "--to: table " in r.output and "already holds rows" in r.output
    assert "nothing was copied" in r.output
    assert counts(target) == filled


def test_refuses_a_target_at_another_schema_revision(source: Source, pg_cluster: pg.Cluster) -> None:
    target = pg_database(pg_cluster, migrated=False)
    migrate.upgrade(target, "0006")

    r = copy(source, "--to", target)

    assert r.exit_code == 1
    head = migrate.head_revision(target)
    assert f"--to: the database schema is at 0006 but this broker needs {head}" in r.output
    assert all(n == 0 for n in counts(target).values())


def test_refuses_a_source_behind_the_target(source: Source, pg_cluster: pg.Cluster) -> None:
    migrate.downgrade(source.url, "0006")
    target = pg_database(pg_cluster)

    r = copy(source, "--to", target)

    assert r.exit_code == 1
    assert "--from: the database schema is at 0006" in r.output
    assert all(n == 0 for n in counts(target).values())


def test_an_unreachable_target_is_named_and_nothing_is_written(source: Source) -> None:
    r = copy(source, "--to", "postgresql://strongroom@127.0.0.1:1/strongroom")

    assert r.exit_code == 1
    assert "--to: cannot use the database (connection refused); nothing was copied" in r.output
    assert "Traceback" not in r.output


def test_a_missing_source_file_is_named_and_not_created(source: Source, tmp_path: Path) -> None:
    missing = tmp_path / "nope.db"
    r = CliRunner().invoke(
        server_cli,
        ["db", "copy", "--from", f"sqlite:///{missing}", "--to", "postgresql://x@127.0.0.1:1/y"],
        env=source.env(),
    )

    assert r.exit_code == 2
    assert f"{missing}: no such SQLite file" in r.output
    assert not missing.exists()


def test_the_target_defaults_to_the_database_setting(source: Source, pg_cluster: pg.Cluster) -> None:
    target = pg_database(pg_cluster)

    r = CliRunner().invoke(
        server_cli,
        ["db", "copy", "--from", source.url],
        env={**source.env(), "STRONGROOM_DATABASE_URL": target},
    )

    assert r.exit_code == 0, r.output
    assert counts(target)["secret_versions"] == counts(source.url)["secret_versions"] == 6


def test_a_keyring_that_is_not_the_sources_is_refused_before_copying(
    source: Source, pg_cluster: pg.Cluster
) -> None:
    target = pg_database(pg_cluster)

    r = CliRunner().invoke(
        server_cli,
        ["db", "copy", "--from", source.url, "--to", target],
        env={**source.env(), "STRONGROOM_KEYRING": keyring_json()},
    )

    assert r.exit_code == 1
    assert "--from: 6 of 6 sampled values do not decrypt with the configured keyring" in r.output
    assert "nothing was copied" in r.output
    assert all(n == 0 for n in counts(target).values())
    for value in source.values.values():
        assert value not in r.output
