"""Key-restricted scopes: a token whose scope names keys reads and writes only those, never a whole environment."""

from __future__ import annotations

from typing import Any

from tests.integration.auth.conftest import Broker, Login, World, bearer, scope

BASE = "/v1/projects/alpha/environments/prod"


def keyed(project: str, actions: list[str], environments: str, keys: list[str]) -> dict[str, Any]:
    return {**scope(project, actions, environments), "keys": keys}


def test_keyed_child_reads_its_key_and_nothing_environment_wide(broker: Broker, world: World) -> None:
    parent = broker.login([scope("alpha", ["read", "write"])], name="deployer")
    child = broker.child_token(parent.token, scopes=[keyed("alpha", ["read"], "prod", ["API_KEY"])])
    assert child["scopes"] == [
        {"project": "alpha", "environments": "prod", "actions": ["read"], "deny": False, "keys": ["API_KEY"]}
    ]
    h = bearer(child["token"])
    c = broker.client
    r = c.get(f"{BASE}/secrets/API_KEY", headers=h)
    assert r.status_code == 200 and r.json()["value"] == world.values["alpha"]["prod/API_KEY"]
    r = c.post(f"{BASE}/values", json={"names": ["API_KEY"]}, headers=h)
    assert r.status_code == 200 and set(r.json()["values"]) == {"API_KEY"}
    for response in (
        c.get(f"{BASE}/secrets/DB_URL", headers=h),  # inherited from common, but not a listed key
        c.post(f"{BASE}/values", json={"names": ["API_KEY", "DB_URL"]}, headers=h),
        c.get(f"{BASE}/resolved", headers=h),
        c.get(f"{BASE}/secrets", headers=h),
        c.post(f"{BASE}/compile", json={"manifest": "service: web\n", "targets": ["dotenv"]}, headers=h),
        c.put(f"{BASE}/secrets/API_KEY", json={"value": "x"}, headers=h),
        c.get("/v1/projects/alpha/environments/common/secrets/DB_URL", headers=h),
    ):
        broker.expect_denied(response, 403)
        for value in world.canaries("alpha"):
            assert value not in response.text
    assert "alpha/prod/DB_URL" in c.get(f"{BASE}/secrets/DB_URL", headers=h).json()["detail"]


def test_keyed_child_cannot_widen_its_keys(broker: Broker, world: World) -> None:
    parent = broker.login([scope("alpha", ["read"])], name="deployer")
    child = broker.child_token(parent.token, scopes=[keyed("alpha", ["read"], "prod", ["API_KEY", "X"])])
    for wider in (
        [scope("alpha", ["read"], "prod")],
        [keyed("alpha", ["read"], "prod", ["API_KEY", "DB_URL"])],
    ):
        broker.expect_denied(broker.child(child["token"], scopes=wider), 403)
    narrower = broker.child_token(child["token"], scopes=[keyed("alpha", ["read"], "prod", ["X"])])
    assert narrower["scopes"][0]["keys"] == ["X"]


def test_keyed_deny_refuses_its_keys(broker: Broker, world: World) -> None:
    reader: Login = broker.login(
        [scope("alpha", ["read"]), {**keyed("alpha", ["read"], "prod", ["API_KEY"]), "deny": True}],
        name="almost",
    )
    c = broker.client
    broker.expect_denied(c.get(f"{BASE}/secrets/API_KEY", headers=reader.headers), 403)
    broker.expect_denied(c.get(f"{BASE}/resolved", headers=reader.headers), 403)
    r = c.get("/v1/projects/alpha/environments/common/secrets/DB_URL", headers=reader.headers)
    assert r.status_code == 200


def test_bad_keys_are_refused_naming_the_field(broker: Broker, world: World) -> None:
    for keys, field in (
        (["ok", "not-a-name"], "scopes.1.keys"),
        ([f"K{i}" for i in range(1001)], "scopes.0"),
    ):
        scopes = [keyed("alpha", ["read"], "prod", ["A"]), keyed("alpha", ["read"], "prod", keys)]
        if field == "scopes.0":
            scopes = [keyed("alpha", ["read"], "prod", keys)]
        r = broker.child(broker.admin.token, scopes=scopes)
        assert r.status_code == 400, r.text
        assert r.json()["detail"].startswith(("scopes[1].keys[1]", "scopes.0.keys")), r.json()["detail"]
