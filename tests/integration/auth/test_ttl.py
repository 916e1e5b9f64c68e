"""C17: TTL, max TTL, renewal and use counts, on a fake clock."""

from __future__ import annotations

from datetime import datetime, timedelta

from tests.integration.auth.conftest import ALL_ACTIONS, Broker, bearer, grants, scope


def _at(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def test_token_expires_exactly_at_its_ttl(broker: Broker) -> None:
    start = broker.clock()
    login = broker.login([scope("*", ["read"])], token_ttl=300)
    assert login.body["expires_in"] == 300
    assert _at(login.body["expires_at"]) == start + timedelta(seconds=300)
    broker.clock.advance(299)
    r = broker.whoami(login.token)
    assert r.status_code == 200, r.text
    assert r.json()["expires_in"] == 1
    broker.clock.advance(1)
    broker.expect_denied(broker.whoami(login.token), 401)
    # A requested TTL is honoured exactly too.
    short = broker.exchange(login.client_id, login.client_secret, ttl=10).json()
    broker.clock.advance(9)
    assert broker.whoami(short["token"]).status_code == 200
    broker.clock.advance(1)
    broker.expect_denied(broker.whoami(short["token"]), 401)


def test_issued_lifetimes_follow_settings_and_identity_limits(broker: Broker) -> None:
    start = broker.clock()
    body = broker.admin.body
    assert body["expires_in"] == broker.rt.settings.token_ttl
    assert _at(body["max_expires_at"]) - _at(body["expires_at"]) == timedelta(
        seconds=broker.rt.settings.token_max_ttl - broker.rt.settings.token_ttl
    )
    assert grants(body["scopes"]) == [scope("*", ALL_ACTIONS)]
    # A requested TTL above the identity's max TTL is cut to the max.
    ident = broker.identity([scope("*", ["read"])], token_ttl=100, token_max_ttl=250)
    body = broker.exchange(ident["client_id"], ident["client_secret"], ttl=10_000).json()
    assert body["expires_in"] == 250
    assert _at(body["max_expires_at"]) == start + timedelta(seconds=250)


def test_renew_extends_but_never_past_max_ttl(broker: Broker) -> None:
    start = broker.clock()
    login = broker.login([scope("*", ["read"])], token_ttl=100, token_max_ttl=250)
    tok = login.token
    assert _at(login.body["max_expires_at"]) == start + timedelta(seconds=250)

    broker.clock.advance(90)
    r = broker.client.post("/v1/auth/token/renew", json={}, headers=bearer(tok))
    assert r.status_code == 200, r.text
    assert "token" not in r.json()
    assert _at(r.json()["expires_at"]) == start + timedelta(seconds=190)
    assert r.json()["expires_in"] == 100

    # Asking for more than the token's TTL per renewal gives the TTL, no more.
    broker.clock.advance(50)
    r = broker.client.post("/v1/auth/token/renew", json={"ttl": 100_000}, headers=bearer(tok))
    assert _at(r.json()["expires_at"]) == start + timedelta(seconds=240)

    broker.clock.advance(40)  # t = 180: a full step would reach 280, past the max of 250
    r = broker.client.post("/v1/auth/token/renew", json={}, headers=bearer(tok))
    assert r.status_code == 200
    assert _at(r.json()["expires_at"]) == start + timedelta(seconds=250)
    assert r.json()["expires_at"] == r.json()["max_expires_at"]

    # A renewal never shortens the token either.
    r = broker.client.post("/v1/auth/token/renew", json={"ttl": 1}, headers=bearer(tok))
    assert _at(r.json()["expires_at"]) == start + timedelta(seconds=250)

    broker.clock.advance(69)  # t = 249
    assert broker.whoami(tok).status_code == 200
    broker.clock.advance(1)  # t = 250 = max TTL
    broker.expect_denied(broker.whoami(tok), 401)
    # Renewing after expiry fails the same way, and does not revive the token.
    broker.expect_denied(broker.client.post("/v1/auth/token/renew", json={}, headers=bearer(tok)), 401)
    r = broker.client.post(
        "/v1/tokens/lookup", json={"accessor": login.accessor}, headers=broker.admin.headers
    )
    assert r.status_code == 200
    assert _at(r.json()["expires_at"]) == start + timedelta(seconds=250)
    broker.expect_denied(broker.whoami(tok), 401)


def test_num_uses_is_exhausted_at_exactly_n(broker: Broker) -> None:
    for n in (1, 3):
        child = broker.child_token(broker.admin.token, num_uses=n)
        assert child["num_uses"] == n and child["uses_remaining"] == n
        for i in range(n):
            r = broker.whoami(child["token"])
            assert r.status_code == 200, (n, i, r.text)
            assert r.json()["uses_remaining"] == n - i - 1
        broker.expect_denied(broker.whoami(child["token"]), 401)
        # Uses are spent by any route, and a spent token stays dead.
        broker.expect_denied(broker.client.get("/v1/projects", headers=bearer(child["token"])), 401)
    # A use is spent even on a request the scopes then refuse.
    ro = broker.login([scope("alpha", ["read"])])
    child = broker.child_token(ro.token, num_uses=2)
    broker.expect_denied(broker.client.get("/v1/identities", headers=bearer(child["token"])), 403)
    assert broker.whoami(child["token"]).status_code == 200
    broker.expect_denied(broker.whoami(child["token"]), 401)


def test_use_limited_token_cannot_mint_children(broker: Broker) -> None:
    """A use-limited token cannot be stretched by minting children (unlimited or not), as in Vault."""
    limited = broker.child_token(broker.admin.token, num_uses=4)
    broker.expect_denied(broker.child(limited["token"]), 403)
    broker.expect_denied(broker.child(limited["token"], num_uses=1), 403)
    broker.expect_denied(broker.child(limited["token"], num_uses=1_000_000), 403)
    assert broker.whoami(limited["token"]).json()["uses_remaining"] == 0
    broker.expect_denied(broker.whoami(limited["token"]), 401)
    rows = broker.dump()["tokens"]
    limited_id = next(r["id"] for r in rows if r["accessor"] == limited["accessor"])
    assert [r for r in rows if r["parent_id"] == limited_id] == []
