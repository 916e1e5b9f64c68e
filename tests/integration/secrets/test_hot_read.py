"""The one-secret read's hot path (edge -> services.secrets.read_current_fast) answers exactly as the
route does, audits exactly as the route does, and hands everything but the plain success to the route."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

import broker.services.secrets as svc
from broker.services.audit import chaining
from tests.integration.secrets.conftest import CLIENT_ADDR, Api, Reply, random_value


@pytest.fixture
def general_path(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records each one-secret read the hot path declined (then the route answered it)."""
    declined: list[str] = []
    real = svc.read_current_fast

    async def spy(*a: Any, **k: Any) -> Any:
        got = await real(*a, **k)
        if got is None:
            declined.append(k["name"])
        return got

    monkeypatch.setattr(svc, "read_current_fast", spy)
    return declined


def test_hot_read_answers_as_the_route_does(api: Api, general_path: list[str]) -> None:
    value = random_value() + ' é ✓ " \\ \n\t'
    assert api.put("common", "K", value).status_code == 200
    hot = api.safe("GET", api.url("common", "K"), headers=api.h)
    assert general_path == []  # the hot path answered
    # ?version= always takes the route: the same value through FastAPI and pydantic.
    routed = api.safe("GET", api.url("common", "K"), params={"version": 1}, headers=api.h)
    assert hot.status == routed.status == 200
    assert hot.json() == routed.json()
    assert hot.json()["value"] == value
    drop = {"x-request-id"}
    assert {k: v for k, v in hot.headers.items() if k not in drop} == {
        k: v for k, v in routed.headers.items() if k not in drop
    }
    assert hot.headers["cache-control"] == "no-store"
    # One event each, the same but for the route and request id, with the value's fingerprint.
    a, b = api.one_audit(hot.request_id), api.one_audit(routed.request_id)
    skip = {"id", "seq", "prev_hash", "hash", "occurred_at", "request_id", "route"}
    assert {k: v for k, v in a.items() if k not in skip} == {k: v for k, v in b.items() if k not in skip}
    assert (a["action"], a["outcome"], a["status"], a["version"]) == ("secret.read", "ok", 200, 1)
    assert a["fingerprints"] and "hmac-sha256:" in a["fingerprints"] and value not in str(a)


def test_reveal_header_is_audited_as_a_reveal(api: Api, general_path: list[str]) -> None:
    assert api.put("common", "K", random_value()).status_code == 200
    r = api.safe("GET", api.url("common", "K"), headers={**api.h, "X-Strongroom-Reveal": "1"})
    assert r.status == 200 and general_path == []
    assert api.one_audit(r.request_id)["action"] == "secret.reveal"


def test_everything_but_the_plain_success_takes_the_route(api: Api, general_path: list[str]) -> None:
    """Denied, missing, deleted, use-limited: the route answers (and audits) them, as before."""
    assert api.put("common", "K", random_value()).status_code == 200
    assert api.put("common", "GONE", random_value()).status_code == 200
    assert api.client.delete(api.url("common", "GONE"), headers=api.h).status_code == 204
    other = api.token_for([{"project": "microblog", "environments": "production", "actions": ["read"]}])
    limited = api.client.post("/v1/tokens", json={"num_uses": 2}, headers=api.h).json()["token"]
    cases: list[tuple[str, dict[str, str], int]] = [
        ("K", other, 403),  # the token does not reach `common`
        ("MISSING", api.h, 404),
        ("GONE", api.h, 404),
        ("K", {"Authorization": f"Bearer {limited}"}, 200),  # use-limited: the route counts the use
        ("K", {"Authorization": f"Bearer {limited}"}, 200),
        ("K", {"Authorization": f"Bearer {limited}"}, 401),  # no uses left
        ("K", {"Authorization": "Bearer srt_" + "A" * 43}, 401),
    ]
    for name, headers, status in cases:
        general_path.clear()
        r = api.safe("GET", api.url("common", name), headers=headers)
        assert r.status == status, (name, r.text)
        assert general_path == [name], name
        assert api.one_audit(r.request_id)["status"] == status


def test_revocation_takes_effect_on_the_next_hot_read(api: Api, general_path: list[str]) -> None:
    assert api.put("common", "K", random_value()).status_code == 200
    child = api.client.post("/v1/tokens", json={}, headers=api.h).json()
    h = {"Authorization": f"Bearer {child['token']}"}
    assert api.safe("GET", api.url("common", "K"), headers=h).status == 200
    assert general_path == []
    r = api.client.post("/v1/tokens/revoke", json={"accessor": child["accessor"]}, headers=api.h)
    assert r.status_code == 204, r.text
    assert api.safe("GET", api.url("common", "K"), headers=h).status == 401


def test_concurrent_hot_reads_each_commit_one_linked_event(api: Api, general_path: list[str]) -> None:
    """Many reads at once (SQLite: committed in groups by the single writer); each has its event and
    the hash chain still verifies."""
    values = {f"K{i}": random_value() for i in range(5)}
    for name, value in values.items():
        assert api.put("common", name, value).status_code == 200
    names = [f"K{i % 5}" for i in range(60)]

    async def go() -> list[Reply]:
        transport = httpx.ASGITransport(app=api.client.app, client=CLIENT_ADDR)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as ac:
            rs = await asyncio.gather(*(ac.get(api.url("common", n), headers=api.h) for n in names))
        return [Reply(r.status_code, dict(r.headers), r.content) for r in rs]

    replies = api.run(go)
    assert general_path == []
    for name, r in zip(names, replies, strict=True):
        assert r.status == 200 and r.json()["value"] == values[name]
        (event,) = api.audit_for(r.request_id)
        assert (event["secret_name"], event["outcome"]) == (name, "ok")
    report = api.run(chaining.verify_database, api.rt)  # links what is pending first (PostgreSQL)
    assert report.ok, report
    assert len({e["seq"] for e in api.all_audit()}) == len(api.all_audit())
