"""Fixtures for the console's tests: an in-process broker with an admin, an auditor and helpers to sign in
through the console's own form, as a browser would (the HTTP tests), and the browser tests' own setup."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from broker.main import build_runtime, create_app
from broker.services.auth import bootstrap_admin
from broker.services.runtime import Runtime
from tests.conftest import make_settings, sqlite_db

# The base URL the test client talks to: loopback over plain HTTP, where the session cookie is not Secure
# (a browser would not send a Secure cookie back over http). ORIGIN is what a browser sends as Origin.
ORIGIN = "http://127.0.0.1:8000"
AUDITOR_SCOPES = [{"project": "*", "environments": "*", "actions": ["audit"]}]


@pytest.fixture(params=["sqlite"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """SQLite only: the console runs no SQL of its own (the services it calls are tested on both)."""
    return sqlite_db(tmp_path / "broker.db", request.getfixturevalue("sqlite_template"))


@dataclass
class Console:
    """An in-process broker and its console, with an admin's and an auditor's credentials."""

    client: TestClient
    rt: Runtime
    admin_secret: str
    admin_headers: dict[str, str]

    def identity(self, name: str, scopes: list[dict[str, Any]]) -> tuple[str, str]:
        """Create an identity through the API; its client id and secret."""
        r = self.client.post(
            "/v1/identities",
            json={"name": name, "client_id": name, "scopes": scopes},
            headers=self.admin_headers,
        )
        assert r.status_code == 201, r.text
        return name, r.json()["client_secret"]

    def fresh(self) -> TestClient:
        """Another browser: its own cookie jar, on the same app and event loop."""
        c = TestClient(self.client.app, base_url=ORIGIN, client=("127.0.0.1", 50001))
        c.portal = self.client.portal
        return c

    def sign_in(self, client_id: str, secret: str, browser: TestClient | None = None) -> TestClient:
        """Sign in through the console's form (its double-submit nonce included); the signed-in client."""
        b = browser or self.fresh()
        page = b.get("/console/login")
        nonce = form_value(page.text, "nonce")
        r = b.post(
            "/console/login",
            data={"nonce": nonce, "client_id": client_id, "client_secret": secret},
            headers={"Origin": ORIGIN},
            follow_redirects=False,
        )
        assert r.status_code == 303, r.text
        return b


def form_value(html: str, name: str) -> str:
    """The value of a hidden form field in a page."""
    m = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert m is not None, f"no {name} field in the page"
    return m.group(1)


@pytest.fixture
def console(db_url: str, tmp_path: Path) -> Iterator[Console]:
    """A broker in process with its admin signed in through the API."""
    rt = build_runtime(make_settings(db_url, tmp_path, audit_fingerprint_limit=1000))
    with TestClient(create_app(rt), base_url=ORIGIN, client=("127.0.0.1", 50000)) as c:
        created = c.portal.call(bootstrap_admin, rt)  # type: ignore[union-attr]
        assert created is not None
        r = c.post("/v1/auth/token", json={"client_id": "admin", "client_secret": created.client_secret})
        assert r.status_code == 200, r.text
        yield Console(c, rt, created.client_secret, {"Authorization": f"Bearer {r.json()['token']}"})
