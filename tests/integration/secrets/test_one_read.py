"""GET one secret is an ordinary route: FastAPI's router dispatches it, and its service runs the token
look-up, the access decision, the secret row, the binding check, decryption and the audit event in
one unit of work, for the current version and for `?version=`; every case (denied, missing, deleted,
use-limited, revoked) is answered and audited on this one path."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request

from broker.api import deps
from broker.db.units import Units
from broker.services.audit import chaining
from tests.integration.secrets.conftest import CLIENT_ADDR, Api, Reply, random_value


@pytest.fixture
def units(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Counts the units of work run (one entry per unit, named by the code that defined it)."""
    ran: list[str] = []
    real = Units.run

    async def spy(self: Units, unit: Any, **kw: Any) -> Any:
        ran.append(unit.__qualname__)
        return await real(self, unit, **kw)

    monkeypatch.setattr(Units, "run", spy)
    return ran


def _fastapi(api: Api) -> FastAPI:
    app = api.client.app
    while not isinstance(app, FastAPI):
        app = app.app  # type: ignore[attr-defined]
    return app


def test_current_and_pinned_reads_answer_alike_in_one_unit_each(api: Api, units: list[str]) -> None:
    value = random_value() + ' é ✓ " \\ \n\t'
    assert api.put("common", "K", value).status_code == 200
    units.clear()
    current = api.safe("GET", api.url("common", "K"), headers=api.h)
    pinned = api.safe("GET", api.url("common", "K"), params={"version": 1}, headers=api.h)
    assert units == ["read_secret.<locals>.unit"] * 2  # token, decision, row, value and event: one unit
    assert current.status == pinned.status == 200
    assert current.json() == pinned.json()
    body = current.json()
    assert body["value"] == value and body["version"] == 1 and body["environment"] == "common"
    assert body["created_at"].endswith("Z") and set(body) == {
        "name",
        "value",
        "version",
        "sensitive",
        "environment",
        "created_at",
    }
    assert current.headers["cache-control"] == "no-store"
    assert current.headers["content-type"] == "application/json"
    a, b = api.one_audit(current.request_id), api.one_audit(pinned.request_id)
    skip = {"id", "seq", "prev_hash", "hash", "occurred_at", "request_id", "route"}
    assert {k: v for k, v in a.items() if k not in skip} == {k: v for k, v in b.items() if k not in skip}
    assert (a["action"], a["outcome"], a["status"], a["version"]) == ("secret.read", "ok", 200, 1)
    assert a["fingerprints"] and "hmac-sha256:" in a["fingerprints"] and value not in str(a)


def test_an_older_version_is_served_by_version(api: Api) -> None:
    first, second = random_value(), random_value()
    assert api.put("common", "K", first).status_code == 200
    assert api.put("common", "K", second).status_code == 200
    assert api.get("common", "K").json()["value"] == second
    old = api.get("common", "K", version=1)
    assert old.status_code == 200 and old.json()["value"] == first and old.json()["version"] == 1
    assert api.get("common", "K", version=3).status_code == 404


def test_a_dependency_added_to_the_app_applies_to_the_read_route(api: Api) -> None:
    """Dispatch goes through the router: an override of a dependency the route declares runs for it,
    and the route the router matched is the one recorded on the request."""
    assert api.put("common", "K", random_value()).status_code == 200
    app = _fastapi(api)
    seen: list[str] = []
    real = deps.get_ctx

    async def watched(request: Request) -> Any:
        seen.append(request.scope["route"].path)
        return await real(request)

    app.dependency_overrides[deps.get_ctx] = watched
    try:
        r = api.safe("GET", api.url("common", "K"), headers=api.h)
    finally:
        app.dependency_overrides.clear()
    assert r.status == 200
    assert seen == ["/v1/projects/{project}/environments/{environment}/secrets/{name}"]


