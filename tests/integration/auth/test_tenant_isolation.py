"""D26: a token scoped to one project never lists, reads, resolves or sees the history of another."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from tests.integration.auth.conftest import ALL_ACTIONS, Broker, Login, World, scope
from tests.integration.auth.routes import EXISTING, app_of, body_for, endpoints, example_bodies

BASE = "/v1/projects/{p}/environments"
SECRET = BASE + "/{e}/secrets/{n}"

# Query variants worth probing on top of each route's plain form.
EXTRA_QUERIES = {
    ("GET", "/v1/projects/{project}/environments/{environment}/secrets"): "include_deleted=true",
    ("GET", "/v1/projects/{project}/environments/{environment}/secrets/{name}"): "version=1",
}
TARGETS = [
    {"environment": "prod", "name": "API_KEY", "a": "prod", "b": "common"},
    {"environment": "common", "name": "MISSING", "a": "common", "b": "nowhere"},
]


def _snapshot(broker: Broker, project: str) -> dict[str, Any]:
    """What the admin sees of one tenant."""
    c, h = broker.client, broker.admin.headers
    out: dict[str, Any] = {"project": c.get(f"/v1/projects/{project}", headers=h).json()}
    out["envs"] = c.get(f"/v1/projects/{project}/environments", headers=h).json()
    for env in ("common", "prod"):
        out[f"{env}/list"] = c.get(
            f"/v1/projects/{project}/environments/{env}/secrets?include_deleted=true", headers=h
        ).json()
        out[f"{env}/resolved"] = c.get(
            f"/v1/projects/{project}/environments/{env}/resolved", headers=h
        ).json()
    for env, name in (("common", "DB_URL"), ("prod", "API_KEY")):
        out[f"{env}/{name}/versions"] = c.get(
            SECRET.format(p=project, e=env, n=name) + "/versions", headers=h
        ).json()
    return out


@pytest.fixture
def tenant_a(broker: Broker, world: World) -> Login:
    """Everything on alpha, nothing elsewhere."""
    return broker.login([scope("alpha", ALL_ACTIONS)], name="alpha-owner")


def test_other_tenant_is_unreachable(broker: Broker, world: World, tenant_a: Login) -> None:
    """Every route with a project in its path (enumerated from the app), aimed at beta: 403, nothing leaks."""
    before = _snapshot(broker, "beta")
    beta_values = world.canaries("beta")
    bodies = example_bodies(tenant_a, broker.admin.accessor)
    probed = 0
    for ep in endpoints(app_of(broker)):
        if "project" not in ep.params:
            continue
        for target in TARGETS:
            values = {**EXISTING, **target, "project": "beta"}
            url = ep.url(values)
            extra = EXTRA_QUERIES.get((ep.method, ep.path))
            for u in (url, f"{url}{'&' if '?' in url else '?'}{extra}") if extra else (url,):
                r = broker.client.request(ep.method, u, json=body_for(ep, bodies), headers=tenant_a.headers)
                assert r.status_code == 403, f"{ep.method} {u}: {r.status_code} {r.text}"
                broker.expect_denied(r, 403)
                for value in beta_values:
                    assert value not in r.text
                probed += 1
    assert probed >= 2 * 20
    assert _snapshot(broker, "beta") == before
    # A child of the alpha token cannot be made to reach beta either.
    r = broker.child(tenant_a.token, scopes=[scope("beta", ["read"])])
    broker.expect_denied(r, 403)


def test_own_tenant_views_never_include_the_other(broker: Broker, world: World, tenant_a: Login) -> None:
    c, h = broker.client, tenant_a.headers
    r = c.get("/v1/projects", headers=h)
    assert r.status_code == 200
    assert [p["slug"] for p in r.json()["projects"]] == ["alpha"]
    texts = [r.text]
    for env in ("common", "prod"):
        for suffix in ("/secrets", "/secrets?include_deleted=true", "/resolved", ""):
            r = c.get(f"/v1/projects/alpha/environments/{env}{suffix}", headers=h)
            assert r.status_code == 200, r.text
            texts.append(r.text)
    r = c.get("/v1/projects/alpha/environments/prod/resolved", headers=h)
    assert {k: v["value"] for k, v in r.json()["values"].items()} == {
        "API_KEY": world.values["alpha"]["prod/API_KEY"],
        "DB_URL": world.values["alpha"]["common/DB_URL"],
    }
    for env, name in (("common", "DB_URL"), ("prod", "API_KEY")):
        for suffix in ("", "/versions", "?version=1"):
            r = c.get(SECRET.format(p="alpha", e=env, n=name) + suffix, headers=h)
            assert r.status_code == 200, r.text
            texts.append(r.text)
    texts.append(c.get("/v1/projects/alpha/environments", headers=h).text)
    for text in texts:
        for value in world.canaries("beta"):
            assert value not in text
        assert "beta" not in text


def test_cross_tenant_names_cannot_be_smuggled(broker: Broker, world: World, tenant_a: Login) -> None:
    """Parents, case and path tricks do not reach beta's rows."""
    c, h = broker.client, tenant_a.headers
    # An alpha environment whose parent is named like beta's resolves within alpha only.
    r = c.post("/v1/projects/alpha/environments", json={"slug": "staging", "parent": "prod"}, headers=h)
    assert r.status_code == 201, r.text
    r = c.get("/v1/projects/alpha/environments/staging/resolved", headers=h)
    assert set(r.json()["values"]) == {"API_KEY", "DB_URL"}
    assert all(v["value"].endswith(("alpha-API_KEY", "alpha-DB_URL")) for v in r.json()["values"].values())
    for url in (
        "/v1/projects/BETA/environments/prod/resolved",
        "/v1/projects/Beta/environments/prod/secrets/API_KEY",
        "/v1/projects/beta%2F/environments/prod/resolved",
        "/v1/projects/alpha%2F..%2Fbeta/environments/prod/resolved",
        "/v1/projects/alpha/../beta/environments/prod/resolved",
        "/v1/projects/%62eta/environments/prod/resolved",
        "/v1/projects/beta /environments/prod/resolved",
        "/v1/projects/*/environments/prod/resolved",
    ):
        r = c.get(url, headers=h)
        assert r.status_code in (400, 403, 404), f"{url}: {r.status_code}"
        for value in world.canaries("beta"):
            assert value not in r.text


