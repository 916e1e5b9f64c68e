"""The console provider's discovery against a real HTTP server on loopback: a failure is remembered for
FAILURE_AGE seconds (the provider is not asked again by every click), and provider calls have their own
worker-thread limiter. The provider's clock is a list the test moves; no test waits."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest

from broker.oidc import from_file
from broker.oidc.sso import FAILURE_AGE, ConsoleProvider
from broker.oidc.upstream import FetchFailed
from broker.services import oidc


class Discovery:
    """A discovery endpoint on loopback that answers 503 until told to serve; it counts the requests."""

    def __init__(self) -> None:
        self.serving = False
        self.requests = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                owner.requests += 1
                issuer = owner.issuer
                doc = {
                    "issuer": issuer,
                    "authorization_endpoint": issuer + "/auth",
                    "token_endpoint": issuer + "/token",
                    "jwks_uri": issuer + "/jwks",
                    "code_challenge_methods_supported": ["S256"],
                }
                body = json.dumps(doc).encode()
                self.send_response(200 if owner.serving else 503)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def discovery() -> Iterator[Discovery]:
    server = Discovery()
    yield server
    server.server.shutdown()
    server.server.server_close()


def _provider(tmp_path: Path, issuer: str) -> ConsoleProvider:
    secret = tmp_path / "console.secret"
    secret.write_text("console-secret\n")
    secret.chmod(0o600)
    console = {
        "name": "lab",
        "label": "Lab",
        "issuer": issuer,
        "client_id": "strongroom",
        "client_secret_file": str(secret),
        "redirect_url": "http://127.0.0.1:8000/console/sso/callback",
        "allow_networks": ["127.0.0.0/8"],
        "roles": [
            {
                "name": "ops",
                "bound_claims": {"groups": "ops"},
                "scopes": [{"project": "*", "environments": "*", "actions": ["audit"]}],
            }
        ],
    }
    path = tmp_path / "oidc.json"
    path.write_text(json.dumps({"format": "strongroom-oidc/1", "console": console}))
    path.chmod(0o600)
    loaded = from_file(path)
    assert loaded.console is not None
    return loaded.console


def test_a_failed_discovery_is_remembered_for_thirty_seconds(tmp_path: Path, discovery: Discovery) -> None:
    provider = _provider(tmp_path, discovery.issuer)
    now = [1000.0]
    provider.clock = lambda: now[0]
    with pytest.raises(FetchFailed) as first:
        provider.endpoints()
    assert discovery.requests == 1
    discovery.serving = True  # the provider is back, but the failure is still remembered
    now[0] += FAILURE_AGE - 1
    with pytest.raises(FetchFailed) as again:
        provider.endpoints()
    assert str(again.value) == str(first.value) and discovery.requests == 1
    now[0] += 2
    assert provider.endpoints().token == discovery.issuer + "/token"
    assert discovery.requests == 2
    # Once found, the document is reused (for an hour) and the old failure is forgotten.
    assert provider.endpoints().authorization == discovery.issuer + "/auth"
    assert discovery.requests == 2


def test_provider_calls_have_their_own_worker_thread_limiter() -> None:
    async def limiters() -> tuple[anyio.CapacityLimiter, anyio.CapacityLimiter, anyio.CapacityLimiter]:
        return (
            oidc.provider_limiter(),
            oidc.provider_limiter(),
            anyio.to_thread.current_default_thread_limiter(),
        )

    ours, same, default = anyio.run(limiters)
    assert ours is same and ours is not default
    assert ours.total_tokens == oidc.PROVIDER_THREADS < default.total_tokens
