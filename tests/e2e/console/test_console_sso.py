"""Console sign-in with OpenID Connect against a real provider, in a real browser and by plain HTTP.

The provider is panva's `oidc-provider` 9.13.3 (a certified OpenID provider library, from npm) run by Node
on loopback by tests/support/oidc_provider.py, with one confidential client and a few accounts: an auditor,
an operator, one whose groups map to no console role, and one whose ID tokens its token endpoint swaps for
a token of another audience (the library never mints one; see the script). People sign in through the
library's development interactions (a login form taking any password, then consent): acceptable for a test
provider only. The provider's issuer is http://localhost:<port> while the broker is reached as 127.0.0.1,
so the provider's redirect back is cross-site for the browser, as in production (a port does not make
another site). The broker is a real `strongroom-server serve` process reading an OIDC file with a console
section; the browser is Debian's chromium, headless, through Debian's chromedriver.

The client secret is a canary: no page, log line, audit record or database byte may hold it.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from html import unescape
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import pytest
import requests
from fastapi.testclient import TestClient
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from broker.main import build_runtime, create_app
from broker.services.auth import bootstrap_admin
from tests.conftest import keyring_json, make_settings, need
from tests.e2e.conftest import BrokerProcess, start, stop
from tests.e2e.console.browser import click_and_leave
from tests.e2e.console.conftest import ORIGIN, Console
from tests.e2e.test_startup_errors import CANARY, one_sentence, server
from tests.support import oidc_provider
from tests.support.ports import closed_port, free_port

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CLIENT_ID = "strongroom-console"
IN_PROCESS_CALLBACK = ORIGIN + "/console/sso/callback"
BROWSER_UA = "Mozilla/5.0 (X11; Linux x86_64) strongroom-sso-test"
ACCOUNTS = {
    "ada": {"email": "ada@example.test", "groups": ["staff", "strongroom-auditors"]},
    "otto": {"email": "otto@example.test", "groups": ["strongroom-operators"]},
    "mallory": {"email": "mallory@example.test", "groups": ["contractors"]},
    "trudy": {"email": "trudy@example.test", "groups": ["strongroom-auditors"]},
    "dora": {"email": "dora@example.test", "groups": ["strongroom-auditors"]},
}


@dataclass
class Lab:
    """The provider, the broker, an admin's API headers and every page the tests were shown."""

    provider: oidc_provider.Provider
    broker: BrokerProcess
    admin: dict[str, str]
    secret: str
    root: Path
    pages: list[str] = field(default_factory=list)

    @property
    def callback(self) -> str:
        return f"{self.broker.url}/console/sso/callback"

    def browser(self) -> requests.Session:
        """A plain-HTTP browser: its own cookie jar, a browser's user agent."""
        http = requests.Session()
        http.trust_env = False
        http.headers["User-Agent"] = BROWSER_UA
        return http

    def begin(self, http: requests.Session, next_path: str | None = None) -> str:
        """Click "Sign in with ...": the provider's authorization URL the broker sends the browser to."""
        query = "?" + urlencode({"next": next_path}) if next_path else ""
        r = http.get(f"{self.broker.url}/console/sso/start{query}", allow_redirects=False, timeout=30)
        assert r.status_code == 303, r.text
        return str(r.headers["location"])

    def answer(self, http: requests.Session, url: str) -> requests.Response:
        """The browser arriving at the callback with the provider's answer."""
        r = http.get(url, allow_redirects=False, timeout=30)
        self.pages.append(r.text)
        return r

    def events(self, **query: str) -> list[dict[str, Any]]:
        """Audit events through the API, newest first (as an admin)."""
        r = requests.get(f"{self.broker.url}/v1/audit/events", params=query, headers=self.admin, timeout=30)
        assert r.status_code == 200, r.text
        return list(r.json()["events"])

    def last_sso(self) -> dict[str, Any]:
        """The newest sign-in event."""
        return self.events(action="auth.sso", limit="1")[0]


