"""Identities over HTTP after creation (issue 15): a chosen client id, show, disable/enable, delete, and
client-secret rotation with a grace period; each change audited, bad input refused naming the field with
nothing changed. The `broker` fixture checks on teardown that no client secret reached the audit trail."""

from __future__ import annotations

from typing import Any

import httpx

from tests.integration.auth.conftest import ALL_ACTIONS, Broker, bearer, scope


def _create(broker: Broker, client_id: str | None = None, **extra: Any) -> httpx.Response:
    body: dict[str, Any] = {"name": "ci", "type": "machine", "scopes": [scope("*", ["read"])], **extra}
    if client_id is not None:
        body["client_id"] = client_id
    r: httpx.Response = broker.client.post("/v1/identities", json=body, headers=broker.admin.headers)
    return r


def _post(broker: Broker, path: str, body: Any = None) -> httpx.Response:
    r: httpx.Response = broker.client.post(path, json=body, headers=broker.admin.headers)
    return r


def _ids(broker: Broker, *, include_deleted: bool = False) -> set[str]:
    query = "?include_deleted=true" if include_deleted else ""
    r = broker.client.get(f"/v1/identities{query}", headers=broker.admin.headers)
    assert r.status_code == 200, r.text
    return {i["client_id"] for i in r.json()["identities"]}


def test_chosen_client_id_logs_in_and_is_shown(broker: Broker) -> None:
    r = _create(broker, "ci-deployer")
    assert r.status_code == 201, r.text
    assert r.json()["client_id"] == "ci-deployer"
    assert broker.exchange("ci-deployer", r.json()["client_secret"]).status_code == 200
    shown = broker.client.get("/v1/identities/ci-deployer", headers=broker.admin.headers)
    assert shown.status_code == 200
    body = shown.json()
    assert "client_secret" not in body
    assert (body["name"], body["type"], body["disabled"], body["deleted"]) == ("ci", "machine", False, False)
    assert broker.audit_of(shown)["action"] == "identity.read"
    assert broker.audit_of(shown)["route"] == "/v1/identities/ci-deployer"


def test_bad_client_ids_are_refused_naming_the_field_and_create_nothing(broker: Broker) -> None:
    before = _ids(broker, include_deleted=True)
    for bad in ("has space", "srt_looks-like-a-token", "-leading-dash", "x" * 129, "OIDC-github-squat"):
        r = _create(broker, bad)
        assert r.status_code in (400, 422), (bad, r.text)
        assert "client_id" in r.text, r.text
    assert _create(broker, "Admin").status_code == 409  # the bootstrap admin is `admin`: same when casefolded
    assert _ids(broker, include_deleted=True) == before


def test_disable_revokes_tokens_and_enable_restores_login_only(broker: Broker) -> None:
    login = broker.login([scope("*", ["read"])], name="svc")
    r = _post(broker, f"/v1/identities/{login.client_id}/disable")
    assert r.status_code == 200, r.text
    assert r.json()["disabled"] is True
    assert broker.audit_of(r)["action"] == "identity.disable"
    broker.expect_denied(broker.whoami(login.token), 401)
    broker.expect_denied(broker.exchange(login.client_id, login.client_secret), 401)
    r = _post(broker, f"/v1/identities/{login.client_id}/enable")
    assert r.status_code == 200, r.text
    assert r.json()["disabled"] is False
    assert broker.audit_of(r)["action"] == "identity.enable"
    assert broker.exchange(login.client_id, login.client_secret).status_code == 200
    broker.expect_denied(broker.whoami(login.token), 401)  # revoked tokens stay revoked


def test_delete_is_final_hidden_and_keeps_the_client_id_taken(broker: Broker) -> None:
    login = broker.login([scope("*", ["read"])], name="gone")
    r = broker.client.delete(f"/v1/identities/{login.client_id}", headers=broker.admin.headers)
    assert r.status_code == 204
    assert broker.audit_of(r)["action"] == "identity.delete"
    broker.expect_denied(broker.whoami(login.token), 401)
    broker.expect_denied(broker.exchange(login.client_id, login.client_secret), 401)
    assert login.client_id not in _ids(broker)
    assert login.client_id in _ids(broker, include_deleted=True)
    assert _post(broker, f"/v1/identities/{login.client_id}/enable").status_code == 409
    assert _post(broker, f"/v1/identities/{login.client_id}/rotate-secret", {}).status_code == 409
    assert _create(broker, login.client_id).status_code == 409


