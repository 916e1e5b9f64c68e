"""J56: X-Forwarded-For is believed only from configured trusted proxies (the rightmost untrusted hop)."""

from __future__ import annotations

import secrets

import httpx
import pytest

from tests.integration.auth.conftest import Broker, bearer, scope


def _xff(value: str) -> dict[str, str]:
    return {"X-Forwarded-For": value}


def _source(broker: Broker, r: httpx.Response) -> str | None:
    addr: str | None = broker.audit_of(r)["source_addr"]
    return addr


def _bad_token() -> dict[str, str]:
    return bearer("srt_" + secrets.token_urlsafe(32))


@pytest.mark.broker_settings(auth_failure_limit=3)
def test_xff_ignored_without_trusted_proxies(broker: Broker) -> None:
    assert broker.rt.settings.trusted_proxies == []
    c = broker.client
    # Audit records the peer, not the claimed client.
    r = c.get("/v1/auth/token/self", headers={**broker.admin.headers, **_xff("203.0.113.9")})
    assert r.status_code == 200
    assert _source(broker, r) == "127.0.0.1"
    r = broker.whoami(broker.admin.token, via=broker.peer("10.9.9.9"))
    assert _source(broker, r) == "10.9.9.9"
    # CIDR binding: a forged XFF neither lets an outsider in nor locks an insider out.
    bound = broker.identity([scope("*", ["read"])], name="bound", bound_cidrs=["203.0.113.0/24"])
    r = c.post(
        "/v1/auth/token",
        json={"client_id": bound["client_id"], "client_secret": bound["client_secret"]},
        headers=_xff("203.0.113.9"),
    )
    broker.expect_denied(r, 401)
    assert _source(broker, r) == "127.0.0.1"
    local = broker.child_token(broker.admin.token, bound_cidrs=["127.0.0.1/32"])
    outsider = broker.peer("10.9.9.9")
    r = outsider.get("/v1/auth/token/self", headers={**bearer(local["token"]), **_xff("127.0.0.1")})
    broker.expect_denied(r, 401)
    assert _source(broker, r) == "10.9.9.9"
    r = c.get("/v1/auth/token/self", headers={**bearer(local["token"]), **_xff("10.9.9.9")})
    assert r.status_code == 200
    # Rate limiting: rotating the XFF value does not give fresh counters.
    attacker = broker.peer("198.51.100.66")
    for i in range(3):
        r = attacker.get("/v1/projects", headers={**_bad_token(), **_xff(f"192.0.2.{i + 1}")})
        broker.expect_denied(r, 401)
    r = attacker.get("/v1/projects", headers={**broker.admin.headers, **_xff("192.0.2.200")})
    broker.expect_denied(r, 429)
    assert _source(broker, r) == "198.51.100.66"
    # ...and claiming to be the attacker from elsewhere does not lock the attacker's victims.
    assert c.get("/v1/projects", headers={**broker.admin.headers, **_xff("198.51.100.66")}).status_code == 200


PROXY = "10.0.0.5"


@pytest.mark.broker_settings(trusted_proxies=["10.0.0.0/24", "172.16.0.0/12"], auth_failure_limit=3)
def test_xff_from_trusted_proxy_uses_rightmost_untrusted_hop(broker: Broker) -> None:
    proxy = broker.peer(PROXY)
    h = broker.admin.headers
    cases = {
        "203.0.113.9": "203.0.113.9",
        "203.0.113.9, 198.51.100.7": "198.51.100.7",  # the client forged the first hop
        "203.0.113.9, 198.51.100.7, 172.16.4.4": "198.51.100.7",  # an inner trusted proxy is skipped
        "198.51.100.7,10.0.0.9": "198.51.100.7",
        " 2001:db8::1 ": "2001:db8::1",
        "10.0.0.7, 172.16.0.1": PROXY,  # every hop trusted: fall back to the peer
        "203.0.113.9, not-an-ip": PROXY,  # an unparsable nearest hop is not believed
    }
    for header, expected in cases.items():
        r = proxy.get("/v1/auth/token/self", headers={**h, **_xff(header)})
        assert r.status_code == 200, (header, r.text)
        assert _source(broker, r) == expected, header
    # A proxy without XFF is itself the client.
    assert _source(broker, proxy.get("/v1/auth/token/self", headers=h)) == PROXY
    # A peer that is not a trusted proxy cannot claim an address.
    r = broker.peer("192.0.2.1").get("/v1/auth/token/self", headers={**h, **_xff("203.0.113.9")})
    assert _source(broker, r) == "192.0.2.1"
    r = broker.client.get("/v1/auth/token/self", headers={**h, **_xff("203.0.113.9")})
    assert _source(broker, r) == "127.0.0.1"


@pytest.mark.broker_settings(trusted_proxies=["10.0.0.0/24"], auth_failure_limit=3)
def test_trusted_xff_drives_cidr_binding_and_rate_limits(broker: Broker) -> None:
    proxy = broker.peer(PROXY)
    bound = broker.identity([scope("*", ["read"])], name="bound", bound_cidrs=["203.0.113.0/24"])
    creds = {"client_id": bound["client_id"], "client_secret": bound["client_secret"]}
    # Through the proxy, the client's address is what the binding sees.
    r = proxy.post("/v1/auth/token", json=creds, headers=_xff("203.0.113.9"))
    assert r.status_code == 200, r.text
    token = r.json()["token"]
    assert _source(broker, r) == "203.0.113.9"
    assert (
        proxy.get(
            "/v1/auth/token/self", headers={**bearer(token), **_xff("198.51.100.1, 203.0.113.10")}
        ).status_code
        == 200
    )
    broker.expect_denied(
        proxy.get("/v1/auth/token/self", headers={**bearer(token), **_xff("203.0.113.9, 198.51.100.1")}), 401
    )
    broker.expect_denied(proxy.get("/v1/auth/token/self", headers=bearer(token)), 401)
    broker.expect_denied(
        broker.peer("192.0.2.1").get("/v1/auth/token/self", headers={**bearer(token), **_xff("203.0.113.9")}),
        401,
    )
    broker.expect_denied(proxy.post("/v1/auth/token", json=creds, headers=_xff("198.51.100.1")), 401)

    # Rate limiting is per real client behind the proxy, not per proxy.
    for _ in range(3):
        broker.expect_denied(
            proxy.get("/v1/projects", headers={**_bad_token(), **_xff("198.51.100.50")}), 401
        )
    r = proxy.get("/v1/projects", headers={**broker.admin.headers, **_xff("198.51.100.50")})
    broker.expect_denied(r, 429)
    assert _source(broker, r) == "198.51.100.50"
    assert (
        proxy.get("/v1/projects", headers={**broker.admin.headers, **_xff("198.51.100.51")}).status_code
        == 200
    )
    # The locked client cannot escape by prepending a forged hop.
    r = proxy.get("/v1/projects", headers={**broker.admin.headers, **_xff("1.2.3.4, 198.51.100.50")})
    broker.expect_denied(r, 429)