def _oidc_file(root: Path, issuer: str, redirect_url: str, secret: str) -> Path:
    secret_file = root / "console-client.secret"
    secret_file.write_text(secret + "\n")
    secret_file.chmod(0o600)
    console = {
        "name": "lab",
        "label": "Lab SSO",
        "issuer": issuer,
        "client_id": CLIENT_ID,
        "client_secret_file": str(secret_file),
        "redirect_url": redirect_url,
        "scopes": ["openid", "email", "groups"],
        "allow_networks": ["127.0.0.0/8"],
        "roles": [
            {
                "name": "operators",
                "bound_claims": {"groups": "strongroom-operators"},
                "scopes": [{"project": "*", "environments": "*", "actions": ["read", "write", "admin"]}],
            },
            {
                "name": "auditors",
                "bound_claims": {"groups": "strongroom-auditors"},
                "scopes": [{"project": "*", "environments": "*", "actions": ["audit"]}],
            },
        ],
    }
    path = root / "oidc.json"
    path.write_text(json.dumps({"format": "strongroom-oidc/1", "console": console}))
    path.chmod(0o600)
    return path


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    reason = oidc_provider.missing()
    if reason is not None:
        need(reason)
    root = tmp_path_factory.mktemp("sso")
    port = free_port()
    secret = "CANARY-sso-client-" + secrets.token_hex(16)
    provider = oidc_provider.start(
        root / "idp",
        clients=[
            {
                "client_id": CLIENT_ID,
                "client_secret": secret,
                # The second is the in-process broker's (tests/e2e/console/conftest.py ORIGIN).
                "redirect_uris": [f"http://127.0.0.1:{port}/console/sso/callback", IN_PROCESS_CALLBACK],
            }
        ],
        accounts=ACCOUNTS,
        tamper={"trudy": {"aud": "another-app"}},
    )
    broker = None
    try:
        broker = start(
            root / "data",
            root / "home" / ".config",
            root / "broker.log",
            port=port,
            server_env={
                "STRONGROOM_OIDC_FILE": str(
                    _oidc_file(root, provider.issuer, f"http://127.0.0.1:{port}/console/sso/callback", secret)
                ),
                # A refused code exchange or ID token counts against the address, as any failed login
                # does; this module refuses more than the default 10 from 127.0.0.1 on purpose.
                "STRONGROOM_AUTH_FAILURE_LIMIT": "1000",
            },
        )
        admin_secret = (broker.data_dir / "bootstrap-admin.secret").read_text().strip()
        r = requests.post(
            f"{broker.url}/v1/auth/token",
            # Module-wide: the broker's longest TTL, not the 15 min default a slow module could outlive.
            json={"client_id": "admin", "client_secret": admin_secret, "ttl": 8 * 3600},
            timeout=30,
        )
        assert r.status_code == 200, r.text
        yield Lab(provider, broker, {"Authorization": f"Bearer {r.json()['token']}"}, secret, root)
    finally:
        if broker is not None:
            stop(broker)
        provider.stop()


def _with(url: str, **changes: str) -> str:
    """`url` with some query parameters replaced."""
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()} | changes
    return parts._replace(query=urlencode(query)).geturl()


def _message(html: str) -> str:
    found = re.search(r'<p class="error" id="message">(.*?)</p>', html, re.DOTALL)
    assert found is not None, html[:2000]
    return unescape(found.group(1))


# --- by plain HTTP ------------------------------------------------------------------------------------


def test_a_callback_without_a_sign_in_started_in_this_browser_is_refused(lab: Lab) -> None:
    http = lab.browser()
    url = lab.begin(http)
    state = parse_qs(urlsplit(url).query)["state"][0]
    # The provider's answer arrives in another browser (no pre-login cookie): a login CSRF attempt.
    r = lab.answer(lab.browser(), f"{lab.callback}?{urlencode({'state': state, 'code': 'x'})}")
    assert r.status_code == 401
    assert "no sign-in was started in this browser" in _message(r.text)
    assert "strongroom_console=srt_" not in r.headers.get("set-cookie", "")
    event = lab.last_sso()
    assert (event["outcome"], event["reason"]) == ("denied", "oidc: no sign-in started in this browser")


