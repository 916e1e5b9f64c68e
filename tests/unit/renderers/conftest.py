"""Fixtures for the renderer tests: the oracles that need a process (Node, Ruby, shells) and the sentinel."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import need
from tests.support import render_oracles
from tests.unit.renderers.values import SENTINEL, SENTINEL_DIR


def pytest_make_parametrize_id(config: pytest.Config, val: object, argname: str) -> str | None:
    """Test ids name the sentinel, not its per-process path: every xdist worker must collect the same ids."""
    if isinstance(val, str) and str(SENTINEL_DIR) in val:
        return val.replace(str(SENTINEL_DIR), "SENTINEL")
    return None


@pytest.fixture(scope="session")
def node_dotenv() -> Iterator[render_oracles.LineServer]:
    """Node's dotenv.parse (npm package dotenv, installed under NODE_PREFIX by .ci/run)."""
    if render_oracles.node_dotenv_module() is None:
        need(
            "Node dotenv is not installed: apt-get install nodejs npm && npm install --prefix "
            f"{render_oracles.NODE_PREFIX} dotenv@17"
        )
    server = render_oracles.start_node_dotenv()
    yield server
    server.close()


@pytest.fixture(scope="session")
def ruby_dotenv() -> Iterator[render_oracles.LineServer]:
    """Ruby's Dotenv::Parser (Debian package ruby-dotenv)."""
    if not render_oracles.ruby_dotenv_available():
        need("Ruby dotenv is not installed: apt-get install ruby ruby-dotenv")
    server = render_oracles.start_ruby_dotenv()
    yield server
    server.close()


@pytest.fixture(scope="session")
def shells() -> tuple[str, ...]:
    """The POSIX shells the export file is sourced by."""
    found = tuple(s for s in ("bash", "dash") if shutil.which(s))
    if len(found) < 2:
        need("bash and dash are needed to source the dotenv-export file (apt-get install bash dash)")
    return found


@pytest.fixture
def sentinel() -> Iterator[Path]:
    """The file a planted command would create; it must not exist after any oracle ran."""
    SENTINEL_DIR.mkdir(exist_ok=True)
    SENTINEL.unlink(missing_ok=True)
    yield SENTINEL
    SENTINEL.unlink(missing_ok=True)
