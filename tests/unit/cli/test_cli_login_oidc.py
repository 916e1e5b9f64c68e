"""`strongroom login --oidc ROLE`: where the CI ID token comes from, and that it is never shown.

The broker is the stand-in (tests/unit/cli/standin_broker.py, CLI unit tests only); the broker's own
verification is tests/integration/auth/test_oidc.py. GitHub's ID token service is played by a small HTTP
server on loopback that answers like the documented one (`GET $ACTIONS_ID_TOKEN_REQUEST_URL&audience=...`
with the request token as a bearer, answering `{"value": JWT}`).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from cli_test_support import Invoke, canary
from standin_broker import StandinBroker

from cli import credentials


def _jwt() -> str:
    return f"eyJhbGciOiJSUzI1NiJ9.{canary()}.{canary()}"


@pytest.fixture
def github(broker: StandinBroker) -> Iterator[dict[str, Any]]:
    state: dict[str, Any] = {"bearer": canary(), "jwt": _jwt(), "seen": []}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            state["seen"].append((self.path, self.headers.get("Authorization")))
            ok = self.headers.get("Authorization") == f"Bearer {state['bearer']}"
            body = json.dumps({"value": state["jwt"]}).encode() if ok else b"{}"
            self.send_response(200 if ok else 403)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state["url"] = f"http://127.0.0.1:{server.server_address[1]}/token?api-version=2.0"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def test_github_actions_token_is_requested_for_the_audience_and_exchanged(
    broker: StandinBroker,
    cli: Invoke,
    github: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    cache_file: Path,
) -> None:
    monkeypatch.setenv("ACTIONS_ID_TOKEN_REQUEST_URL", github["url"])
    monkeypatch.setenv("ACTIONS_ID_TOKEN_REQUEST_TOKEN", github["bearer"])
    broker.oidc_tokens[("deploy-prod", github["jwt"])] = "oidc:github:repo:acme/app:environment:production"

    result = cli("login", "--url", broker.url, "--oidc", "deploy-prod")

    assert result.exit_code == 0, result.output
    assert "as oidc:github:repo:acme/app:environment:production" in result.stdout
    [(path, _)] = github["seen"]
    query = parse_qs(urlsplit(path).query)
    assert query == {"api-version": ["2.0"], "audience": [broker.url]}
    [call] = broker.calls("POST", "/v1/auth/oidc")
    assert call.body == {"role": "deploy-prod", "jwt": github["jwt"]}
    for secret in (github["jwt"], github["bearer"]):
        assert secret not in result.output
        assert secret not in cache_file.read_text()
    credential = credentials.load(cache_file)
    assert credential is not None and credential.client_id is None


def test_gitlab_variable_and_a_file_are_read(
    broker: StandinBroker, cli: Invoke, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from_env, from_file = _jwt(), _jwt()
    broker.oidc_tokens[("ci", from_env)] = "oidc:gitlab:env"
    broker.oidc_tokens[("ci", from_file)] = "oidc:gitlab:file"
    monkeypatch.setenv("STRONGROOM_ID_TOKEN", from_env)
    assert "as oidc:gitlab:env" in cli("login", "--url", broker.url, "--oidc", "ci").stdout
    token_file = tmp_path / "id-token"
    token_file.write_text(from_file + "\n")
    result = cli("login", "--url", broker.url, "--oidc", "ci", "--id-token-file", str(token_file))
    assert "as oidc:gitlab:file" in result.stdout, result.output


def test_a_refused_id_token_is_a_clear_error_without_its_text(
    broker: StandinBroker, cli: Invoke, monkeypatch: pytest.MonkeyPatch, cache_file: Path
) -> None:
    token = _jwt()
    monkeypatch.setenv("CI_JOB_JWT_V2", token)
    result = cli("login", "--url", broker.url, "--oidc", "ci")
    assert result.exit_code == 1
    assert "the broker refused this ID token for role ci" in result.stderr
    assert token not in result.output
    assert not cache_file.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--oidc", "ci"), "no CI ID token found"),
        (("--oidc", "ci", "--client-id", "x"), "drop --client-id"),
        (("--audience", "x", "--client-id", "x"), "go with --oidc ROLE"),
    ],
)
def test_usage_errors_send_nothing(
    broker: StandinBroker, cli: Invoke, args: tuple[str, ...], message: str
) -> None:
    result = cli("login", "--url", broker.url, *args)
    assert result.exit_code != 0
    assert message in result.stderr
    assert broker.calls() == []


def test_a_malformed_id_token_is_refused_before_the_broker(
    broker: StandinBroker, cli: Invoke, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STRONGROOM_ID_TOKEN", "not-a-jwt-" + canary())
    result = cli("login", "--url", broker.url, "--oidc", "ci")
    assert result.exit_code == 1
    assert "from STRONGROOM_ID_TOKEN is not a JWT" in result.stderr
    assert "not-a-jwt-" not in result.stderr
    assert broker.calls() == []