def test_state_mismatch_is_refused_then_the_real_answer_works_once(lab: Lab) -> None:
    http = lab.browser()
    url = lab.begin(http)
    assert urlsplit(url).geturl().startswith(lab.provider.issuer + "/")
    query = parse_qs(urlsplit(url).query)
    assert query["code_challenge_method"] == ["S256"] and query["redirect_uri"] == [lab.callback]
    assert len(query["code_challenge"][0]) == 43 and query["nonce"][0] and query["state"][0]
    back = oidc_provider.walk_sign_in(http, url, login="ada", until=lab.callback)
    before = len(lab.events(action="auth.sso", limit="500"))

    for bad in (_with(back, state="forged"), re.sub(r"state=[^&]*&?", "", back)):
        r = lab.answer(http, bad)
        assert r.status_code == 401, r.text
        assert "does not belong to this browser's sign-in" in _message(r.text)
        assert lab.last_sso()["reason"] == "oidc: state mismatch"

    # The refused answers did not use the sign-in up; the provider's real answer opens a session.
    copied = http.cookies.get("strongroom_console_sso", path="/console/sso")
    assert copied
    r = lab.answer(http, back)
    assert r.status_code == 200, r.text
    assert "strongroom_console=" in r.headers["set-cookie"]
    event = lab.last_sso()
    assert event["outcome"] == "ok" and event["actor_name"] == "oidc:lab:ada"
    assert event["reason"] == "oidc console role auditors; matched groups=strongroom-auditors"

    assert 'strongroom_console_sso=""; ' in r.headers["set-cookie"]  # the pre-login cookie is forgotten
    # Replayed by someone who copied the answer and the pre-login cookie: refused before the provider is
    # asked again.
    thief = lab.browser()
    thief.cookies.set("strongroom_console_sso", copied, domain="127.0.0.1", path="/console/sso")
    r = lab.answer(thief, back)
    assert r.status_code == 401
    assert "already used" in _message(r.text)
    assert lab.last_sso()["reason"] == "oidc: replayed callback"
    # One event per answer: two forged, the real one, the replay.
    assert len(lab.events(action="auth.sso", limit="500")) == before + 4


def test_an_id_token_minted_for_another_nonce_is_refused(lab: Lab) -> None:
    http = lab.browser()
    # The provider is asked with this browser's state and PKCE challenge but another nonce, so the code is
    # genuine and redeemable and the ID token the provider mints carries a nonce this sign-in never sent.
    url = _with(lab.begin(http), nonce="a-nonce-from-another-sign-in")
    back = oidc_provider.walk_sign_in(http, url, login="ada", until=lab.callback)
    r = lab.answer(http, back)
    assert r.status_code == 401
    assert "ID token was refused (nonce mismatch)" in _message(r.text)
    event = lab.last_sso()
    assert (event["outcome"], event["reason"]) == ("denied", "oidc: nonce mismatch")


def test_an_id_token_for_another_audience_is_refused(lab: Lab) -> None:
    http = lab.browser()
    back = oidc_provider.walk_sign_in(http, lab.begin(http), login="trudy", until=lab.callback)
    r = lab.answer(http, back)
    assert r.status_code == 401
    assert "ID token was refused (wrong audience)" in _message(r.text)
    assert lab.last_sso()["reason"] == "oidc: wrong audience"
    assert not [e for e in lab.events(action="auth.sso", outcome="ok") if e["actor_name"] == "oidc:lab:trudy"]


def test_a_code_redeemed_by_another_sign_in_is_refused_by_the_provider(lab: Lab) -> None:
    http = lab.browser()
    first = oidc_provider.walk_sign_in(http, lab.begin(http), login="ada", until=lab.callback)
    code = parse_qs(urlsplit(first).query)["code"][0]
    # A second sign-in in the same browser, answered with the first one's code: its PKCE verifier differs.
    second = oidc_provider.walk_sign_in(http, lab.begin(http), login="ada", until=lab.callback)
    r = lab.answer(http, _with(second, code=code))
    assert r.status_code == 401
    assert "the provider refused the code (invalid_grant)" in _message(r.text)


