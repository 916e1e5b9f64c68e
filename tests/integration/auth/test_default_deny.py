"""D22: a token with no scopes gets 403 on every route (route table enumerated), bar a small allow-list.

The allow-list is the routes that need no scope by design:
- health (`/up`, `/healthz`) and the API docs (`/openapi.json`, `/docs*`): no data;
- `POST /v1/auth/token` and `POST /v1/auth/oidc`: the credential exchanges themselves (the latter answers
  404 here: these brokers have no OIDC file);
- `/v1/auth/token/self|renew|revoke-self`: about the caller's own token only.
A new route that is neither denied to a scope-less token nor listed here fails this test.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from broker.main import build_runtime, create_app
from tests.conftest import make_settings
from tests.integration.auth.conftest import Broker, World, scope
from tests.integration.auth.routes import (
    EXISTING,
    MISSING,
    app_of,
    body_for,
    call,
    endpoints,
    example_bodies,
    schema_operations,
)

ALLOWED_WITHOUT_SCOPE: dict[tuple[str, str], int] = {
    ("GET", "/up"): 200,
    ("GET", "/healthz"): 200,
    ("GET", "/readyz"): 200,
    ("GET", "/openapi.json"): 200,
    ("HEAD", "/openapi.json"): 200,
    ("GET", "/docs"): 200,
    ("HEAD", "/docs"): 200,
    ("GET", "/docs/oauth2-redirect"): 200,
    ("HEAD", "/docs/oauth2-redirect"): 200,
    ("POST", "/v1/auth/token"): 200,
    ("POST", "/v1/auth/oidc"): 404,
    ("GET", "/v1/auth/token/self"): 200,
    ("POST", "/v1/auth/token/renew"): 200,
    ("POST", "/v1/auth/token/revoke-self"): 204,
}


def test_route_table_is_fully_enumerated(tmp_path: Path) -> None:
    """The walk finds every documented operation (no database needed: the app is only inspected)."""
    rt = build_runtime(make_settings(f"sqlite+aiosqlite:///{tmp_path / 'unused.db'}", tmp_path))
    app = create_app(rt).app  # type: ignore[attr-defined]
    assert isinstance(app, FastAPI)
    found = {(e.method, e.path) for e in endpoints(app)}
    assert schema_operations(app) <= found
    assert ("GET", "/v1/projects/{project}/environments/{environment}/resolved") in found
    assert len(found) >= 35
    assert set(ALLOWED_WITHOUT_SCOPE) <= found


def test_token_without_scopes_is_denied_everywhere(broker: Broker, world: World) -> None:
    noscope = broker.login([], name="nobody")
    bodies = example_bodies(noscope, broker.admin.accessor)
    before = broker.dump()
    checked = 0
    for ep in endpoints(app_of(broker)):
        key = (ep.method, ep.path)
        if key in ALLOWED_WITHOUT_SCOPE:
            continue
        for values in (EXISTING, MISSING):
            r = call(broker, ep, values, noscope.token, body_for(ep, bodies))
            assert r.status_code == 403, f"{ep.method} {ep.url(values)} gave {r.status_code}: {r.text}"
            broker.expect_denied(r, 403)
            for value in world.canaries("alpha") + world.canaries("beta"):
                assert value not in r.text
            checked += 1
    assert checked >= 2 * 25
    # Nothing changed, apart from the audit trail (its events and their key index), the no-scope token's
    # own use and the heartbeat a running broker keeps in broker_keyrings.
    after = broker.dump()
    for table in before:
        if table not in ("audit_events", "audit_event_keys", "tokens", "broker_keyrings"):
            assert after[table] == before[table], f"a refused request changed {table}"
    assert [r for r in after["tokens"] if r["revoked_at"] is not None] == []


def test_allow_listed_routes_work_without_scopes(broker: Broker) -> None:
    app = app_of(broker)
    present = {(e.method, e.path): e for e in endpoints(app)}
    assert set(ALLOWED_WITHOUT_SCOPE) <= set(present), (
        "an allow-listed route no longer exists; update the list"
    )
    for key, status in ALLOWED_WITHOUT_SCOPE.items():
        ep = present[key]
        noscope = broker.login([], name="nobody")  # fresh each time: revoke-self ends it
        r = call(broker, ep, {}, noscope.token, body_for(ep, example_bodies(noscope, broker.admin.accessor)))
        assert r.status_code == status, f"{key}: {r.status_code} {r.text}"


READ_ON_PROJECT = {
    ("GET", "/v1/projects/{project}"),
    ("GET", "/v1/projects/{project}/environments"),
    ("GET", "/v1/projects/{project}/environments/{environment}"),
    ("GET", "/v1/projects/{project}/environments/{environment}/secrets"),
    ("GET", "/v1/projects/{project}/environments/{environment}/secrets/{name}"),
    ("GET", "/v1/projects/{project}/environments/{environment}/secrets/{name}/versions"),
    ("GET", "/v1/projects/{project}/environments/{environment}/resolved"),
    # Rendering and comparing read values (never write them).
    ("POST", "/v1/projects/{project}/environments/{environment}/compile"),
    ("POST", "/v1/projects/{project}/environments/{environment}/check"),
    ("POST", "/v1/projects/{project}/environments/{environment}/values"),
    ("GET", "/v1/projects/{project}/diff"),
    # Deploys: starting one mints a deploy token under the reader's (201); the ledger and status are reads.
    ("POST", "/v1/projects/{project}/environments/{environment}/deploys"),
    ("GET", "/v1/projects/{project}/environments/{environment}/deploys"),
    ("POST", "/v1/projects/{project}/environments/{environment}/deploys/status"),
}
READ_STATUS = {("POST", "/v1/projects/{project}/environments/{environment}/deploys"): 201}
# Routes without a project: what a token with only `read` on one project may do.
PROJECTLESS_FOR_READER = {
    ("GET", "/v1/projects"): 200,  # lists only the projects it has a scope on (see D26)
    ("POST", "/v1/tokens"): 201,  # a child token, never broader
}


def test_project_read_token_is_confined_to_reading_that_project(broker: Broker, world: World) -> None:
    reader = broker.login([scope("alpha", ["read"])], name="reader")
    bodies = example_bodies(reader, broker.admin.accessor)
    beta = {**EXISTING, "project": "beta"}
    for ep in endpoints(app_of(broker)):
        key = (ep.method, ep.path)
        if key in ALLOWED_WITHOUT_SCOPE:
            continue
        body = body_for(ep, bodies)
        if "project" not in ep.params:
            r = call(broker, ep, EXISTING, reader.token, body)
            expected = PROJECTLESS_FOR_READER.get(key, 403)
            assert r.status_code == expected, f"{key}: {r.status_code} {r.text}"
            if expected == 403:
                broker.expect_denied(r, 403)
            continue
        # Project B: nothing at all, not even reading.
        r = call(broker, ep, beta, reader.token, body)
        assert r.status_code == 403, f"{ep.method} {ep.url(beta)}: {r.status_code} {r.text}"
        broker.expect_denied(r, 403)
        for value in world.canaries("beta"):
            assert value not in r.text
        # Project A: reads succeed, every write or admin route is refused.
        r = call(broker, ep, EXISTING, reader.token, body)
        if key in READ_ON_PROJECT:
            expected = READ_STATUS.get(key, 200)
            assert r.status_code == expected, f"{ep.method} {ep.url(EXISTING)}: {r.status_code} {r.text}"
        else:
            assert r.status_code == 403, f"{ep.method} {ep.url(EXISTING)}: {r.status_code} {r.text}"
            broker.expect_denied(r, 403)
    # The secret was neither overwritten nor deleted by the refused writes.
    r = broker.client.get(
        "/v1/projects/alpha/environments/prod/secrets/API_KEY", headers=broker.admin.headers
    )
    assert r.json()["value"] == world.values["alpha"]["prod/API_KEY"] and r.json()["version"] == 1
