"""Child tokens are never broader than their parent: scopes, networks, lifetime; CIDR binding holds."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from tests.integration.auth.conftest import Broker, Login, World, bearer, grants, scope


def _at(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@pytest.fixture
def parent(broker: Broker) -> Login:
    return broker.login(
        [scope("alpha", ["read", "write"], "prod*")], token_ttl=600, bound_cidrs=["127.0.0.0/8"]
    )


WIDER_SCOPES: dict[str, list[dict[str, Any]]] = {
    "any project": [scope("*", ["read"], "prod")],
    "other project": [scope("beta", ["read"], "prod")],
    "admin action": [scope("alpha", ["admin"], "prod")],
    "audit action": [scope("alpha", ["audit"], "prod")],
    "extra action": [scope("alpha", ["read", "write", "admin"], "prod")],
    "any environment": [scope("alpha", ["read"], "*")],
    "other environment": [scope("alpha", ["read"], "staging")],
    "wider glob": [scope("alpha", ["read"], "pro*")],
    "question-mark glob": [scope("alpha", ["read"], "prod?")],
    "one good, one wide": [scope("alpha", ["read"], "prod"), scope("beta", ["read"], "prod")],
}


def test_child_cannot_widen_scopes(broker: Broker, parent: Login) -> None:
    for name, scopes in WIDER_SCOPES.items():
        r = broker.child(parent.token, scopes=scopes)
        assert r.status_code == 403, (name, r.text)
        broker.expect_denied(r, 403)
    # Narrower or equal scopes are fine.
    for scopes in (
        [scope("alpha", ["read"], "prod")],
        [scope("alpha", ["read"], "prod-eu")],
        [scope("alpha", ["read", "write"], "prod*")],
    ):
        child = broker.child_token(parent.token, scopes=scopes)
        assert grants(child["scopes"]) == scopes
    # Default: the parent's scopes and networks.
    child = broker.child_token(parent.token)
    assert child["scopes"] == parent.body["scopes"]
    assert child["bound_cidrs"] == ["127.0.0.0/8"]
    # A grandchild cannot regain what the child dropped.
    child = broker.child_token(parent.token, scopes=[scope("alpha", ["read"], "prod")])
    broker.expect_denied(
        broker.child(child["token"], scopes=[scope("alpha", ["read", "write"], "prod")]), 403
    )
    broker.expect_denied(broker.child(child["token"], scopes=[scope("alpha", ["read"], "prod*")]), 403)


def test_child_cannot_widen_networks(broker: Broker, parent: Login) -> None:
    for cidrs in (["10.0.0.0/8"], ["0.0.0.0/0"], ["127.0.0.0/7"], ["::/0"], ["127.0.0.1/32", "10.0.0.1"], []):
        r = broker.child(parent.token, bound_cidrs=cidrs)
        assert r.status_code == 403, (cidrs, r.text)
        broker.expect_denied(r, 403)
    child = broker.child_token(parent.token, bound_cidrs=["127.0.0.1/32"])
    assert child["bound_cidrs"] == ["127.0.0.1/32"]
    assert broker.whoami(child["token"]).status_code == 200


def test_child_ttl_is_capped_by_parent_remaining_life(broker: Broker, parent: Login) -> None:
    parent_expiry = _at(parent.body["expires_at"])
    broker.clock.advance(500)
    child = broker.child_token(parent.token, ttl=3600)
    assert child["expires_in"] == 100
    assert _at(child["expires_at"]) == parent_expiry
    assert child["max_expires_at"] == parent.body["max_expires_at"]
    broker.clock.advance(99)
    assert broker.whoami(child["token"]).status_code == 200
    broker.clock.advance(1)
    broker.expect_denied(broker.whoami(child["token"]), 401)


def test_renewed_child_never_outlives_its_parent(broker: Broker, parent: Login) -> None:
    """The child's lifetime stays within the parent's: renewing cannot push it past the parent's expiry."""
    parent_expiry = _at(parent.body["expires_at"])
    broker.clock.advance(400)
    child = broker.child_token(parent.token, ttl=150)
    broker.clock.advance(140)  # t = 540; the parent expires at 600
    r = broker.client.post("/v1/auth/token/renew", json={}, headers=bearer(child["token"]))
    assert r.status_code == 200, r.text
    assert _at(r.json()["expires_at"]) <= parent_expiry
    broker.clock.advance(60)  # t = 600: the parent is expired, so is its child
    broker.expect_denied(broker.whoami(parent.token), 401)
    broker.expect_denied(broker.whoami(child["token"]), 401)


def test_parent_renewal_lets_the_child_renew_further(broker: Broker, parent: Login) -> None:
    """Capping by the parent is by its current expiry, not its original one."""
    broker.clock.advance(500)
    child = broker.child_token(parent.token, ttl=300)
    assert child["expires_in"] == 100
    broker.clock.advance(50)
    assert broker.client.post("/v1/auth/token/renew", json={}, headers=parent.headers).status_code == 200
    r = broker.client.post("/v1/auth/token/renew", json={}, headers=bearer(child["token"]))
    assert r.status_code == 200
    assert r.json()["expires_in"] == 100  # the child's own TTL step, within the renewed parent's 600


def test_cidr_bound_token_refused_from_other_peer(broker: Broker, parent: Login) -> None:
    outsider = broker.peer("10.9.9.9")
    broker.expect_denied(broker.whoami(parent.token, via=outsider), 401)
    child = broker.child_token(parent.token, bound_cidrs=["127.0.0.1/32"])
    broker.expect_denied(broker.whoami(child["token"], via=broker.peer("127.0.0.2")), 401)
    assert broker.whoami(child["token"]).status_code == 200
    # The identity itself is CIDR-bound: its credential cannot be exchanged from elsewhere.
    broker.expect_denied(broker.exchange(parent.client_id, parent.client_secret, via=outsider), 401)
    assert (
        broker.exchange(parent.client_id, parent.client_secret, via=broker.peer("127.8.8.8")).status_code
        == 200
    )
    # An unbound token works from anywhere.
    assert broker.whoami(broker.admin.token, via=outsider).status_code == 200


def test_child_keeps_the_parent_denies(broker: Broker, world: World) -> None:
    """Delegation never drops a refusal: a child asking for the parent's grants still carries its denies."""
    parent = broker.login(
        [scope("alpha", ["read"]), {**scope("alpha", ["read"], "prod"), "deny": True}], name="denied"
    )
    broker.expect_denied(
        broker.client.get("/v1/projects/alpha/environments/prod/resolved", headers=parent.headers), 403
    )
    child = broker.child_token(parent.token, scopes=[scope("alpha", ["read"])])
    r = broker.client.get("/v1/projects/alpha/environments/prod/resolved", headers=bearer(child["token"]))
    broker.expect_denied(r, 403)
    assert (
        broker.client.get(
            "/v1/projects/alpha/environments/common/resolved", headers=bearer(child["token"])
        ).status_code
        == 200
    )
