"""Fixtures for schema tests: a fresh, empty database (never migrated) on SQLite and PostgreSQL."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from broker.config import get_settings
from tests.support import pg

_counter = itertools.count()


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database: a new SQLite file, or a new PostgreSQL database (not from the template)."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"
    cluster: pg.Cluster = request.getfixturevalue("pg_cluster")
    name = f"schema{os.getpid()}_{next(_counter)}"
    cluster.psql(f"CREATE DATABASE {name}")
    return cluster.url(name)


@pytest.fixture
def fresh_settings_cache() -> Iterator[None]:
    """get_settings() is cached per process; CLI tests set the environment, so clear it around them."""
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()