def test_an_admin_can_disable_a_person_who_signs_in_with_sso(lab: Lab) -> None:
    def sign_in() -> requests.Response:
        http = lab.browser()
        return lab.answer(
            http, oidc_provider.walk_sign_in(http, lab.begin(http), login="dora", until=lab.callback)
        )

    assert sign_in().status_code == 200
    listed = requests.get(f"{lab.broker.url}/v1/identities", headers=lab.admin, timeout=30).json()
    rows = listed["identities"]
    dora = next(i for i in rows if i["name"] == "oidc:lab:dora")
    assert (dora["type"], dora["scopes"], dora["disabled"]) == (
        "user",
        [],
        False,
    )  # scopes come from the role
    url = f"{lab.broker.url}/v1/identities/{dora['client_id']}"
    assert requests.post(url + "/disable", headers=lab.admin, timeout=30).status_code == 200
    r = sign_in()
    assert r.status_code == 401 and "this account is disabled on the broker" in _message(r.text)
    assert lab.last_sso()["reason"] == "oidc: principal disabled"
    assert requests.post(url + "/enable", headers=lab.admin, timeout=30).status_code == 200
    assert sign_in().status_code == 200


def test_the_providers_error_answer_is_shown_inert_and_audited_without_its_text(lab: Lab) -> None:
    http = lab.browser()
    url = lab.begin(http)
    state = parse_qs(urlsplit(url).query)["state"][0]
    payload = '<script>alert(1)</script><img src=x onerror="alert(2)">'
    r = lab.answer(
        http,
        f"{lab.callback}?"
        + urlencode({"state": state, "error": "access_denied", "error_description": payload}),
    )
    assert r.status_code == 401
    assert "<script>alert" not in r.text and "<img src=x" not in r.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in r.text
    assert payload in _message(r.text)  # shown as text
    assert "Lab SSO did not sign you in (access_denied)" in _message(r.text)
    event = lab.last_sso()
    assert event["reason"] == "oidc: the provider answered access_denied"
    assert "alert" not in str(event)
    # The provider's own refusal (the person aborts at its login page) takes the same way.
    http = lab.browser()
    start = http.get(lab.begin(http), allow_redirects=True, timeout=30)
    abort = re.search(r'href="([^"]*/abort)"', start.text)
    assert abort is not None, start.text[:1000]
    back = urljoin(start.url, unescape(abort.group(1)))
    while not back.startswith(lab.callback):
        back = urljoin(back, http.get(back, allow_redirects=False, timeout=30).headers["location"])
    r = lab.answer(http, back)
    assert r.status_code == 401 and "(access_denied): End-User aborted interaction" in _message(r.text)


def test_a_late_answer_or_a_tampered_pre_login_cookie_is_refused(
    lab: Lab, db_url: str, tmp_path: Path
) -> None:
    """In process, to move the broker's clock: a sign-in answered after its 10 minutes is refused, and so
    is a pre-login cookie changed by one character (its MAC fails)."""
    oidc_file = _oidc_file(tmp_path, lab.provider.issuer, IN_PROCESS_CALLBACK, lab.secret)
    rt = build_runtime(make_settings(db_url, tmp_path, oidc_file=oidc_file))
    started = datetime.now(UTC)
    rt.clock = lambda: started
    with TestClient(create_app(rt), base_url=ORIGIN, client=("127.0.0.1", 50000)) as client:
        client.headers["User-Agent"] = BROWSER_UA
        r = client.get("/console/sso/start", follow_redirects=False)
        assert r.status_code == 303
        back = oidc_provider.walk_sign_in(lab.browser(), r.headers["location"], login="ada", until=ORIGIN)
        cookie = client.cookies.get("strongroom_console_sso")
        assert cookie

        forged = cookie[:5] + ("A" if cookie[5] != "A" else "B") + cookie[6:]
        client.cookies.set("strongroom_console_sso", forged, path="/console/sso")
        r = client.get(back, follow_redirects=False)
        assert r.status_code == 401 and "no sign-in was started in this browser" in _message(r.text)

        client.cookies.set("strongroom_console_sso", cookie, path="/console/sso")
        rt.clock = lambda: started + timedelta(minutes=11)
        r = client.get(back, follow_redirects=False)
        assert r.status_code == 401 and "took longer than 10 minutes" in _message(r.text)
        rt.clock = lambda: started + timedelta(minutes=1)
        r = client.get(back, follow_redirects=False)
        assert r.status_code == 200, r.text  # the same answer in time: neither refusal used it up
        assert "strongroom_console=srt_" in r.headers["set-cookie"]


