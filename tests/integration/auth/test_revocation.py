"""C18 revocation cascades at once (also across workers); C19 accessors look up and revoke, never authenticate."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from broker.main import build_runtime, create_app
from broker.services.runtime import Runtime
from tests.integration.auth.conftest import ALL_ACTIONS, Broker, bearer, grants, scope


def _tree(broker: Broker, root: str) -> tuple[dict[str, str], dict[str, str]]:
    """root -> child -> grandchild, plus a sibling of the child; returns tokens and accessors."""
    child = broker.child_token(root)
    grandchild = broker.child_token(child["token"])
    sibling = broker.child_token(root)
    tokens = {"child": child["token"], "grandchild": grandchild["token"], "sibling": sibling["token"]}
    accessors = {
        "child": child["accessor"],
        "grandchild": grandchild["accessor"],
        "sibling": sibling["accessor"],
    }
    return tokens, accessors


def test_revoke_self_revokes_descendants_on_the_next_request(broker: Broker) -> None:
    root = broker.login([scope("*", ALL_ACTIONS)], name="root")
    tokens, _ = _tree(broker, root.token)
    for tok in tokens.values():
        assert broker.whoami(tok).status_code == 200
    r = broker.client.post("/v1/auth/token/revoke-self", headers=bearer(tokens["child"]))
    assert r.status_code == 204
    assert broker.audit_of(r)["outcome"] == "ok"
    broker.expect_denied(broker.whoami(tokens["child"]), 401)
    broker.expect_denied(broker.client.get("/v1/projects", headers=bearer(tokens["grandchild"])), 401)
    # Only the subtree: the parent and the sibling live on.
    assert broker.whoami(root.token).status_code == 200
    assert broker.whoami(tokens["sibling"]).status_code == 200
    # Revoking the root takes the rest.
    assert broker.client.post("/v1/auth/token/revoke-self", headers=root.headers).status_code == 204
    broker.expect_denied(broker.whoami(root.token), 401)
    broker.expect_denied(broker.whoami(tokens["sibling"]), 401)
    # A revoked token cannot revoke, renew or create children.
    broker.expect_denied(broker.client.post("/v1/auth/token/revoke-self", headers=root.headers), 401)
    broker.expect_denied(broker.client.post("/v1/auth/token/renew", json={}, headers=root.headers), 401)
    broker.expect_denied(broker.child(root.token), 401)


def test_admin_revokes_by_accessor_with_cascade(broker: Broker) -> None:
    root = broker.login([scope("*", ALL_ACTIONS)], name="root")
    tokens, accessors = _tree(broker, root.token)
    r = broker.client.post(
        "/v1/tokens/revoke", json={"accessor": root.accessor}, headers=broker.admin.headers
    )
    assert r.status_code == 204, r.text
    for tok in (root.token, *tokens.values()):
        broker.expect_denied(broker.whoami(tok), 401)
    # Lookup by accessor shows the revoked state to the admin.
    for acc in (root.accessor, *accessors.values()):
        r = broker.client.post("/v1/tokens/lookup", json={"accessor": acc}, headers=broker.admin.headers)
        assert r.status_code == 200, r.text
        assert r.json()["accessor"] == acc
        assert "token" not in r.json()
    assert broker.whoami(broker.admin.token).status_code == 200


def test_disabling_an_identity_revokes_its_tokens(broker: Broker) -> None:
    victim = broker.login([scope("*", ALL_ACTIONS)], name="victim")
    second = broker.exchange(victim.client_id, victim.client_secret).json()["token"]
    tokens, _ = _tree(broker, victim.token)
    other = broker.login([scope("*", ["read"])], name="bystander")
    r = broker.client.post(f"/v1/identities/{victim.client_id}/disable", headers=broker.admin.headers)
    assert r.status_code == 200
    for tok in (victim.token, second, *tokens.values()):
        broker.expect_denied(broker.whoami(tok), 401)
    broker.expect_denied(broker.exchange(victim.client_id, victim.client_secret), 401)
    assert broker.whoami(other.token).status_code == 200
    listed = broker.client.get("/v1/identities", headers=broker.admin.headers).json()["identities"]
    assert {i["client_id"]: i["disabled"] for i in listed}[victim.client_id] is True


@pytest.fixture
def second_worker(runtime: Runtime, broker: Broker) -> Iterator[TestClient]:
    """A second broker process's view: its own runtime and engine on the same database and keys."""
    rt2 = build_runtime(runtime.settings)
    rt2.clock = runtime.clock
    with TestClient(create_app(rt2), client=("127.0.0.1", 50001)) as c:
        c.event_hooks = broker.client.event_hooks
        yield c


def test_revocation_is_seen_by_another_worker(broker: Broker, second_worker: TestClient) -> None:
    tok = broker.child_token(broker.admin.token)
    grandchild = broker.child_token(tok["token"])
    assert broker.whoami(grandchild["token"], via=second_worker).status_code == 200
    r = broker.client.post(
        "/v1/tokens/revoke", json={"accessor": tok["accessor"]}, headers=broker.admin.headers
    )
    assert r.status_code == 204
    assert second_worker.get("/v1/auth/token/self", headers=bearer(tok["token"])).status_code == 401
    assert second_worker.get("/v1/auth/token/self", headers=bearer(grandchild["token"])).status_code == 401


def test_accessor_looks_up_and_revokes_but_never_authenticates(broker: Broker) -> None:
    target = broker.login([scope("alpha", ["read"])], name="target")
    # Used as a bearer token, as is or dressed up as a token, the accessor is refused.
    broker.expect_denied(broker.whoami(target.accessor), 401)
    broker.expect_denied(broker.whoami("srt_" + target.accessor[4:]), 401)
    broker.expect_denied(
        broker.client.get("/v1/projects/alpha/environments/prod/secrets", headers=bearer(target.accessor)),
        401,
    )
    # An admin looks the token up by accessor: everything but the token.
    r = broker.client.post(
        "/v1/tokens/lookup", json={"accessor": target.accessor}, headers=broker.admin.headers
    )
    assert r.status_code == 200, r.text
    info = r.json()
    assert "token" not in info and target.token not in r.text
    assert grants(info["scopes"]) == [scope("alpha", ["read"])]
    assert info["principal"]["name"] == "target"
    assert info["expires_at"] == target.body["expires_at"]
    # Lookup and revoke need admin: the target itself, or a read-only token, gets 403.
    for who in (target.headers, broker.login([scope("*", ["read", "write", "audit"])], name="rw").headers):
        broker.expect_denied(
            broker.client.post("/v1/tokens/lookup", json={"accessor": target.accessor}, headers=who), 403
        )
        broker.expect_denied(
            broker.client.post("/v1/tokens/revoke", json={"accessor": target.accessor}, headers=who), 403
        )
    assert broker.whoami(target.token).status_code == 200
    # Unknown accessor: 404 for the admin.
    r = broker.client.post("/v1/tokens/lookup", json={"accessor": "sra_nope"}, headers=broker.admin.headers)
    assert r.status_code == 404
    # Revoke by accessor: the token dies on its next request.
    r = broker.client.post(
        "/v1/tokens/revoke", json={"accessor": target.accessor}, headers=broker.admin.headers
    )
    assert r.status_code == 204
    broker.expect_denied(broker.whoami(target.token), 401)
    # The audit trail names the token by accessor, never by its value.
    events = [e for e in broker.audit_rows() if e["token_accessor"] == target.accessor]
    assert events
