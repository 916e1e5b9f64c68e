"""C21 across replicas: the failed-authentication budget lives in the database, so two brokers on one
database share it, and no number of other keys lifts an active lockout."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from broker.main import build_runtime, create_app
from broker.models import rate_limit_events
from tests.integration.auth.conftest import Broker, World, bearer

LIMIT = 3
WINDOW = 60

pytestmark = pytest.mark.broker_settings(auth_failure_limit=LIMIT, auth_failure_window=WINDOW)


@pytest.fixture
def replica(broker: Broker) -> Iterator[TestClient]:
    """A second broker process's app (its own runtime, engine and limiter) on the same database."""
    rt = build_runtime(broker.rt.settings)
    rt.clock = broker.clock
    rt.limiter.clock = broker.mono
    with TestClient(create_app(rt), client=("127.0.0.1", 50001)) as c:
        yield c


def _on(app: TestClient, addr: str) -> TestClient:
    c = TestClient(app.app, client=(addr, 1234))
    c.portal = app.portal
    return c


def _bad() -> str:
    return "srs_" + secrets.token_urlsafe(32)


def test_two_brokers_share_one_canonical_principal_budget(broker: Broker, replica: TestClient) -> None:
    # Spellings of one principal, spread over both brokers and over addresses: one counter.
    spellings = ["ADMIN", "\uff41\uff44\uff4d\uff49\uff4e", "Admin"]
    for i, client_id in enumerate(spellings):
        app = broker.client if i % 2 else replica
        r = _on(app, f"10.9.0.{i + 1}").post(
            "/v1/auth/token", json={"client_id": client_id, "client_secret": _bad()}
        )
        assert r.status_code == 401, r.text
    good = {"client_id": "admin", "client_secret": broker.admin.client_secret}
    for app in (broker.client, replica):
        r = _on(app, "10.9.0.99").post("/v1/auth/token", json=good)
        assert r.status_code == 429, r.text
        assert 1 <= int(r.headers["retry-after"]) <= WINDOW + 1
    broker.mono.advance(WINDOW)
    assert _on(replica, "10.9.0.99").post("/v1/auth/token", json=good).status_code == 200


def test_two_brokers_share_the_address_budget_and_both_refuse_the_hot_read(
    broker: Broker, replica: TestClient, world: World
) -> None:
    url = "/v1/projects/alpha/environments/common/secrets/DB_URL"
    attacker_a, attacker_b = _on(broker.client, "198.51.100.77"), _on(replica, "198.51.100.77")
    for _ in range(LIMIT - 1):
        assert attacker_a.get(url, headers=bearer("srt_" + secrets.token_urlsafe(32))).status_code == 401
    assert attacker_b.get(url, headers=bearer("srt_" + secrets.token_urlsafe(32))).status_code == 401
    # Locked on both at once: B counted the last failure, and A refuses a valid token on the one-secret
    # read before it has seen that failure itself (every read's statement asks the database).
    r = attacker_a.get(url, headers=broker.admin.headers)
    assert r.status_code == 429, r.text
    r = attacker_b.get(url, headers=broker.admin.headers)
    assert r.status_code == 429, r.text
    r = attacker_a.get(url, headers=bearer("srt_" + secrets.token_urlsafe(32)))
    assert r.status_code == 429, r.text
    for app in (broker.client, replica):
        assert _on(app, "198.51.100.78").get(url, headers=broker.admin.headers).status_code == 200
    broker.mono.advance(WINDOW)
    assert attacker_a.get(url, headers=broker.admin.headers).status_code == 200


def _rows(broker: Broker) -> int:
    async def go() -> int:
        async with broker.rt.engine.connect() as conn:
            return int((await conn.execute(select(func.count()).select_from(rate_limit_events))).scalar_one())

    return int(broker.run(go))


def test_pruning_removes_expired_events_only_and_a_spray_lifts_no_lockout(broker: Broker) -> None:
    limiter = broker.rt.limiter
    locked = [f"addr:192.0.2.{i}" for i in range(8)]
    before = _rows(broker)

    async def lock(keys: list[str]) -> None:
        for key in keys:
            for _ in range(LIMIT):
                await limiter.record([key])

    async def waits(keys: list[str]) -> list[int]:
        return [await limiter.retry_after([k]) for k in keys]

    broker.run(lock, locked[:1])
    broker.mono.advance(30)
    broker.run(lock, locked[1:])
    spray = [f"addr:203.0.113.{i}" for i in range(200)]

    async def spray_once() -> None:
        for key in spray:
            await limiter.record([key])

    broker.run(spray_once)
    assert all(broker.run(waits, locked))
    # Past the first lock's window: pruning drops its events and keeps every event still counting.
    broker.mono.advance(31)
    broker.run(spray_once)
    assert broker.run(waits, locked[:1]) == [0]
    assert all(broker.run(waits, locked[1:]))
    assert _rows(broker) == before + 7 * LIMIT + 2 * len(spray)
    assert broker.whoami(broker.admin.token, via=broker.peer("192.0.2.3")).status_code == 429
    assert broker.whoami(broker.admin.token, via=broker.peer("192.0.2.0")).status_code == 200