def test_refused_code_exchanges_count_against_the_address_and_the_lock_out_is_audited(
    lab: Lab, db_url: str, tmp_path: Path
) -> None:
    """In process, from an address of its own with the default limit (10): an answer whose cookie and
    state match but whose code the provider refuses is a failed login; past the limit the address is
    locked out, and the locked-out callback's event says why."""
    oidc_file = _oidc_file(tmp_path, lab.provider.issuer, IN_PROCESS_CALLBACK, lab.secret)
    rt = build_runtime(make_settings(db_url, tmp_path, oidc_file=oidc_file))
    # The failure window (60 s) on a clock that stands still: eleven round trips to the provider on a loaded
    # machine must not let the first failures expire before the eleventh is counted.
    frozen = time.time()
    rt.limiter.clock = lambda: frozen
    with TestClient(create_app(rt), base_url=ORIGIN, client=("10.0.0.7", 50000)) as client:
        client.headers["User-Agent"] = BROWSER_UA
        for _ in range(10):
            r = client.get("/console/sso/start", follow_redirects=False)
            state = parse_qs(urlsplit(r.headers["location"]).query)["state"][0]
            r = client.get("/console/sso/callback?" + urlencode({"state": state, "code": "not-a-code"}))
            assert r.status_code == 401 and "code:" in _message(r.text)
        r = client.get("/console/sso/start", follow_redirects=False)
        state = parse_qs(urlsplit(r.headers["location"]).query)["state"][0]
        r = client.get("/console/sso/callback?" + urlencode({"state": state, "code": "not-a-code"}))
        assert r.status_code == 429 and r.headers["retry-after"]
        r = client.post("/v1/auth/token", json={"client_id": "admin", "client_secret": "wrong"})
        assert r.status_code == 429
        # The trail, read from another address (this one is locked out of the API too).
        other = TestClient(client.app, base_url=ORIGIN, client=("10.0.0.9", 50000))
        other.portal = client.portal
        secret = other.portal.call(bootstrap_admin, rt).client_secret
        token = other.post("/v1/auth/token", json={"client_id": "admin", "client_secret": secret}).json()[
            "token"
        ]
        r = other.get(
            "/v1/audit/events",
            params={"action": "auth.sso", "limit": "2"},
            headers={"Authorization": f"Bearer {token}"},
        )
    locked, refused = r.json()["events"]
    assert (locked["outcome"], locked["reason"]) == ("denied", "too many failed authentications; retry later")
    assert refused["reason"].startswith("oidc: ")  # the provider's refusal of the code, named


def test_off_loopback_the_pre_login_cookie_is_named_with_the_secure_prefix(lab: Lab) -> None:
    """A broker reached by a host name (as behind a TLS proxy) sets and reads `__Secure-strongroom_console_sso`."""
    named = {"Host": f"broker.example:{urlsplit(lab.broker.url).port}"}
    http = lab.browser()
    r = http.get(f"{lab.broker.url}/console/sso/start", headers=named, allow_redirects=False, timeout=30)
    assert r.status_code == 303, r.text
    cookie = r.headers["set-cookie"]
    assert cookie.startswith("__Secure-strongroom_console_sso=") and "Secure" in cookie
    value = cookie.split(";")[0].split("=", 1)[1]
    state = parse_qs(urlsplit(r.headers["location"]).query)["state"][0]
    answer = f"{lab.callback}?{urlencode({'state': state, 'error': 'access_denied'})}"
    for name, said in (
        ("strongroom_console_sso", "no sign-in was started in this browser"),  # the plain name is not read
        ("__Secure-strongroom_console_sso", "did not sign you in (access_denied)"),
    ):
        r = requests.get(
            answer, headers={**named, "Cookie": f"{name}={value}"}, allow_redirects=False, timeout=30
        )
        assert r.status_code == 401 and said in _message(r.text), r.text


