"""E30 completeness: every route of the app (enumerated from the route table, so a new route fails this test
until it has a case) x every outcome (ok, denied, invalid, error) produces exactly one audit event, linked
in the chain, with every field that applies filled in: who (actor, token accessor, the token's scopes),
what (action, resource, fingerprints of values read or written), when, from where (address, user agent,
client kind), the outcome and, unless ok, the reason."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from sqlalchemy import event

from broker.api.edge import ROUTE_ACTIONS
from broker.db.units import Prepared
from tests.integration.audit.conftest import AuditApi, broker
from tests.integration.auth.routes import MISSING, endpoints
from tests.integration.secrets.conftest import Reply

P = "/v1/projects/{project}"
E = P + "/environments/{environment}"
S = E + "/secrets/{name}"
BASE = "/v1/projects/microblog/environments"
ADMIN_UA = "strongroom-cli/0.1.0"

# Routes with no denied or error outcome: the API docs need no token and touch no database.
DOCS = {("GET", "/openapi.json"), ("GET", "/docs"), ("GET", "/docs/oauth2-redirect")}
# Routes whose success needs something these tests do not run.
NO_OK_HERE = {("POST", E + "/import"): "needs a configured Vault or AWS upstream (issue 7's tests)"}
# Routes whose every outcome and its one event are checked by their own tests, against what they need.
CHECKED_ELSEWHERE = {
    ("POST", "/v1/auth/oidc"): "needs an OIDC issuer; tests/integration/auth/test_oidc.py checks its events"
}
# Routes whose event carries fingerprints of the values read or written.
VALUE_ROUTES = {
    ("GET", S),
    ("PUT", S),
    ("POST", S + "/rollback"),
    ("GET", E + "/resolved"),
    ("POST", S + "/generate"),
}

ALWAYS = (
    "seq",
    "prev_hash",
    "hash",
    "occurred_at",
    "request_id",
    "actor_type",
    "source_addr",
    "user_agent",
    "client_kind",
    "method",
    "route",
    "action",
    "outcome",
    "status",
)
WHO = ("actor_id", "actor_name", "token_accessor", "scopes")

Case = Callable[[AuditApi], tuple[str, dict[str, Any]]]


def _put(api: AuditApi, env: str, name: str, value: str = "v") -> None:
    assert api.put(env, name, value).status_code == 200


def _child(api: AuditApi) -> dict[str, Any]:
    r = api.client.post("/v1/tokens", json={}, headers=api.h)
    assert r.status_code == 201
    return dict(r.json())


def _identity(api: AuditApi) -> str:
    r = api.client.post(
        "/v1/identities", json={"name": "tmp", "type": "machine", "scopes": []}, headers=api.h
    )
    assert r.status_code == 201
    return str(r.json()["client_id"])


def _project(api: AuditApi, slug: str) -> str:
    assert api.client.post("/v1/projects", json={"slug": slug}, headers=api.h).status_code == 201
    return slug


def _env(api: AuditApi, slug: str) -> str:
    api.make_env(slug)
    return slug


def _deleted(api: AuditApi, name: str) -> str:
    _put(api, "common", name)
    assert api.client.delete(api.url("common", name), headers=api.h).status_code == 204
    return name


def after(_setup: None, url: str, kw: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
    """A request made after some set-up (the set-up runs as this call's first argument is evaluated)."""
    return url, kw or {}


def _two_versions(api: AuditApi, name: str) -> str:
    _put(api, "common", name, "one")
    _put(api, "common", name, "two")
    return name


DEPLOY_MANIFEST = "service: web\nimage: acme/web\nroles:\n  web:\n    hosts: [web1]\n"


def _deploy(api: AuditApi) -> tuple[str, dict[str, str]]:
    """A running deploy's id and its deploy token's headers."""
    r = api.client.post(
        f"{BASE}/production/deploys", json={"manifest": DEPLOY_MANIFEST, "version": "v1"}, headers=api.h
    )
    assert r.status_code == 201, r.text
    return r.json()["deploy"]["id"], {"Authorization": f"Bearer {r.json()['token']}"}


def _as_deploy(api: AuditApi, suffix: str, json: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
    deploy_id, headers = _deploy(api)
    return f"/v1/deploys/{deploy_id}{suffix}", {"headers": headers, **({"json": json} if json else {})}


OK: dict[tuple[str, str], Case] = {
    ("GET", "/openapi.json"): lambda a: ("/openapi.json", {}),
    ("GET", "/docs"): lambda a: ("/docs", {}),
    ("GET", "/docs/oauth2-redirect"): lambda a: ("/docs/oauth2-redirect", {}),
    ("POST", "/v1/auth/token"): lambda a: (
        "/v1/auth/token",
        {
            "json": {"client_id": "admin", "client_secret": (a.tmp / "admin.secret").read_text()},
            "auth": False,
        },
    ),
    ("GET", "/v1/auth/token/self"): lambda a: ("/v1/auth/token/self", {}),
    ("POST", "/v1/auth/token/renew"): lambda a: ("/v1/auth/token/renew", {"json": {}}),
    ("POST", "/v1/auth/token/revoke-self"): lambda a: (
        "/v1/auth/token/revoke-self",
        {"headers": {"Authorization": f"Bearer {_child(a)['token']}"}},
    ),
    ("POST", "/v1/tokens"): lambda a: ("/v1/tokens", {"json": {}}),
    ("GET", "/v1/tokens"): lambda a: ("/v1/tokens", {}),
    ("POST", "/v1/tokens/lookup"): lambda a: (
        "/v1/tokens/lookup",
        {"json": {"accessor": _child(a)["accessor"]}},
    ),
    ("POST", "/v1/tokens/revoke"): lambda a: (
        "/v1/tokens/revoke",
        {"json": {"accessor": _child(a)["accessor"]}},
    ),
    ("POST", "/v1/identities"): lambda a: (
        "/v1/identities",
        {"json": {"name": "ci", "type": "machine", "scopes": []}},
    ),
    ("GET", "/v1/identities"): lambda a: ("/v1/identities", {}),
    ("DELETE", "/v1/identities/{client_id}"): lambda a: (f"/v1/identities/{_identity(a)}", {}),
    ("GET", "/v1/identities/{client_id}"): lambda a: (f"/v1/identities/{_identity(a)}", {}),
    ("POST", "/v1/identities/{client_id}/disable"): lambda a: (f"/v1/identities/{_identity(a)}/disable", {}),
    ("POST", "/v1/identities/{client_id}/enable"): lambda a: (f"/v1/identities/{_identity(a)}/enable", {}),
    ("POST", "/v1/identities/{client_id}/rotate-secret"): lambda a: (
        f"/v1/identities/{_identity(a)}/rotate-secret",
        {"json": {"grace": 60}},
    ),
    ("GET", "/v1/projects"): lambda a: ("/v1/projects", {}),
    ("POST", "/v1/projects"): lambda a: ("/v1/projects", {"json": {"slug": "fresh"}}),
    ("GET", P): lambda a: ("/v1/projects/microblog", {}),
    ("PATCH", P): lambda a: ("/v1/projects/microblog", {"json": {"description": "d"}}),
    ("DELETE", P): lambda a: (f"/v1/projects/{_project(a, 'doomed')}", {}),
    ("GET", P + "/environments"): lambda a: (BASE, {}),
    ("POST", P + "/environments"): lambda a: (BASE, {"json": {"slug": "staging"}}),
    ("GET", E): lambda a: (f"{BASE}/common", {}),
    ("PATCH", E): lambda a: (f"{BASE}/production", {"json": {"parent": "common"}}),
    ("DELETE", E): lambda a: (f"{BASE}/{_env(a, 'doomed-env')}", {}),
    ("GET", E + "/secrets"): lambda a: (f"{BASE}/common/secrets", {}),
    ("GET", S): lambda a: after(_put(a, "common", "READ_ME"), f"{BASE}/common/secrets/READ_ME"),
    ("PUT", S): lambda a: (f"{BASE}/common/secrets/WRITTEN", {"json": {"value": "w"}}),
    ("DELETE", S): lambda a: after(_put(a, "common", "DEL_ME"), f"{BASE}/common/secrets/DEL_ME"),
    ("POST", S + "/undelete"): lambda a: (f"{BASE}/common/secrets/{_deleted(a, 'UNDEL')}/undelete", {}),
    ("GET", S + "/versions"): lambda a: (f"{BASE}/common/secrets/{_two_versions(a, 'HIST')}/versions", {}),
    ("POST", S + "/versions/{version}/destroy"): lambda a: (
        f"{BASE}/common/secrets/{_two_versions(a, 'DESTROY')}/versions/1/destroy",
        {},
    ),
    ("POST", S + "/rollback"): lambda a: (
        f"{BASE}/common/secrets/{_two_versions(a, 'ROLL')}/rollback",
        {"json": {"version": 1}},
    ),
    ("POST", S + "/generate"): lambda a: (f"{BASE}/common/secrets/GEN/generate", {"json": {"bytes": 32}}),
    ("GET", E + "/resolved"): lambda a: after(_put(a, "common", "RES"), f"{BASE}/production/resolved"),
    ("POST", E + "/compile"): lambda a: (
        f"{BASE}/production/compile",
        {"json": {"manifest": "service: web\n", "targets": ["dotenv"]}},
    ),
    ("POST", E + "/check"): lambda a: (
        f"{BASE}/production/check",
        {"json": {"manifest": "service: web\n", "targets": ["dotenv"]}},
    ),
    ("POST", E + "/values"): lambda a: after(
        _put(a, "common", "VAL"), f"{BASE}/production/values", {"json": {"names": ["VAL"]}}
    ),
    ("GET", P + "/diff"): lambda a: (
        "/v1/projects/microblog/diff",
        {"params": {"a": "common", "b": "production"}},
    ),
    ("GET", "/v1/audit/events"): lambda a: ("/v1/audit/events", {}),
    ("GET", "/v1/audit/export"): lambda a: ("/v1/audit/export", {}),
    ("GET", "/v1/audit/checkpoints"): lambda a: ("/v1/audit/checkpoints", {}),
    ("POST", "/v1/audit/fingerprint"): lambda a: (
        "/v1/audit/fingerprint",
        {"json": {"value": "a candidate"}},
    ),
    ("GET", "/v1/audit/status"): lambda a: ("/v1/audit/status", {}),
    ("POST", E + "/deploys"): lambda a: (
        f"{BASE}/production/deploys",
        {"json": {"manifest": DEPLOY_MANIFEST, "version": "v1"}},
    ),
    ("GET", E + "/deploys"): lambda a: (f"{BASE}/production/deploys", {}),
    ("POST", E + "/deploys/status"): lambda a: (
        f"{BASE}/production/deploys/status",
        {"json": {"manifest": DEPLOY_MANIFEST}},
    ),
    ("GET", "/v1/deploys/{deploy_id}"): lambda a: (f"/v1/deploys/{_deploy(a)[0]}", {}),
    ("POST", "/v1/deploys/{deploy_id}/bundle"): lambda a: _as_deploy(a, "/bundle"),
    ("POST", "/v1/deploys/{deploy_id}/hosts"): lambda a: _as_deploy(
        a, "/hosts", {"host": "web1", "role": "web", "outcome": "deployed"}
    ),
    ("POST", "/v1/deploys/{deploy_id}/finish"): lambda a: _as_deploy(a, "/finish", {"outcome": "succeeded"}),
}


def routes(api: AuditApi) -> list[tuple[str, str, tuple[str, ...]]]:
    app = api.client.app.app  # type: ignore[attr-defined]
    assert isinstance(app, FastAPI)
    found = {(e.method, e.path, e.params) for e in endpoints(app) if e.method != "HEAD"}
    return sorted(r for r in found if r[1] not in ("/up", "/healthz", "/readyz"))


@contextlib.contextmanager
def database_fails(api: AuditApi) -> Iterator[None]:
    """Every statement fails except the audit trail's own (so the failure itself can be recorded)."""

    def fail(_conn: Any, _cursor: Any, statement: str, *_a: Any) -> None:
        plumbing = (
            statement.lstrip().upper().startswith(("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE"))
        )
        if "audit_" not in statement and "pg_advisory" not in statement and not plumbing:
            raise ConnectionResetError("database connection lost")

    # Units of work run prepared statements on the raw drivers, past the engine's events: fail those too.
    real_args = Prepared.args

    def args(self: Prepared, values: Any) -> list[Any]:
        fail(None, None, self.sql)
        return real_args(self, values)

    sync_engine = api.rt.engine.sync_engine
    event.listen(sync_engine, "before_cursor_execute", fail)
    Prepared.args = args  # type: ignore[method-assign]
    try:
        yield
    finally:
        Prepared.args = real_args  # type: ignore[method-assign]
        event.remove(sync_engine, "before_cursor_execute", fail)


def check_event(
    api: AuditApi, reply: Reply, key: tuple[str, str], outcome: str, *, authenticated: bool
) -> None:
    method, template = key
    label = f"{method} {template} {outcome} ({reply.status})"
    rows = api.audit_for(reply.request_id)
    assert len(rows) == 1, f"{label}: {len(rows)} events"
    api.chain()
    (row,) = api.audit_for(reply.request_id)
    for name in ALWAYS:
        assert row[name] not in (None, ""), f"{label}: {name} is empty"
    assert row["outcome"] == outcome and row["status"] == reply.status, label
    assert row["action"] == ROUTE_ACTIONS[key] or (outcome == "ok" and row["action"].startswith("secret.")), (
        label
    )
    assert row["user_agent"] == ADMIN_UA and row["client_kind"] == "cli" and row["source_addr"] == "127.0.0.1"
    for name in WHO:
        assert (row[name] is not None) == authenticated, f"{label}: {name}={row[name]!r}"
    if outcome != "ok":
        assert row["reason"], f"{label}: no reason"
    for param, column in (
        ("{project}", "project"),
        ("{environment}", "environment"),
        ("{name}", "secret_name"),
    ):
        if param in template:
            assert row[column], f"{label}: {column} is empty"
    if "{version}" in template:
        assert row["version"] is not None, label
    if outcome == "ok" and key in VALUE_ROUTES:
        assert row["fingerprints"] and "hmac-sha256:" in row["fingerprints"], label


def request(api: AuditApi, method: str, url: str, kw: dict[str, Any], *, token: str | None = None) -> Reply:
    kw = dict(kw)
    headers = {
        "User-Agent": ADMIN_UA,
        **({} if kw.pop("auth", True) is False else api.h),
        **kw.pop("headers", {}),
    }
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return api.safe(method, url, headers=headers, **kw)


def test_every_route_and_outcome_makes_exactly_one_complete_event(db_url: str, tmp_path: Path) -> None:
    with broker(db_url, tmp_path, audit_fingerprint_limit=1000, auth_failure_limit=1_000_000) as api:
        table = routes(api)
        assert {(m, t) for m, t, _ in table} <= set(OK) | set(NO_OK_HERE) | set(CHECKED_ELSEWHERE), (
            "a route has no completeness case"
        )
        assert {(m, t) for m, t, _ in table} <= set(ROUTE_ACTIONS), (
            "a route has no audit action (broker/api/edge.py)"
        )
        checked = {"ok": 0, "denied": 0, "invalid": 0, "error": 0}
        for method, template, params in table:
            key = (method, template)
            if key in CHECKED_ELSEWHERE:
                continue
            # A URL that reaches no existing resource, for the invalid and error outcomes.
            missing_url = template.format(**{p: MISSING[p] for p in params})
            # ok
            if key not in NO_OK_HERE:
                url, kw = OK[key](api)
                r = request(api, method, url, kw)
                assert r.status < 300, (key, r.status, r.text[:300])
                check_event(api, r, key, "ok", authenticated=key not in DOCS)
                checked["ok"] += 1
            if key in DOCS:
                continue
            body = OK[key](api)[1] if key in OK else {"json": {"source": "vault://x/y"}}
            # denied: a token that is no token (or a wrong client secret)
            if key == ("POST", "/v1/auth/token"):
                r = api.safe(
                    method,
                    "/v1/auth/token",
                    headers={"User-Agent": ADMIN_UA},
                    json={"client_id": "admin", "client_secret": "wrong"},
                )
            else:
                r = request(
                    api,
                    method,
                    missing_url,
                    {k: v for k, v in body.items() if k != "headers"},
                    token="srt_" + "A" * 43,
                )
            assert r.status == 401, (key, r.status)
            check_event(api, r, key, "denied", authenticated=False)
            checked["denied"] += 1
            # invalid: a body over the limit (refused at the edge) ...
            r = api.raw(
                method,
                missing_url,
                headers=[("User-Agent", ADMIN_UA), ("Content-Length", str(2 * 1024 * 1024))],
            )
            assert r.status == 413, (key, r.status)
            check_event(api, r, key, "invalid", authenticated=False)
            # ... and, where the route names a resource, one that does not exist (refused by the service)
            if params and key != ("DELETE", "/v1/identities/{client_id}"):
                r = request(api, method, missing_url, {k: v for k, v in body.items() if k != "headers"})
                assert r.status in (400, 404), (key, r.status, r.text[:200])
                check_event(api, r, key, "invalid", authenticated=True)
            checked["invalid"] += 1
            # error: the database fails under the request
            with database_fails(api):
                r = request(
                    api, method, missing_url, {k: v for k, v in body.items() if k not in ("headers", "auth")}
                )
            assert r.status == 500, (key, r.status, r.text[:200])
            check_event(api, r, key, "error", authenticated=False)
            checked["error"] += 1
        assert checked["ok"] >= 40 and checked["error"] >= 40, checked
        assert api.verify().ok