def test_rotation_without_grace_refuses_the_old_secret_at_once(broker: Broker) -> None:
    login = broker.login([scope("*", ["read"])], name="rot")
    r = _post(broker, f"/v1/identities/{login.client_id}/rotate-secret", {})
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    body = r.json()
    assert body["previous_secret_valid_until"] is None
    assert body["client_secret"] != login.client_secret
    assert broker.audit_of(r)["action"] == "identity.rotate-secret"
    broker.expect_denied(broker.exchange(login.client_id, login.client_secret), 401)
    assert broker.exchange(login.client_id, body["client_secret"]).status_code == 200
    assert broker.whoami(login.token).status_code == 200  # issued tokens live out their short lives


def test_rotation_with_grace_accepts_the_old_secret_until_the_grace_ends(broker: Broker) -> None:
    login = broker.login([scope("*", ["read"])], name="rot")
    r = _post(broker, f"/v1/identities/{login.client_id}/rotate-secret", {"grace": 300})
    assert r.status_code == 200, r.text
    new = r.json()["client_secret"]
    shown = broker.client.get(f"/v1/identities/{login.client_id}", headers=broker.admin.headers).json()
    assert shown["previous_secret_expires_at"] == r.json()["previous_secret_valid_until"]
    broker.clock.advance(299)
    assert broker.exchange(login.client_id, login.client_secret).status_code == 200
    assert broker.exchange(login.client_id, new).status_code == 200
    broker.clock.advance(1)
    broker.expect_denied(broker.exchange(login.client_id, login.client_secret), 401)
    assert broker.exchange(login.client_id, new).status_code == 200


def test_a_second_rotation_drops_the_first_secret(broker: Broker) -> None:
    login = broker.login([scope("*", ["read"])], name="rot")
    second = _post(broker, f"/v1/identities/{login.client_id}/rotate-secret", {"grace": 300}).json()
    third = _post(broker, f"/v1/identities/{login.client_id}/rotate-secret", {"grace": 300}).json()
    broker.expect_denied(broker.exchange(login.client_id, login.client_secret), 401)
    assert broker.exchange(login.client_id, second["client_secret"]).status_code == 200
    assert broker.exchange(login.client_id, third["client_secret"]).status_code == 200


def test_bad_grace_is_refused_naming_it_and_the_secret_is_unchanged(broker: Broker) -> None:
    login = broker.login([scope("*", ["read"])], name="rot")
    for bad in (-1, 31 * 86400 + 1, "soon"):
        r = _post(broker, f"/v1/identities/{login.client_id}/rotate-secret", {"grace": bad})
        assert r.status_code in (400, 422), r.text
        assert "grace" in r.text
    assert broker.exchange(login.client_id, login.client_secret).status_code == 200


def test_unknown_identity_is_a_404_naming_client_id(broker: Broker) -> None:
    for path in ("disable", "enable", "rotate-secret"):
        r = _post(broker, f"/v1/identities/nobody/{path}", {})
        assert r.status_code == 404, r.text
        assert "client_id" in r.text
    assert broker.client.get("/v1/identities/nobody", headers=broker.admin.headers).status_code == 404


def test_only_admins_manage_identities_and_not_their_own(broker: Broker) -> None:
    reader = broker.login([scope("*", ["read", "write"])], name="reader")
    target = broker.identity([scope("*", ["read"])], name="target")["client_id"]
    for method, path in (
        ("GET", f"/v1/identities/{target}"),
        ("POST", f"/v1/identities/{target}/disable"),
        ("POST", f"/v1/identities/{target}/enable"),
        ("POST", f"/v1/identities/{target}/rotate-secret"),
        ("DELETE", f"/v1/identities/{target}"),
    ):
        r = broker.client.request(method, path, json={} if method == "POST" else None, headers=reader.headers)
        broker.expect_denied(r, 403)
    second_admin = broker.login([scope("*", ALL_ACTIONS)], name="second-admin")
    for r in (
        _post(broker, "/v1/identities/admin/disable"),
        broker.client.delete("/v1/identities/admin", headers=broker.admin.headers),
    ):
        assert r.status_code == 403, r.text
    assert broker.whoami(broker.admin.token).status_code == 200
    # Another admin can.
    r = broker.client.post("/v1/identities/admin/disable", headers=bearer(second_admin.token))
    assert r.status_code == 200