@pytest.mark.parametrize(
    ("allow", "reason"),
    [
        (["127.0.0.0/8"], "the discovery document cannot be fetched (ConnectionError)"),
        ([], "refused unless listed in allow_networks"),  # the upstream guard: loopback is not public
    ],
)
def test_a_provider_that_cannot_be_reached_is_a_clear_503(
    db_url: str, tmp_path: Path, allow: list[str], reason: str
) -> None:
    """No provider runs here: a closed loopback port, then the same URL without the allow-list."""
    with closed_port() as port:
        path = _oidc_file(tmp_path, f"http://127.0.0.1:{port}", IN_PROCESS_CALLBACK, "unused")
        doc = json.loads(path.read_text())
        doc["console"]["allow_networks"] = allow
        path.write_text(json.dumps(doc))
        rt = build_runtime(make_settings(db_url, tmp_path, oidc_file=path))
        with TestClient(create_app(rt), base_url=ORIGIN, client=("127.0.0.1", 50000)) as client:
            r = client.get("/console/sso/start", follow_redirects=False)
            assert r.status_code == 503
            assert reason in _message(r.text) and "sign in with client credentials" in _message(r.text)
            assert "strongroom_console_sso" not in r.headers.get("set-cookie", "")


def test_without_a_console_section_there_is_no_sso_link_and_no_route(console: Console) -> None:
    page = console.fresh().get("/console/login")
    assert page.status_code == 200 and 'id="sso"' not in page.text
    r = console.fresh().get("/console/sso/start", follow_redirects=False)
    assert r.status_code == 404 and "not configured" in _message(r.text)


@pytest.mark.parametrize(
    ("change", "names"),
    [
        (lambda doc, secret: secret.chmod(0o644), ["console.client_secret_file", "chmod 600"]),
        (
            lambda doc, secret: doc["console"].update(redirect_url="https://x.example/console/"),
            ["console.redirect_url", "/console/sso/callback"],
        ),
    ],
)
def test_serve_refuses_a_bad_console_section_in_one_sentence(
    tmp_path: Path, change: Any, names: list[str]
) -> None:
    path = _oidc_file(
        tmp_path, "https://idp.example.com", "https://sr.example.com/console/sso/callback", CANARY
    )
    doc = json.loads(path.read_text())
    change(doc, tmp_path / "console-client.secret")
    path.write_text(json.dumps(doc))
    one_sentence(server(tmp_path, "serve", oidc_file=str(path), keyring=keyring_json()), *names)


# --- in the browser -----------------------------------------------------------------------------------


@dataclass
class Browser:
    """The browser and where its screenshots go."""

    driver: WebDriver
    shots: Path
    lab: Lab

    def open(self, path: str) -> None:
        self.driver.get(self.lab.broker.url + path)

    def text(self, css: str) -> str:
        return str(self.driver.find_element(By.CSS_SELECTOR, css).text)

    def shot(self, name: str) -> None:
        self.driver.save_screenshot(str(self.shots / f"{name}.png"))

    def click(self, css: str) -> None:
        """Click something that loads a new page and wait until the old one is gone."""
        click_and_leave(self.driver, css)

    def sign_in_at_provider(self, login: str, *, shots: bool = False) -> None:
        """Fill the provider's own login form, then its consent form."""
        WebDriverWait(self.driver, 30).until(lambda d: d.find_elements(By.NAME, "login"))
        self.driver.find_element(By.NAME, "login").send_keys(login)
        self.driver.find_element(By.NAME, "password").send_keys("any password")
        if shots:
            self.shot("02-provider-login")
        self.click("button[type=submit]")
        WebDriverWait(self.driver, 30).until(
            lambda d: d.find_elements(By.CSS_SELECTOR, "input[value=consent]") or "/console/" in d.current_url
        )
        if self.driver.find_elements(By.CSS_SELECTOR, "input[value=consent]"):
            self.click("button[type=submit]")

    def landed(self, heading: str) -> None:
        """Wait until the console page with this heading shows (after the callback's page moves on)."""
        WebDriverWait(self.driver, 30).until(
            lambda d: [h.text for h in d.find_elements(By.TAG_NAME, "h1")] == [heading]
        )
        self.lab.pages.append(str(self.driver.page_source))

    def forget(self) -> None:
        """A new person at the same browser: no cookie of the provider or the broker."""
        self.driver.get(self.lab.provider.issuer + "/.well-known/openid-configuration")
        self.driver.delete_all_cookies()
        self.open("/console/login")
        self.driver.delete_all_cookies()