def test_environment_glob_confines_within_a_tenant(broker: Broker, world: World) -> None:
    """An environment-scoped token reads its environment (with inherited values) but not the parent directly."""
    prod_reader = broker.login([scope("alpha", ["read"], "prod")], name="prod-reader")
    c, h = broker.client, prod_reader.headers
    assert c.get("/v1/projects/alpha/environments/prod/secrets/API_KEY", headers=h).status_code == 200
    broker.expect_denied(c.get("/v1/projects/alpha/environments/common/secrets/DB_URL", headers=h), 403)
    broker.expect_denied(c.get("/v1/projects/alpha/environments/common/resolved", headers=h), 403)
    broker.expect_denied(c.get("/v1/projects/beta/environments/prod/secrets/API_KEY", headers=h), 403)
    envs = c.get("/v1/projects/alpha/environments", headers=h).json()["environments"]
    assert [e["slug"] for e in envs] == ["prod"]


OPS = ("list", "list-deleted", "read", "read-v1", "history", "resolve", "environments", "project")


def _op_url(op: str, project: str, env: str, name: str) -> str:
    base = f"/v1/projects/{project}/environments/{env}"
    return {
        "list": f"{base}/secrets",
        "list-deleted": f"{base}/secrets?include_deleted=true",
        "read": f"{base}/secrets/{name}",
        "read-v1": f"{base}/secrets/{name}?version=1",
        "history": f"{base}/secrets/{name}/versions",
        "resolve": f"{base}/resolved",
        "environments": f"/v1/projects/{project}/environments",
        "project": f"/v1/projects/{project}",
    }[op]


def test_isolation_holds_through_random_histories(broker: Broker, world: World, tenant_a: Login) -> None:
    """Stateful: admins write, delete and roll back in both tenants; alpha's token never sees a beta row."""
    c = broker.client
    beta_values: set[str] = set(world.canaries("beta"))
    names = st.sampled_from(["API_KEY", "DB_URL", "TOKEN_X"])
    envs = st.sampled_from(["common", "prod"])
    counter = iter(range(1_000_000))

    class Isolation(RuleBasedStateMachine):
        @rule(project=st.sampled_from(["alpha", "beta"]), env=envs, name=names, as_owner=st.booleans())
        def write(self, project: str, env: str, name: str, as_owner: bool) -> None:
            value = f"v{next(counter)}-{project}-{world.canaries(project)[0]}"
            headers = tenant_a.headers if as_owner else broker.admin.headers
            r = c.put(_op_url("read", project, env, name), json={"value": value}, headers=headers)
            if as_owner and project == "beta":
                assert r.status_code == 403
                return
            assert r.status_code == 200, r.text
            if project == "beta":
                beta_values.add(value)

        @rule(project=st.sampled_from(["alpha", "beta"]), env=envs, name=names)
        def delete_or_rollback(self, project: str, env: str, name: str) -> None:
            url = _op_url("read", project, env, name)
            if c.delete(url, headers=broker.admin.headers).status_code != 204:
                c.post(f"{url}/rollback", json={"version": 1}, headers=broker.admin.headers)

        @rule(op=st.sampled_from(OPS), project=st.sampled_from(["alpha", "beta"]), env=envs, name=names)
        def owner_reads(self, op: str, project: str, env: str, name: str) -> None:
            r = c.get(_op_url(op, project, env, name), headers=tenant_a.headers)
            if project == "beta":
                assert r.status_code == 403, (op, r.status_code)
            else:
                assert r.status_code in (200, 404), (op, r.status_code, r.text)
            assert not any(v in r.text for v in beta_values), op

        @invariant()
        def only_own_project_listed(self) -> None:
            r = c.get("/v1/projects", headers=tenant_a.headers)
            assert [p["slug"] for p in r.json()["projects"]] == ["alpha"]

    run_state_machine_as_test(
        Isolation,
        settings=settings(
            max_examples=3,
            stateful_step_count=10,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        ),
    )