def test_reveal_header_is_audited_as_a_reveal(api: Api) -> None:
    assert api.put("common", "K", random_value()).status_code == 200
    r = api.safe("GET", api.url("common", "K"), headers={**api.h, "X-Strongroom-Reveal": "1"})
    assert r.status == 200
    assert api.one_audit(r.request_id)["action"] == "secret.reveal"


def test_every_outcome_is_answered_and_audited_on_the_one_path(api: Api, units: list[str]) -> None:
    """Denied, missing, deleted, use-limited, unknown: the same unit answers, and the edge records the
    failures' events."""
    assert api.put("common", "K", random_value()).status_code == 200
    assert api.put("common", "GONE", random_value()).status_code == 200
    assert api.client.delete(api.url("common", "GONE"), headers=api.h).status_code == 204
    other = api.token_for([{"project": "microblog", "environments": "production", "actions": ["read"]}])
    limited = api.client.post("/v1/tokens", json={"num_uses": 2}, headers=api.h).json()["token"]
    cases: list[tuple[str, dict[str, str], int, str]] = [
        ("K", other, 403, "denied"),  # the token does not reach `common`
        ("MISSING", api.h, 404, "invalid"),
        ("GONE", api.h, 404, "invalid"),
        ("K", {"Authorization": f"Bearer {limited}"}, 200, "ok"),  # use-limited: each read spends one use
        ("K", {"Authorization": f"Bearer {limited}"}, 200, "ok"),
        ("K", {"Authorization": f"Bearer {limited}"}, 401, "denied"),  # no uses left
        ("K", {"Authorization": "Bearer srt_" + "A" * 43}, 401, "denied"),
        ("K", {}, 401, "denied"),
    ]
    for name, headers, status, outcome in cases:
        units.clear()
        r = api.safe("GET", api.url("common", name), headers=headers)
        assert r.status == status, (name, r.text)
        assert units == ["read_secret.<locals>.unit"], name
        event = api.one_audit(r.request_id)
        assert (event["status"], event["outcome"], event["action"]) == (status, outcome, "secret.read")


def test_revocation_takes_effect_on_the_next_read(api: Api) -> None:
    assert api.put("common", "K", random_value()).status_code == 200
    child = api.client.post("/v1/tokens", json={}, headers=api.h).json()
    h = {"Authorization": f"Bearer {child['token']}"}
    assert api.safe("GET", api.url("common", "K"), headers=h).status == 200
    r = api.client.post("/v1/tokens/revoke", json={"accessor": child["accessor"]}, headers=api.h)
    assert r.status_code == 204, r.text
    assert api.safe("GET", api.url("common", "K"), headers=h).status == 401


def test_concurrent_reads_each_commit_one_linked_event(api: Api) -> None:
    """Many reads at once (SQLite: committed in groups by the single writer, a refused one rolled back
    alone); each has its event and the hash chain still verifies."""
    values = {f"K{i}": random_value() for i in range(5)}
    for name, value in values.items():
        assert api.put("common", name, value).status_code == 200
    names = [f"K{i % 5}" if i % 7 else "MISSING" for i in range(60)]

    async def go() -> list[Reply]:
        transport = httpx.ASGITransport(app=api.client.app, client=CLIENT_ADDR)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as ac:
            rs = await asyncio.gather(*(ac.get(api.url("common", n), headers=api.h) for n in names))
        return [Reply(r.status_code, dict(r.headers), r.content) for r in rs]

    replies = api.run(go)
    for name, r in zip(names, replies, strict=True):
        if name == "MISSING":
            assert r.status == 404
            continue
        assert r.status == 200 and r.json()["value"] == values[name]
        (event,) = api.audit_for(r.request_id)
        assert (event["secret_name"], event["outcome"]) == (name, "ok")
    report = api.run(chaining.verify_database, api.rt)  # links what is pending first (PostgreSQL)
    assert report.ok, report
    assert len({e["seq"] for e in api.all_audit()}) == len(api.all_audit())