@pytest.fixture(scope="module")
def browser(lab: Lab) -> Iterator[Browser]:
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        need(
            "Debian's chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)"
        )
    shots = lab.root / "screenshots"
    shots.mkdir()
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={lab.root / 'profile'}",
        "--window-size=1280,900",
    ):
        options.add_argument(arg)
    # The driver's path is given: Selenium Manager never runs, nothing is downloaded.
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        yield Browser(driver, shots, lab)
    finally:
        driver.quit()


def test_an_auditor_signs_in_with_sso_and_lands_on_the_trail(browser: Browser) -> None:
    browser.forget()
    browser.open("/console/audit")
    assert browser.text("h1") == "Sign in"
    assert browser.text("#sso") == "Sign in with Lab SSO"
    browser.shot("01-sign-in-with-sso")
    browser.click("#sso")
    assert browser.driver.current_url.startswith(browser.lab.provider.issuer + "/")
    browser.sign_in_at_provider("ada", shots=True)
    browser.landed("Audit trail")
    assert urlsplit(browser.driver.current_url).path == "/console/audit"
    assert browser.text("#who") == "oidc:lab:ada"
    # The session cookie is HttpOnly: page scripts see no cookie at all.
    assert browser.driver.execute_script("return document.cookie") == ""
    rows = browser.driver.find_elements(By.CSS_SELECTOR, "#events tbody tr")
    assert any("auth.sso" in r.text and "oidc:lab:ada" in r.text for r in rows)
    browser.shot("03-auditor-trail")
    # An audit-scoped session sees no operator page.
    for page in ("/console/tokens", "/console/identities"):
        browser.open(page)
        assert browser.text("h1") == "Not allowed", page
    browser.shot("04-auditor-refused-operator-page")


def test_an_operator_signs_in_with_sso_and_sees_operator_pages(browser: Browser) -> None:
    browser.forget()
    browser.open("/console/login")
    browser.click("#sso")
    browser.sign_in_at_provider("otto")
    browser.landed("Signed in as oidc:lab:otto")
    browser.open("/console/identities")
    assert browser.text("h1") != "Not allowed"
    assert "oidc:lab:ada" in browser.text("main")  # the auditor who signed in before, a user identity
    browser.open("/console/tokens")
    assert browser.text("h1") != "Not allowed"
    browser.lab.pages.append(str(browser.driver.page_source))
    browser.shot("05-operator-tokens")
    event = browser.lab.last_sso()
    assert event["actor_name"] == "oidc:lab:otto" and event["actor_type"] == "user"
    assert event["reason"] == "oidc console role operators; matched groups=strongroom-operators"


def test_an_unmapped_person_is_refused_with_a_clear_page(browser: Browser) -> None:
    browser.forget()
    browser.open("/console/login")
    browser.click("#sso")
    browser.sign_in_at_provider("mallory")
    WebDriverWait(browser.driver, 30).until(lambda d: d.find_elements(By.ID, "message"))
    assert browser.text("h1") == "Sign in"
    assert browser.text("#message") == (
        "your Lab SSO account is not mapped to any console role; ask an admin to add it "
        "(console.roles in the OIDC file)"
    )
    assert not [c for c in browser.driver.get_cookies() if c["name"] == "strongroom_console"]
    browser.lab.pages.append(str(browser.driver.page_source))
    browser.shot("06-unmapped-refused")
    event = browser.lab.last_sso()
    assert event["outcome"] == "denied"
    assert event["reason"] == "oidc: no console role matches the claims of oidc:lab:mallory"


def test_the_client_secret_is_in_no_page_log_audit_record_or_database(lab: Lab) -> None:
    assert lab.pages, "the tests above showed pages"
    for html in lab.pages:
        assert lab.secret not in html
    assert lab.secret not in lab.broker.log.read_text(errors="replace")
    export = requests.get(f"{lab.broker.url}/v1/audit/export", headers=lab.admin, timeout=60)
    assert export.status_code == 200 and "auth.sso" in export.text
    assert lab.secret not in export.text
    for path in lab.broker.data_dir.rglob("*"):
        if path.is_file() and path.name != "console-client.secret":
            assert lab.secret.encode() not in path.read_bytes(), path
