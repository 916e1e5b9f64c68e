"""What a refused SSO callback may not do: lock an address out, sign a person out, or go unexplained.

Any web page can send a browser to /console/sso/callback (an image, a link), with no pre-login cookie
and no state. These tests need no provider: every callback here is refused before one would be asked.
The provider in the OIDC file (idp.example.com) is never contacted.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from broker.console import security
from broker.main import build_runtime, create_app
from broker.services.auth import bootstrap_admin
from tests.conftest import make_settings
from tests.e2e.console.conftest import ORIGIN

pytestmark = pytest.mark.e2e

ATTACKED = "10.0.0.7"
IMAGE = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Dest": "image", "Sec-Fetch-Mode": "no-cors"}


def _oidc_file(root: Path) -> Path:
    secret = root / "console.secret"
    secret.write_text("console-client-secret\n")
    secret.chmod(0o600)
    console = {
        "name": "corp",
        "label": "Corp",
        "issuer": "https://idp.example.com",
        "client_id": "strongroom",
        "client_secret_file": str(secret),
        "redirect_url": ORIGIN + "/console/sso/callback",
        "roles": [
            {
                "name": "ops",
                "bound_claims": {"groups": "ops"},
                "scopes": [{"project": "*", "environments": "*", "actions": ["audit"]}],
            }
        ],
    }
    path = root / "oidc.json"
    path.write_text(json.dumps({"format": "strongroom-oidc/1", "console": console}))
    path.chmod(0o600)
    return path


@dataclass
class Broker:
    """A broker with console sign-in configured, a browser at ATTACKED and the admin's credentials."""

    browser: TestClient
    admin_secret: str
    admin_token: str

    def sso_events(self, limit: int) -> list[dict[str, Any]]:
        """The newest `auth.sso` events, asked from another address."""
        other = TestClient(self.browser.app, base_url=ORIGIN, client=("10.0.0.9", 50000))
        other.portal = self.browser.portal
        r = other.get(
            "/v1/audit/events",
            params={"action": "auth.sso", "limit": str(limit)},
            headers={"Authorization": f"Bearer {self.admin_token}"},
        )
        assert r.status_code == 200, r.text
        return list(r.json()["events"])


def _broker(db_url: str, root: Path, **settings: Any) -> Iterator[Broker]:
    rt = build_runtime(make_settings(db_url, root, **settings))
    with TestClient(create_app(rt), base_url=ORIGIN, client=(ATTACKED, 50000)) as browser:
        secret = browser.portal.call(bootstrap_admin, rt).client_secret
        r = browser.post("/v1/auth/token", json={"client_id": "admin", "client_secret": secret})
        assert r.status_code == 200, r.text
        yield Broker(browser, secret, r.json()["token"])


@pytest.fixture
def broker(db_url: str, tmp_path: Path) -> Iterator[Broker]:
    yield from _broker(db_url, tmp_path, oidc_file=_oidc_file(tmp_path))


def test_cross_site_callbacks_do_not_lock_the_address_out(broker: Broker) -> None:
    """More refused callbacks than the failed-login limit (10) guess nothing, so none is counted."""
    b = broker.browser
    for _ in range(6):
        assert b.get("/console/sso/callback").status_code == 401  # no pre-login cookie
    for _ in range(6):
        assert b.get("/console/sso/callback?state=guess&code=x").status_code == 401
    login = b.post("/v1/auth/token", json={"client_id": "admin", "client_secret": broker.admin_secret})
    assert login.status_code == 200, login.text
    api = b.get("/v1/projects", headers={"Authorization": f"Bearer {broker.admin_token}"})
    assert api.status_code == 200, api.text
    # Each refusal is still in the trail, with its reason.
    events = broker.sso_events(12)
    assert len(events) == 12
    assert {(e["outcome"], e["reason"]) for e in events} == {
        ("denied", "oidc: no sign-in started in this browser")
    }


def test_a_callback_not_opened_as_a_page_is_refused_uncounted_and_audited(broker: Broker) -> None:
    b = broker.browser
    for _ in range(11):
        r = b.get("/console/sso/callback?state=s&code=c", headers=IMAGE)
        assert r.status_code == 401 and "Sec-Fetch-Dest" in r.text
    assert b.get("/console/sso/callback", headers={"Sec-Fetch-Dest": "script"}).status_code == 401
    login = b.post("/v1/auth/token", json={"client_id": "admin", "client_secret": broker.admin_secret})
    assert login.status_code == 200, login.text
    event = broker.sso_events(1)[0]
    assert (event["outcome"], event["reason"]) == ("denied", "oidc: the callback was not opened as a page")
    # A top-level navigation (or a browser that sends no Sec-Fetch-Dest) goes on to the real checks.
    r = b.get("/console/sso/callback", headers={"Sec-Fetch-Dest": "document"})
    assert r.status_code == 401 and "no sign-in was started in this browser" in r.text


def test_a_refused_callback_leaves_the_session_cookie_alone(broker: Broker) -> None:
    b = broker.browser
    b.cookies.set(security.SESSION_COOKIE, "srt_the-persons-session", path="/console")
    for headers in ({}, IMAGE, {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Dest": "document"}):
        r = b.get("/console/sso/callback", headers=headers)
        assert r.status_code == 401
        assert not any(c.startswith(security.SESSION_COOKIE + "=") for c in r.headers.get_list("set-cookie"))
    assert b.cookies.get(security.SESSION_COOKIE) == "srt_the-persons-session"


def test_a_callback_without_sso_configured_is_audited_with_its_reason(db_url: str, tmp_path: Path) -> None:
    for broker in _broker(db_url, tmp_path):
        r = broker.browser.get("/console/sso/callback")
        assert r.status_code == 404
        event = broker.sso_events(1)[0]
        assert event["reason"] is not None and "not configured" in event["reason"]
