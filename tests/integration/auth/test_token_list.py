"""`GET /v1/tokens`: admins list tokens by accessor with principal, scopes, expiry and uses; never a token string."""

from __future__ import annotations

from typing import Any

from tests.integration.auth.conftest import Broker, bearer, scope


def listed(broker: Broker, **params: Any) -> list[dict[str, Any]]:
    r = broker.client.get("/v1/tokens", params=params, headers=broker.admin.headers)
    assert r.status_code == 200, r.text
    tokens: list[dict[str, Any]] = r.json()["tokens"]
    return tokens


def test_list_shows_live_tokens_newest_first_without_their_strings(broker: Broker) -> None:
    ci = broker.child_token(
        broker.admin.token,
        scopes=[scope("alpha", ["read"], "prod")],
        ttl=600,
        num_uses=5,
        bound_cidrs=["127.0.0.0/8"],
    )

    r = broker.client.get("/v1/tokens", headers=broker.admin.headers)

    assert r.status_code == 200, r.text
    for secret in (ci["token"], broker.admin.token):
        assert secret not in r.text
    first, second = r.json()["tokens"]
    assert first["accessor"] == ci["accessor"]
    assert second["accessor"] == broker.admin.accessor
    assert "token" not in first
    assert first["num_uses"] == 5 and first["uses_remaining"] == 5
    assert first["bound_cidrs"] == ["127.0.0.0/8"]
    assert first["scopes"][0]["project"] == "alpha" and first["scopes"][0]["environments"] == "prod"
    assert first["principal"]["name"] == "admin"
    assert 0 < first["expires_in"] <= 600
    assert first["revoked"] is False and first["created_at"]
    event = broker.audit_of(r)
    assert (event["action"], event["outcome"]) == ("token.list", "ok")


def test_revoked_and_expired_tokens_only_on_request(broker: Broker) -> None:
    gone = broker.child_token(broker.admin.token, ttl=60)
    r = broker.client.post(
        "/v1/tokens/revoke", json={"accessor": gone["accessor"]}, headers=broker.admin.headers
    )
    assert r.status_code == 204
    short = broker.child_token(broker.admin.token, ttl=30)
    broker.clock.advance(31)

    live = {t["accessor"] for t in listed(broker)}
    everything = {t["accessor"]: t for t in listed(broker, include_inactive="true")}

    assert gone["accessor"] not in live and short["accessor"] not in live
    assert everything[gone["accessor"]]["revoked"] is True
    assert everything[short["accessor"]]["expires_in"] == 0
    assert len(listed(broker, include_inactive="true", limit=1)) == 1


def test_listing_needs_admin(broker: Broker) -> None:
    reader = broker.login([scope("alpha", ["read", "write"])], name="reader")

    r = broker.client.get("/v1/tokens", headers=bearer(reader.token))

    broker.expect_denied(r, 403)


def test_limit_is_bounded(broker: Broker) -> None:
    for limit in ("0", "1001", "x"):
        r = broker.client.get("/v1/tokens", params={"limit": limit}, headers=broker.admin.headers)
        assert r.status_code == 400, (limit, r.text)
