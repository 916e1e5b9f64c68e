"""C21: failed authentications are limited per canonical principal and per source address."""

from __future__ import annotations

import secrets

import httpx
import pytest

from tests.integration.auth.conftest import Broker, bearer

LIMIT = 3
WINDOW = 60

pytestmark = pytest.mark.broker_settings(auth_failure_limit=LIMIT, auth_failure_window=WINDOW)


def _bad_secret() -> str:
    return "srs_" + secrets.token_urlsafe(32)


def _expect_429(broker: Broker, r: httpx.Response) -> int:
    broker.expect_denied(r, 429)
    retry = int(r.headers["retry-after"])
    assert 1 <= retry <= WINDOW + 1
    assert "retry-after" not in r.json()
    return retry


def test_principal_lockout_after_n_failures_then_window(broker: Broker) -> None:
    # Each attempt from a different address, so only the per-principal counter can trip.
    for i in range(LIMIT):
        r = broker.exchange("admin", _bad_secret(), via=broker.peer(f"10.0.0.{i + 1}"))
        broker.expect_denied(r, 401)
    r = broker.exchange("admin", _bad_secret(), via=broker.peer("10.0.0.50"))
    retry = _expect_429(broker, r)
    assert retry >= WINDOW
    # The correct credential is refused while locked, from anywhere...
    r = broker.exchange("admin", broker.admin.client_secret, via=broker.peer("10.0.0.51"))
    _expect_429(broker, r)
    r = broker.exchange("admin", broker.admin.client_secret)
    _expect_429(broker, r)
    # ...other principals are not affected...
    other = broker.identity([], name="other")
    assert broker.exchange(other["client_id"], other["client_secret"]).status_code == 200
    # ...and just before the window ends it is still locked; at the end it works again.
    broker.mono.advance(WINDOW - 1)
    _expect_429(broker, broker.exchange("admin", broker.admin.client_secret, via=broker.peer("10.0.0.52")))
    broker.mono.advance(1)
    r = broker.exchange("admin", broker.admin.client_secret, via=broker.peer("10.0.0.53"))
    assert r.status_code == 200, r.text
    # Refusals while locked did not count as failures (else the lock would be extended).


VARIANTS = {
    "case": ["ADMIN", "Admin", "aDmIn"],
    "fullwidth": ["\uff41\uff44\uff4d\uff49\uff4e", "\uff21\uff24\uff2d\uff29\uff2e", "ADMIN"],
    # NFKC compatibility forms: feminine ordinal a, small roman numerals d/m/i, superscript n.
    "compatibility": ["\u00aa\u217e\u217f\u2170\u207f", "\uff41dMiN", "ADM\u2170N"],
}


def test_case_and_unicode_variants_share_one_counter(broker: Broker) -> None:
    for n, (kind, variants) in enumerate(VARIANTS.items()):
        assert len(variants) == LIMIT
        for i, client_id in enumerate(variants):
            r = broker.exchange(client_id, _bad_secret(), via=broker.peer(f"10.{n}.0.{i + 1}"))
            broker.expect_denied(r, 401)
        # The real admin, with the right secret, from a fresh address, is locked by its variants' failures.
        r = broker.exchange("admin", broker.admin.client_secret, via=broker.peer(f"10.{n}.0.99"))
        assert r.status_code == 429, kind
        _expect_429(broker, r)
        # And so is every other spelling.
        for client_id in (*VARIANTS["fullwidth"], *VARIANTS["compatibility"]):
            _expect_429(broker, broker.exchange(client_id, _bad_secret(), via=broker.peer(f"10.{n}.0.98")))
        broker.mono.advance(WINDOW)
        assert broker.exchange("admin", broker.admin.client_secret).status_code == 200, kind


def test_failed_exchanges_are_also_limited_per_address(broker: Broker) -> None:
    attacker = broker.peer("192.0.2.66")
    for _ in range(LIMIT):
        r = broker.exchange("sri_" + secrets.token_hex(12), _bad_secret(), via=attacker)
        broker.expect_denied(r, 401)
    # A new client id every time does not help: the address is locked, even with a right credential.
    _expect_429(broker, broker.exchange("sri_" + secrets.token_hex(12), _bad_secret(), via=attacker))
    _expect_429(broker, broker.exchange("admin", broker.admin.client_secret, via=attacker))
    # Other addresses are fine.
    assert (
        broker.exchange("admin", broker.admin.client_secret, via=broker.peer("192.0.2.67")).status_code == 200
    )


def test_bad_bearer_tokens_are_limited_per_address(broker: Broker) -> None:
    attacker = broker.peer("198.51.100.23")
    for i in range(LIMIT):
        token = "srt_" + secrets.token_urlsafe(32) if i % 2 else "garbage-" + secrets.token_hex(8)
        broker.expect_denied(broker.whoami(token, via=attacker), 401)
    r = broker.whoami("srt_" + secrets.token_urlsafe(32), via=attacker)
    _expect_429(broker, r)
    # While locked, even a valid token is refused from that address (and not checked at all).
    _expect_429(broker, broker.whoami(broker.admin.token, via=attacker))
    _expect_429(broker, attacker.get("/v1/projects"))
    # The same token from another address works: the limit is per address, not per token.
    assert broker.whoami(broker.admin.token, via=broker.peer("198.51.100.24")).status_code == 200
    assert broker.whoami(broker.admin.token).status_code == 200
    broker.mono.advance(WINDOW)
    assert broker.whoami(broker.admin.token, via=attacker).status_code == 200


def test_lock_is_a_sliding_window(broker: Broker) -> None:
    peer = broker.peer("203.0.113.5")
    broker.expect_denied(broker.whoami("srt_" + secrets.token_urlsafe(32), via=peer), 401)
    broker.mono.advance(30)
    for _ in range(LIMIT - 1):
        broker.expect_denied(broker.whoami("srt_" + secrets.token_urlsafe(32), via=peer), 401)
    r = broker.whoami(broker.admin.token, via=peer)
    retry = _expect_429(broker, r)
    assert retry <= WINDOW - 30 + 1  # the oldest failure leaves the window first
    broker.mono.advance(WINDOW - 30)
    # The first failure has aged out; LIMIT - 1 remain, so one more failure locks again.
    assert broker.whoami(broker.admin.token, via=peer).status_code == 200
    broker.expect_denied(broker.whoami("srt_" + secrets.token_urlsafe(32), via=peer), 401)
    _expect_429(broker, broker.whoami(broker.admin.token, via=peer))


def test_successful_requests_do_not_count(broker: Broker) -> None:
    for _ in range(LIMIT * 3):
        assert broker.whoami(broker.admin.token).status_code == 200
    assert broker.exchange("admin", broker.admin.client_secret).status_code == 200
    # Forbidden (403) is not an authentication failure either.
    ro = broker.login([], name="noscope")
    for _ in range(LIMIT * 2):
        broker.expect_denied(broker.client.get("/v1/projects", headers=bearer(ro.token)), 403)
    assert broker.whoami(broker.admin.token).status_code == 200
