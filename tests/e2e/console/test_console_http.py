"""The console's defences over plain HTTP (cheaper than a browser): headers, cookie, CSRF, Origin, scopes,
escaping and canaries. A real broker app in process on a real SQLite database; nothing is faked."""

from __future__ import annotations

import re
from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.routing import Route

from broker.api.edge import ROUTE_ACTIONS
from broker.console import security
from broker.console.app import build
from tests.e2e.console.conftest import AUDITOR_SCOPES, ORIGIN, Console, form_value

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
PAGES = [
    "/console/",
    "/console/audit",
    "/console/audit/chain",
    "/console/audit/fingerprint",
    "/console/tokens",
]


def _csrf(b: TestClient) -> str:
    return form_value(b.get("/console/").text, "csrf")


def _post(b: TestClient, path: str, data: dict[str, str], **headers: str) -> Any:
    return b.post(path, data=data, headers={"Origin": ORIGIN, **headers}, follow_redirects=False)


def _token_live(console: Console, token: str) -> bool:
    r = console.client.get("/v1/auth/token/self", headers={"Authorization": f"Bearer {token}"})
    return bool(r.status_code == 200)


def test_every_console_route_names_its_audit_action(console: Console) -> None:
    app = build(console.rt)
    inner = app.app  # type: ignore[attr-defined]  # security.Headers around the Starlette app
    routes = [r for r in inner.routes if isinstance(r, Route)]
    assert len(routes) >= 10
    for route in routes:
        for method in route.methods or ():
            if method != "HEAD":
                assert (method, "/console" + route.path) in ROUTE_ACTIONS, f"{method} {route.path}"


