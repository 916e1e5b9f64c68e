"""Shared fixtures: a broker app on SQLite and on a real PostgreSQL, an admin token, canaries."""

from __future__ import annotations

import contextlib
import itertools
import os
import secrets
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings

from broker.config import Settings
from broker.db import migrate
from broker.keys import new_document
from broker.main import build_runtime, create_app
from broker.services.runtime import Runtime, utcnow
from tests.support import pg

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

# Hypothesis's per-example deadline (200 ms) and its too_slow health check judge wall time, so on a loaded
# machine they fail tests whose logic holds (seen: test_fetch_output_is_what_extract_reads at 385 ms). Results
# must not depend on load; speed is measured by bench/. A test's own @settings still overrides these.
settings.register_profile("strongroom", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("strongroom")


# Under pytest-xdist (./scripts/test runs `-n N --dist loadgroup`) session and package fixtures run once per
# worker. The tests of one heavy lab therefore share an xdist group, so one worker alone starts that lab, and
# those groups come first (they are the longest); every other test is grouped by its file, so a module
# fixture is set up once, not once per worker. Without xdist the marks do nothing and the order is kept.
_LAB_GROUPS = {"lab": "deploy-lab", "remote_lab": "remote-lab"}
# The longest file of all (an image built on a Debian base, ~4 min on one worker) starts before the labs.
_FIRST_FILES = ("tests/e2e/test_image.py",)


# tryfirst: on each worker xdist's own hook turns the marks into `@group` node-id suffixes, which is all its
# loadgroup scheduler reads; a conftest hook runs after it unless asked to run first.
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Give each test an xdist group (its lab, else its file): the image file first, then the labs."""
    del config
    for item in items:
        if item.get_closest_marker("xdist_group") is not None:
            continue
        names = set(getattr(item, "fixturenames", ()))
        group = next(
            (g for fixture, g in _LAB_GROUPS.items() if fixture in names), item.nodeid.split("::")[0]
        )
        item.add_marker(pytest.mark.xdist_group(group))
    rank = {g: 0 for g in _FIRST_FILES} | {g: 1 for g in _LAB_GROUPS.values()}
    items.sort(key=lambda item: rank.get(_group(item) or "", 2))  # stable: each group keeps its order


def _group(item: pytest.Item) -> str | None:
    mark = item.get_closest_marker("xdist_group")
    return str(mark.args[0]) if mark is not None and mark.args else None


def need(reason: str) -> None:
    """Skip on a laptop that lacks a service; under CI=true a missing service is a failure."""
    if IN_CI:
        pytest.fail(f"CI=true but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[pg.Cluster]:
    """One throwaway PostgreSQL cluster for the whole run, with a migrated template database."""
    if pg.find_bindir() is None:
        need("PostgreSQL binaries are not installed (apt-get install postgresql)")
    with pg.cluster() as cluster:
        cluster.psql("CREATE DATABASE strongroom_template")
        migrate.upgrade(cluster.url("strongroom_template"))
        yield cluster


_db_counter = itertools.count()


def keyring_json() -> str:
    """A fresh keyring document as text."""
    import json

    return json.dumps(new_document(utcnow(), dev=False))


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One SQLite file migrated to head for the whole run (per xdist worker); tests get copies of it."""
    path = tmp_path_factory.mktemp("sqlite-template") / "broker.db"
    migrate.upgrade(f"sqlite+aiosqlite:///{path}")
    # Everything in the main file, so that a copy of it alone is the whole database.
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return path


def sqlite_db(path: Path, template: Path) -> str:
    """A migrated, empty SQLite database at `path` (a copy of the migrated template, mode included)."""
    shutil.copy(template, path)
    return f"sqlite+aiosqlite:///{path}"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated, empty database: SQLite in tmp_path, or a fresh PostgreSQL database from the template."""
    if request.param == "sqlite":
        return sqlite_db(tmp_path / "broker.db", request.getfixturevalue("sqlite_template"))
    cluster: pg.Cluster = request.getfixturevalue("pg_cluster")
    name = f"t{os.getpid()}_{next(_db_counter)}"
    cluster.psql(f"CREATE DATABASE {name} TEMPLATE strongroom_template")
    return cluster.url(name)


def make_settings(db_url: str, tmp_path: Path, **extra: Any) -> Settings:
    """Settings for a test broker."""
    return Settings(database_url=db_url, data_dir=tmp_path / "data", keyring=keyring_json(), **extra)


@pytest.fixture
def runtime(db_url: str, tmp_path: Path) -> Runtime:
    """A runtime on the test database."""
    return build_runtime(make_settings(db_url, tmp_path))


@pytest.fixture
def client(runtime: Runtime) -> Iterator[TestClient]:
    """A TestClient on the app (lifespan checks the schema)."""
    with TestClient(create_app(runtime), client=("127.0.0.1", 50000)) as c:
        yield c


@pytest.fixture
def admin(client: TestClient, runtime: Runtime) -> dict[str, str]:
    """Bootstrap the admin through the service and log in over HTTP; returns auth headers."""
    from broker.services.auth import bootstrap_admin

    created = client.portal.call(bootstrap_admin, runtime)  # type: ignore[union-attr]
    assert created is not None
    r = client.post("/v1/auth/token", json={"client_id": "admin", "client_secret": created.client_secret})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['token']}"}


@pytest.fixture
def canary() -> str:
    """A random marker value that must never appear in any output."""
    return "CANARY" + secrets.token_hex(16)
