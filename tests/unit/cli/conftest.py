"""Fixtures for the CLI unit tests.

The broker here is `standin_broker.StandinBroker`, a stand-in used only for CLI unit tests (see its
docstring); end-to-end tests against the real broker live in tests/e2e. Every test gets its own
XDG_CONFIG_HOME and HOME under tmp_path, so nothing touches the real home directory.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_test_support import CLIENT_ID, T0, Invoke, canary
from click.testing import CliRunner, Result
from standin_broker import StandinBroker

from cli import credentials, session
from cli.credentials import Credential
from cli.root import strongroom


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point XDG_CONFIG_HOME and HOME into tmp_path and clear every STRONGROOM_ variable."""
    config = tmp_path / "config"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(config))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for name in (
        "STRONGROOM_URL",
        "STRONGROOM_TOKEN",
        "STRONGROOM_PROJECT",
        "STRONGROOM_CA_FILE",
        "STRONGROOM_INSECURE",
        "STRONGROOM_PROFILE",
        "STRONGROOM_CONFIG",
        "NO_COLOR",
        "STRONGROOM_ID_TOKEN",
        "ACTIONS_ID_TOKEN_REQUEST_URL",
        "ACTIONS_ID_TOKEN_REQUEST_TOKEN",
        "CI_JOB_JWT_V2",
    ):
        monkeypatch.delenv(name, raising=False)
    return config


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The CLI's wall clock, frozen at T0; tests move it by assigning clock[0]. No boot clock: the wall decides."""
    now = [T0]
    monkeypatch.setattr(session, "wall_clock", lambda: now[0])
    monkeypatch.setattr(session, "boot_clock", lambda: None)
    return now


@pytest.fixture
def client_secret() -> str:
    """The stand-in identity's client secret (a canary too)."""
    return canary()


@pytest.fixture
def broker(client_secret: str) -> Iterator[StandinBroker]:
    """A running stand-in broker with one identity and a project `shop` with `common` <- `production`."""
    standin = StandinBroker()
    standin.add_client(CLIENT_ID, client_secret)
    standin.add_project("shop", "the web shop")
    standin.add_environment("shop", "common")
    standin.add_environment("shop", "production", parent="common")
    standin.start()
    try:
        yield standin
    finally:
        standin.stop()


@pytest.fixture
def cli() -> Invoke:
    """Run `strongroom ARGS...` in-process; keyword arguments go to CliRunner.invoke."""
    runner = CliRunner()

    def invoke(*args: str, **kwargs: object) -> Result:
        return runner.invoke(strongroom, list(args), **kwargs)  # type: ignore[arg-type]

    return invoke


@pytest.fixture
def secret_file(tmp_path: Path, client_secret: str) -> Path:
    """The client secret in a file, with the trailing newline an editor leaves."""
    path = tmp_path / "client-secret"
    path.write_text(client_secret + "\n")
    return path


@pytest.fixture
def cache_file(isolated_home: Path) -> Path:
    """Where the CLI caches the session in these tests."""
    return isolated_home / "strongroom" / "credentials.json"


@pytest.fixture
def logged_in(
    broker: StandinBroker, cli: Invoke, secret_file: Path, clock: list[float], cache_file: Path
) -> Credential:
    """A session cached by a real `strongroom login` at T0; the broker's request log starts empty after it."""
    result = cli("login", "--url", broker.url, "--client-id", CLIENT_ID, "--secret-file", str(secret_file))
    assert result.exit_code == 0, result.output
    credential = credentials.load(cache_file)
    assert credential is not None
    broker.requests.clear()
    return credential