def test_every_answer_carries_the_security_headers(console: Console) -> None:
    b = console.sign_in("admin", console.admin_secret)
    answers = [b.get(p) for p in PAGES]
    answers += [b.get("/console/no-such-page"), console.fresh().get("/console/audit")]
    answers.append(_post(b, "/console/logout", {"csrf": "wrong"}))
    for r in answers:
        assert r.headers["content-security-policy"] == CSP, r.url
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["referrer-policy"] == "no-referrer"
        assert r.headers["cache-control"] == "no-store", r.url
    assert [r.status_code for r in answers] == [200] * len(PAGES) + [404, 401, 403]
    css = b.get("/console/static/console.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert css.headers["content-security-policy"] == CSP
    # No inline script or style and nothing from another origin in any page.
    for r in answers[: len(PAGES)]:
        assert "<script" not in r.text and "<style" not in r.text and " style=" not in r.text
        assert not re.search(r'(src|href)="(https?:)?//', r.text)


def test_session_cookie_attributes_on_loopback_http_and_elsewhere(console: Console) -> None:
    r = console.fresh().get("/console/login")
    nonce = form_value(r.text, "nonce")
    b = console.fresh()
    b.cookies.set(security.LOGIN_COOKIE, nonce, path="/console")
    r = _post(
        b, "/console/login", {"nonce": nonce, "client_id": "admin", "client_secret": console.admin_secret}
    )
    assert r.status_code == 303 and r.headers["location"] == "/console/"
    cookie = next(c for c in r.headers.get_list("set-cookie") if c.startswith(security.SESSION_COOKIE + "="))
    attrs = {a.strip().split("=")[0].lower() for a in cookie.split(";")[1:]}
    assert {"httponly", "path", "samesite", "max-age"} <= attrs and "secure" not in attrs
    assert "Path=/console" in cookie and "SameSite=strict" in cookie
    # Off loopback (here: a broker named by a host name, as behind a TLS proxy) the cookie is Secure.
    remote = TestClient(console.client.app, base_url="http://console.example.org")
    remote.portal = console.client.portal
    login = remote.get("/console/login").headers["set-cookie"]
    assert "Secure" in login and "HttpOnly" in login


def test_off_loopback_the_console_cookies_are_named_with_the_secure_prefix(console: Console) -> None:
    """Secure cookies are `__Secure-` names (a plain-HTTP answer cannot set one); loopback keeps plain names."""
    site = "https://console.example.org"
    remote = TestClient(console.client.app, base_url=site)
    remote.portal = console.client.portal
    page = remote.get("/console/login")
    login_cookie = page.headers["set-cookie"]
    assert login_cookie.startswith(f"__Secure-{security.LOGIN_COOKIE}=") and "Secure" in login_cookie
    r = remote.post(
        "/console/login",
        data={
            "nonce": form_value(page.text, "nonce"),
            "client_id": "admin",
            "client_secret": console.admin_secret,
        },
        headers={"Origin": site},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    session = next(c for c in r.headers.get_list("set-cookie") if "=srt_" in c)
    assert session.startswith(f"__Secure-{security.SESSION_COOKIE}=srt_") and "Secure" in session
    assert remote.get("/console/").status_code == 200  # the prefixed cookie is the one read back
    token = remote.cookies.get(f"__Secure-{security.SESSION_COOKIE}")
    assert token
    # Under its plain name (as a plain-HTTP answer or a sibling host could plant it) it opens nothing there.
    planted = TestClient(console.client.app, base_url=site)
    planted.portal = console.client.portal
    planted.cookies.set(security.SESSION_COOKIE, token, domain="console.example.org", path="/console")
    assert planted.get("/console/", follow_redirects=False).status_code == 401
    # On loopback over plain HTTP the names stay plain.
    b = console.sign_in("admin", console.admin_secret)
    assert b.cookies.get(security.SESSION_COOKIE) and f"__Secure-{security.SESSION_COOKIE}" not in b.cookies


def test_logout_revokes_the_session_token(console: Console) -> None:
    b = console.sign_in("admin", console.admin_secret)
    token = b.cookies.get(security.SESSION_COOKIE)
    assert token and _token_live(console, token)
    r = _post(b, "/console/logout", {"csrf": _csrf(b)})
    assert r.status_code == 303 and r.headers["location"] == "/console/login"
    assert not _token_live(console, token)
    # The old cookie, replayed, opens nothing.
    replay = console.fresh()
    replay.cookies.set(security.SESSION_COOKIE, token, path="/console")
    assert replay.get("/console/audit").status_code == 401


@pytest.mark.parametrize("csrf", [None, "", "0" * 64])
def test_missing_or_wrong_csrf_token_is_refused_and_changes_nothing(
    console: Console, csrf: str | None
) -> None:
    b = console.sign_in("admin", console.admin_secret)
    token = b.cookies.get(security.SESSION_COOKIE)
    assert token
    data = {} if csrf is None else {"csrf": csrf}
    r = _post(b, "/console/logout", data)
    assert r.status_code == 403 and "csrf" in r.text
    assert _token_live(console, token)
    # Another session's token does not fit this one either.
    other = console.sign_in("admin", console.admin_secret)
    r = _post(b, "/console/logout", {"csrf": _csrf(other)})
    assert r.status_code == 403 and _token_live(console, token)


def test_a_form_from_another_origin_is_refused(console: Console) -> None:
    b = console.sign_in("admin", console.admin_secret)
    token = b.cookies.get(security.SESSION_COOKIE)
    assert token
    csrf = _csrf(b)
    for headers in (
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Origin": "http://127.0.0.1:8001"},
        {"Origin": "http://127.0.0.1"},
        {"Origin": ORIGIN, "Sec-Fetch-Site": "cross-site"},
        {"Origin": ORIGIN, "Sec-Fetch-Site": "same-site"},
    ):
        r = b.post("/console/logout", data={"csrf": csrf}, headers=headers, follow_redirects=False)
        assert r.status_code == 403 and "another site" in r.text, headers
    assert _token_live(console, token)
    # A browser posting from a console page under Referrer-Policy: no-referrer sends Origin: null with
    # Sec-Fetch-Site: same-origin; that is the console's own form.
    r = b.post(
        "/console/logout",
        data={"csrf": csrf},
        headers={"Origin": "null", "Sec-Fetch-Site": "same-origin"},
        follow_redirects=False,
    )
    assert r.status_code == 303 and not _token_live(console, token)
    # Sign-in too: a cross-site form cannot log a browser into the attacker's session.
    page = console.fresh()
    nonce = form_value(page.get("/console/login").text, "nonce")
    r = page.post(
        "/console/login",
        data={"nonce": nonce, "client_id": "admin", "client_secret": console.admin_secret},
        headers={"Origin": "https://evil.example"},
        follow_redirects=False,
    )
    assert r.status_code == 403 and security.SESSION_COOKIE not in r.headers.get("set-cookie", "")


def test_sign_in_needs_the_forms_nonce_and_good_credentials(console: Console) -> None:
    b = console.fresh()
    b.get("/console/login")
    r = _post(
        b, "/console/login", {"nonce": "forged", "client_id": "admin", "client_secret": console.admin_secret}
    )
    assert r.status_code == 403
    nonce = form_value(b.get("/console/login").text, "nonce")
    r = _post(b, "/console/login", {"nonce": nonce, "client_id": "admin", "client_secret": "wrong-secret"})
    assert r.status_code == 401 and "authentication failed" in r.text
    assert security.SESSION_COOKIE not in b.cookies


def test_audit_only_session_sees_no_operator_page(console: Console) -> None:
    auditor = console.sign_in(*console.identity("auditor", AUDITOR_SCOPES))
    assert auditor.get("/console/audit").status_code == 200
    r = auditor.get("/console/tokens")
    assert r.status_code == 403 and "Not allowed" in r.text
    admin_token = console.admin_headers["Authorization"].split()[1]
    accessor = console.client.get("/v1/auth/token/self", headers=console.admin_headers).json()["accessor"]
    r = _post(auditor, "/console/tokens/revoke", {"csrf": _csrf(auditor), "accessor": accessor})
    assert r.status_code == 403
    assert _token_live(console, admin_token)
    # And a session with no audit grant sees no audit page.
    reader = console.sign_in(*console.identity("reader", [{"project": "*", "actions": ["read"]}]))
    for path in (
        "/console/audit",
        "/console/audit/chain",
        "/console/audit/export",
        "/console/audit/events/1",
        "/console/audit/fingerprint",
    ):
        assert reader.get(path).status_code == 403, path
    # The refusals are on record, under the API twins' actions.
    events = console.client.get(
        "/v1/audit/events", params={"outcome": "denied", "limit": 100}, headers=console.admin_headers
    ).json()["events"]
    actions = {(e["actor_name"], e["action"], e["route"]) for e in events}
    assert ("auditor", "token.list", "/console/tokens") in actions
    assert ("auditor", "token.revoke", "/console/tokens/revoke") in actions
    assert ("reader", "audit.export", "/console/audit/export") in actions


def _links(html: str) -> list[str]:
    """The text of every link a person sees in the page's header and body (not the brand)."""
    return re.findall(r'<a href="/console/[^"]+">([^<]+)</a>', html)


OPERATOR_LINKS = {"Projects", "Identities", "Tokens"}
AUDIT_LINKS = {"Audit trail", "Was this value served?", "Was this value ever served?", "Chain and export"}


def test_the_header_shows_each_session_only_the_pages_its_scopes_open(console: Console) -> None:
    """An audit-only session's pages carry no operator link text (it would only meet "Not allowed");
    a reader's no audit link and no admin one; the admin's every link."""
    auditor = console.sign_in(*console.identity("auditor", AUDITOR_SCOPES))
    for path in ("/console/", "/console/audit", "/console/audit/chain", "/console/tokens"):
        links = set(_links(auditor.get(path).text))
        assert not links & OPERATOR_LINKS, (path, links)
        assert {"Audit trail", "Chain and export"} <= links, (path, links)
    reader = console.sign_in(*console.identity("reader", [{"project": "*", "actions": ["read"]}]))
    links = set(_links(reader.get("/console/").text))
    assert "Projects" in links and not links & (AUDIT_LINKS | {"Identities", "Tokens"}), links
    admin = console.sign_in("admin", console.admin_secret)
    links = set(_links(admin.get("/console/").text))
    assert OPERATOR_LINKS | {"Audit trail", "Chain and export"} <= links, links


def test_console_without_its_slash_redirects_to_the_console(console: Console) -> None:
    """`/console` (as people type it) is the console's home, not the API's JSON 404; other paths are untouched."""
    b = console.fresh()
    r = b.get("/console", follow_redirects=False)
    assert r.status_code == 307 and r.headers["location"] == ORIGIN + "/console/", (r.status_code, r.headers)
    assert r.headers["x-frame-options"] == "DENY"  # the console's own headers
    assert b.get("/console").url == ORIGIN + "/console/"  # a session-less browser lands on the sign-in form
    assert "Sign in" in b.get("/console").text
    assert b.get("/consoles", follow_redirects=False).status_code == 404
    assert b.get("/console?x=1", follow_redirects=False).headers["location"] == ORIGIN + "/console/?x=1"


def test_admin_revokes_a_token_by_accessor(console: Console) -> None:
    b = console.sign_in("admin", console.admin_secret)
    victim = console.sign_in(*console.identity("svc", AUDITOR_SCOPES))
    token = victim.cookies.get(security.SESSION_COOKIE)
    assert token
    accessor = console.client.get("/v1/auth/token/self", headers={"Authorization": f"Bearer {token}"}).json()[
        "accessor"
    ]
    assert accessor in b.get("/console/tokens").text
    r = _post(b, "/console/tokens/revoke", {"csrf": _csrf(b), "accessor": accessor})
    assert r.status_code == 303
    assert not _token_live(console, token)
    assert accessor not in b.get("/console/tokens").text


def test_a_read_only_broker_still_signs_in_looks_up_and_signs_out_but_revokes_nothing(
    console: Console,
) -> None:
    """Read-only (a database behind the last checkpoint) is when an auditor needs the console most."""
    victim = console.sign_in(*console.identity("svc", AUDITOR_SCOPES))
    token = victim.cookies.get(security.SESSION_COOKIE)
    assert token
    accessor = console.client.get("/v1/auth/token/self", headers={"Authorization": f"Bearer {token}"}).json()[
        "accessor"
    ]
    console.rt.audit.read_only = "the database is behind the last checkpoint (test)"
    b = console.sign_in("admin", console.admin_secret)
    r = _post(b, "/console/audit/fingerprint", {"csrf": _csrf(b), "value": "not-a-served-value"})
    assert r.status_code == 200, r.text
    r = _post(b, "/console/tokens/revoke", {"csrf": _csrf(b), "accessor": accessor})
    assert r.status_code == 503 and _token_live(console, token)
    r = _post(b, "/console/logout", {"csrf": _csrf(b)})
    assert r.status_code == 303


XSS = '<script>alert("x")</script><img src=x onerror=alert(1)>'


def test_payloads_in_names_agents_and_paths_render_inert(console: Console) -> None:
    h = console.admin_headers
    # Identity names are validated (letters, digits, . _ @ -), so markup reaches an actor only as a filter
    # typed into the form; user agents and names in request paths reach the trail as sent.
    console.client.get("/v1/projects", headers={**h, "User-Agent": XSS})
    console.client.get("/v1/projects/<b>demo/environments/prod/secrets/<svg onload=alert(1)>", headers=h)
    b = console.sign_in("admin", console.admin_secret)
    texts = [b.get("/console/audit").text, b.get("/console/audit", params={"actor": XSS}).text]
    seqs = [int(s) for s in re.findall(r"/console/audit/events/(\d+)", texts[0])]
    texts += [b.get(f"/console/audit/events/{s}").text for s in seqs]
    joined = "\n".join(texts)
    assert (
        "&lt;script&gt;alert(" in joined
        and "&lt;svg onload=alert(1)&gt;" in joined
        and "&lt;b&gt;demo" in joined
    )
    for text in texts:
        assert "<script" not in text and "<img" not in text and "<svg" not in text and "<b>" not in text


def test_a_planted_value_never_reaches_a_page(console: Console, canary: str) -> None:
    h = console.admin_headers
    c = console.client
    assert c.post("/v1/projects", json={"slug": "shop"}, headers=h).status_code == 201
    assert c.post("/v1/projects/shop/environments", json={"slug": "production"}, headers=h).status_code == 201
    url = "/v1/projects/shop/environments/production/secrets/DATABASE_URL"
    assert c.put(url, json={"value": canary}, headers=h).status_code in (200, 201)
    assert c.get(url, headers=h).status_code == 200
    b = console.sign_in(*console.identity("auditor", AUDITOR_SCOPES))
    texts = [b.get(p).text for p in PAGES if p not in ("/console/tokens",)]
    texts += [b.get("/console/projects/shop").text]
    listing = b.get("/console/audit", params={"name": "DATABASE_URL", "project": "shop"})
    texts.append(listing.text)
    seqs = [int(s) for s in re.findall(r"/console/audit/events/(\d+)", listing.text)]
    assert len(seqs) >= 2  # the write and the read
    texts += [b.get(f"/console/audit/events/{s}").text for s in seqs]
    # The leaked-value look-up answers yes without echoing the value.
    r = _post(b, "/console/audit/fingerprint", {"csrf": _csrf(b), "value": canary})
    assert r.status_code == 200 and "this exact value was read or written" in r.text
    texts.append(r.text)
    for text in texts:
        assert canary not in text
    # The look-up is audited like the CLI's, with the candidate's fingerprint and never its value.
    events = c.get("/v1/audit/events", params={"action": "audit.fingerprint"}, headers=h).json()["events"]
    assert events and events[0]["route"] == "/console/audit/fingerprint"
    assert canary not in c.get("/v1/audit/export", headers=h).text


def test_bad_filters_are_named_and_the_form_keeps_them(console: Console) -> None:
    b = console.sign_in("admin", console.admin_secret)
    r = b.get("/console/audit", params={"since": "last tuesday", "name": "DATABASE_URL"})
    assert r.status_code == 400
    assert "since: must be an ISO 8601 date or time" in r.text
    assert 'name="name" value="DATABASE_URL"' in r.text
    r = b.get("/console/audit", params={"source": "not-an-address"})
    assert r.status_code == 400 and "source: must be an IP address" in r.text


def _shop(console: Console, value: str) -> None:
    """Project shop: common <- production, DATABASE_URL set in common."""
    h, c = console.admin_headers, console.client
    assert c.post("/v1/projects", json={"slug": "shop"}, headers=h).status_code == 201
    for env, parent in (("common", None), ("production", "common"), ("staging", "common")):
        r = c.post("/v1/projects/shop/environments", json={"slug": env, "parent": parent}, headers=h)
        assert r.status_code == 201, r.text
    url = "/v1/projects/shop/environments/common/secrets/DATABASE_URL"
    assert c.put(url, json={"value": value}, headers=h).status_code in (200, 201)


def test_operator_pages_mask_values_and_reveal_only_on_an_audited_post(console: Console, canary: str) -> None:
    _shop(console, canary)
    b = console.sign_in("admin", console.admin_secret)
    projects = b.get("/console/projects")
    assert projects.status_code == 200 and 'href="/console/projects/shop"' in projects.text
    tree = b.get("/console/projects/shop").text
    # The tree: common first, its children indented beneath it, each saying what it inherits.
    items = re.findall(r'<li class="depth-(\d)"><a [^>]*>([a-z-]+)</a>', tree)
    assert items == [("0", "common"), ("1", "production"), ("1", "staging")]
    assert tree.count("inherits common") == 2
    listing = b.get("/console/projects/shop/environments/common")
    assert listing.status_code == 200 and "DATABASE_URL" in listing.text and canary not in listing.text
    reveal_url = "/console/projects/shop/environments/common/secrets/DATABASE_URL/reveal"
    # A reveal needs the form's CSRF token; without it, no value and no reveal.
    r = _post(b, reveal_url, {})
    assert r.status_code == 403 and canary not in r.text
    r = _post(b, reveal_url, {"csrf": _csrf(b)})
    assert r.status_code == 200 and canary in r.text
    assert r.headers["cache-control"] == "no-store"
    events = console.client.get(
        "/v1/audit/events", params={"action": "secret.reveal"}, headers=console.admin_headers
    ).json()["events"]
    assert [(e["route"], e["outcome"]) for e in events] == [(reveal_url, "ok"), (reveal_url, "denied")]
    assert events[0]["fingerprints"][0]["fingerprint"].startswith("hmac-sha256:")
    # An auditor may see the projects (as through the API) but no secret list and no value.
    auditor = console.sign_in(*console.identity("auditor", AUDITOR_SCOPES))
    assert auditor.get("/console/projects/shop/environments/common").status_code == 403
    r = _post(auditor, reveal_url, {"csrf": _csrf(auditor)})
    assert r.status_code == 403 and canary not in r.text


def test_the_trail_pages_by_sequence_without_gaps_or_repeats(console: Console) -> None:
    for _ in range(70):
        assert console.client.get("/v1/projects", headers=console.admin_headers).status_code == 200
    b = console.sign_in("admin", console.admin_secret)
    seen: list[int] = []
    url: str | None = "/console/audit?action=project.list"
    pages = 0
    while url is not None:
        r = b.get(url.replace("&amp;", "&"))
        assert r.status_code == 200
        seqs = [int(s) for s in re.findall(r'<td><a href="/console/audit/events/(\d+)">', r.text)]
        assert 0 < len(seqs) <= 50
        seen += seqs
        m = re.search(r'<a id="next" href="([^"]+)"', r.text)
        url = m.group(1) if m else None
        if url is not None:
            assert "action=project.list" in url and f"cursor={seqs[-1]}" in url
        pages += 1
    assert pages == 2 and len(seen) == 70
    assert seen == sorted(seen, reverse=True) and len(set(seen)) == 70


def test_an_unexpected_failure_is_a_page_that_quotes_nothing(
    console: Console, canary: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The one fake here: a service made to crash with a message quoting a value (no real fault can be
    provoked on purpose); the page, the log and the audit event must carry its type only."""

    async def crash(*_a: object, **_k: object) -> None:
        raise RuntimeError(canary)

    b = console.sign_in("admin", console.admin_secret)
    monkeypatch.setattr("broker.console.app.audit_export.status", crash)
    r = b.get("/console/audit/chain")
    assert r.status_code == 500 and "internal error" in r.text and canary not in r.text
    assert r.headers["content-security-policy"] == CSP
    assert canary not in caplog.text and "RuntimeError" in caplog.text
    events = console.client.get(
        "/v1/audit/events", params={"outcome": "error"}, headers=console.admin_headers
    ).json()["events"]
    assert [(e["route"], e["reason"]) for e in events] == [
        ("/console/audit/chain", "internal error (RuntimeError)")
    ]


def test_environment_diff_by_fingerprint_and_identities(console: Console, canary: str) -> None:
    _shop(console, canary)
    h, c = console.admin_headers, console.client
    prod = "/v1/projects/shop/environments/production/secrets/"
    assert c.put(prod + "DATABASE_URL", json={"value": canary + "-prod"}, headers=h).status_code in (200, 201)
    assert c.put(prod + "API_KEY", json={"value": canary + "-key"}, headers=h).status_code in (200, 201)
    console.identity("auditor", AUDITOR_SCOPES)
    b = console.sign_in("admin", console.admin_secret)
    assert 'id="diff-form"' in b.get("/console/projects/shop").text
    r = b.get("/console/projects/shop/diff", params={"a": "production", "b": "staging"})
    assert r.status_code == 200 and canary not in r.text
    rows = re.findall(r"<tr><td>([A-Z_]+)</td><td[^>]*>([a-z ]+)</td>", r.text)
    assert rows == [("DATABASE_URL", "different"), ("API_KEY", "only in production")]
    assert r.text.count("hmac-sha256:") == 2
    r = b.get("/console/projects/shop/diff", params={"a": "production"})
    assert r.status_code == 400 and "a: name the two environments" in r.text
    r = b.get("/console/identities")
    assert r.status_code == 200 and "<code>*:*:audit</code>" in r.text and "<code>auditor</code>" in r.text


def test_the_session_cookie_opens_nothing_on_the_api(console: Console) -> None:
    b = console.sign_in("admin", console.admin_secret)
    token = b.cookies.get(security.SESSION_COOKIE)
    assert token
    # The cookie is scoped to /console, and the API reads only the Authorization header.
    r = console.fresh().get("/v1/audit/events", headers={"Cookie": f"{security.SESSION_COOKIE}={token}"})
    assert r.status_code == 401
    auditor = console.sign_in(*console.identity("auditor", AUDITOR_SCOPES))
    for path in ("/console/identities", "/console/projects/shop/diff?a=common&b=production"):
        assert auditor.get(path).status_code == 403, path


MANIFEST = (
    "service: web\nimage: acme/web\nroles:\n  web:\n    hosts: [web1]\nenv:\n  secret: [DATABASE_URL]\n"
)


def test_the_deploy_ledger_shows_hosts_and_the_versions_they_run(console: Console, canary: str) -> None:
    _shop(console, canary)
    c, h = console.client, console.admin_headers
    r = c.post(
        "/v1/projects/shop/environments/production/deploys",
        json={"manifest": MANIFEST, "version": "v7"},
        headers=h,
    )
    assert r.status_code == 201, r.text
    deploy_id, deployer = r.json()["deploy"]["id"], {"Authorization": f"Bearer {r.json()['token']}"}
    assert c.post(f"/v1/deploys/{deploy_id}/bundle", headers=deployer).status_code == 200
    r = c.post(
        f"/v1/deploys/{deploy_id}/hosts",
        json={"host": "web1", "role": "web", "outcome": "deployed"},
        headers=deployer,
    )
    assert r.status_code < 300, r.text
    assert (
        c.post(f"/v1/deploys/{deploy_id}/finish", json={"outcome": "succeeded"}, headers=deployer).status_code
        < 300
    )
    b = console.sign_in("admin", console.admin_secret)
    ledger = b.get("/console/projects/shop/environments/production/deploys")
    assert ledger.status_code == 200 and f'href="/console/deploys/{deploy_id}"' in ledger.text
    assert "<td>v7</td>" in ledger.text
    detail = b.get(f"/console/deploys/{deploy_id}")
    assert detail.status_code == 200
    assert re.search(r"<tr><td>web1</td><td>web</td><td[^>]*>deployed</td>", detail.text)
    # web1 runs DATABASE_URL version 1 (inherited by production), named by its fingerprint only.
    assert re.search(
        r"<tr><td>web1</td><td>web</td><td>DATABASE_URL</td><td>1</td><td>production</td>", detail.text
    )
    for text in (ledger.text, detail.text):
        assert canary not in text
    auditor = console.sign_in(*console.identity("auditor", AUDITOR_SCOPES))
    assert auditor.get(f"/console/deploys/{deploy_id}").status_code == 403


def _api_deploy(console: Console, version: str) -> str:
    """A deploy of MANIFEST through the broker's deploy API, web1 reported deployed; its id."""
    c, h = console.client, console.admin_headers
    r = c.post(
        "/v1/projects/shop/environments/production/deploys",
        json={"manifest": MANIFEST, "version": version},
        headers=h,
    )
    assert r.status_code == 201, r.text
    deploy_id, deployer = r.json()["deploy"]["id"], {"Authorization": f"Bearer {r.json()['token']}"}
    got = c.post(f"/v1/deploys/{deploy_id}/bundle", headers=deployer)
    assert got.status_code == 200, got.text
    # What a deploy reports: the env file's fingerprint from the bundle it ran.
    (web1,) = [f for f in got.json()["hosts"] if f["host"] == "web1"]
    r = c.post(
        f"/v1/deploys/{deploy_id}/hosts",
        json={
            "host": "web1",
            "role": "web",
            "outcome": "deployed",
            "env_fingerprint": web1["env_fingerprint"],
        },
        headers=deployer,
    )
    assert r.status_code < 300, r.text
    r = c.post(f"/v1/deploys/{deploy_id}/finish", json={"outcome": "succeeded"}, headers=deployer)
    assert r.status_code < 300, r.text
    return str(deploy_id)


def _drift_rows(html: str) -> list[tuple[str, str, str, str]]:
    """The drift table as a person reads it: host, role, state, detail."""
    return re.findall(r"<tr><td>([\w.-]+)</td><td>(\w+)</td><td[^>]*>([a-z ,]+)</td><td>([^<]*)</td>", html)


STATUS = "/console/projects/shop/environments/production/deploys/status"


def test_a_host_turns_from_rotated_to_current_after_a_deploy(console: Console, canary: str) -> None:
    _shop(console, canary)
    b = console.sign_in("admin", console.admin_secret)
    r = b.get(STATUS)
    assert r.status_code == 200 and "no deploy yet" in r.text and 'id="drift-form"' in r.text
    _api_deploy(console, "v7")
    assert 'href="' + STATUS + '"' in b.get("/console/projects/shop/environments/production/deploys").text
    assert _drift_rows(b.get(STATUS).text) == [("web1", "web", "current", "")]
    # Rotate DATABASE_URL (stored in common, inherited by production): web1 still runs version 1.
    url = "/v1/projects/shop/environments/common/secrets/DATABASE_URL"
    put = console.client.put(url, json={"value": canary + "-rotated"}, headers=console.admin_headers)
    assert put.status_code in (200, 201)
    r = b.get(STATUS)
    assert r.status_code == 200
    # As `deploy status --ledger-only` says it: the env a deploy would give now differs, because of the rotation.
    assert _drift_rows(r.text) == [
        (
            "web1",
            "web",
            "drift, rotated",
            "drift: the deployed env differs from what a deploy would give now; rotated: DATABASE_URL v1\u2192v2",
        )
    ]
    assert "<td>v7</td>" in r.text and canary not in r.text
    _api_deploy(console, "v8")
    r = b.get(STATUS)
    assert _drift_rows(r.text) == [("web1", "web", "current", "")] and "<td>v8</td>" in r.text
    assert canary not in r.text
    # Each look is audited as the CLI's `deploy status` is.
    events = console.client.get(
        "/v1/audit/events", params={"action": "deploy.status"}, headers=console.admin_headers
    ).json()["events"]
    assert {e["route"] for e in events} == {STATUS} and len(events) == 4


def test_a_pasted_manifest_is_judged_and_never_echoed(console: Console, canary: str) -> None:
    _shop(console, canary)
    _api_deploy(console, "v7")
    b = console.sign_in("admin", console.admin_secret)
    marker = "# " + canary + "-comment\n"
    r = _post(b, STATUS, {"csrf": _csrf(b), "manifest": marker + MANIFEST.replace("[web1]", "[web1, web2]")})
    assert r.status_code == 200, r.text
    assert _drift_rows(r.text) == [("web1", "web", "current", ""), ("web2", "web", "never deployed", "")]
    assert canary not in r.text
    # A POST without the form's CSRF token judges nothing.
    r = _post(b, STATUS, {"manifest": MANIFEST})
    assert r.status_code == 403 and "csrf" in r.text


@pytest.mark.parametrize(
    ("manifest", "field"),
    [
        ("", "manifest:"),
        ("service: web\nimage: acme/web\nroles: 7\n", "roles"),
        ("project: other\n" + MANIFEST, "project:"),
    ],
)
def test_a_bad_manifest_is_a_clear_error_and_changes_nothing(
    console: Console, canary: str, manifest: str, field: str
) -> None:
    _shop(console, canary)
    deploy_id = _api_deploy(console, "v7")
    b = console.sign_in("admin", console.admin_secret)
    before = b.get(STATUS).text
    r = _post(b, STATUS, {"csrf": _csrf(b), "manifest": manifest})
    assert r.status_code == 400 and field in r.text, r.text
    assert canary not in r.text
    assert b.get(STATUS).text.count("<tr><td>web1</td>") == before.count("<tr><td>web1</td>") == 1
    listed = console.client.get(
        "/v1/projects/shop/environments/production/deploys", headers=console.admin_headers
    ).json()
    assert [d["id"] for d in listed["deploys"]] == [deploy_id]


def test_an_audit_only_session_sees_no_host_state(console: Console, canary: str) -> None:
    _shop(console, canary)
    _api_deploy(console, "v7")
    auditor = console.sign_in(*console.identity("auditor", AUDITOR_SCOPES))
    assert auditor.get(STATUS).status_code == 403
    r = _post(auditor, STATUS, {"csrf": _csrf(auditor), "manifest": MANIFEST})
    assert r.status_code == 403 and "web1" not in r.text and canary not in r.text


def test_a_failed_attempt_shows_failed_and_the_version_still_running(console: Console, canary: str) -> None:
    _shop(console, canary)
    _api_deploy(console, "v7")
    c, h = console.client, console.admin_headers
    r = c.post(
        "/v1/projects/shop/environments/production/deploys",
        json={"manifest": MANIFEST, "version": "v8"},
        headers=h,
    )
    deploy_id, deployer = r.json()["deploy"]["id"], {"Authorization": f"Bearer {r.json()['token']}"}
    assert c.post(f"/v1/deploys/{deploy_id}/bundle", headers=deployer).status_code == 200
    r = c.post(
        f"/v1/deploys/{deploy_id}/hosts",
        json={"host": "web1", "role": "web", "outcome": "failed", "error": "health check timed out"},
        headers=deployer,
    )
    assert r.status_code < 300, r.text
    b = console.sign_in("admin", console.admin_secret)
    r = b.get(STATUS)
    assert _drift_rows(r.text) == [
        ("web1", "web", "failed", f"failed: deploy {deploy_id[:8]} of v8 (failed): health check timed out")
    ]
    # The ledger still says web1 runs v7, and the last attempt links the failed deploy.
    assert "<td>v7</td>" in r.text and f'href="/console/deploys/{deploy_id}"' in r.text
