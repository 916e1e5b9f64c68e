"""H46 lost update: concurrent writers against one secret through the real app.

On PostgreSQL the writers really race (READ COMMITTED, a pool of connections); on SQLite every
transaction takes the write lock up front (BEGIN IMMEDIATE), so the writes serialise.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from tests.integration.secrets.conftest import CLIENT_ADDR, Api, random_value

WRITERS = 50


def race(api: Api, url: str, bodies: list[dict[str, Any]]) -> list[tuple[int, dict[str, Any], str]]:
    """Send every body as a PUT at once; return (status, json, request id) per writer."""

    async def go() -> list[tuple[int, dict[str, Any], str]]:
        transport = httpx.ASGITransport(app=api.client.app, raise_app_exceptions=True, client=CLIENT_ADDR)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver", timeout=60) as ac:
            replies = await asyncio.gather(*(ac.put(url, json=b, headers=api.h) for b in bodies))
        return [(r.status_code, r.json(), r.headers["x-request-id"]) for r in replies]

    return list(api.run(go))


def test_fifty_writers_same_cas_exactly_one_wins_per_version(api: Api) -> None:
    url = api.url("common", "HOT")
    winners: dict[int, str] = {}
    request_ids: list[str] = []
    for cas in range(4):  # cas=0 creates, then three contested updates
        values = [random_value() for _ in range(WRITERS)]
        replies = race(api, url, [{"value": v, "cas": cas} for v in values])
        request_ids += [rid for _, _, rid in replies]
        ok = [(i, body) for i, (status, body, _) in enumerate(replies) if status == 200]
        statuses = sorted({status for status, _, _ in replies})
        assert len(ok) == 1, (cas, statuses)
        assert statuses == [200, 409], statuses
        i, body = ok[0]
        assert body["version"] == cas + 1
        winners[cas + 1] = values[i]
        for status, body, _ in replies:
            if status == 409:
                assert body["status"] == 409 and body["title"] == "Conflict"

    assert api.versions("common", "HOT") == [4, 3, 2, 1]
    for version, value in winners.items():
        assert api.get("common", "HOT", version=version).json()["value"] == value
    assert api.value("common", "HOT") == winners[4]
    # one stored row per version, no duplicates
    assert sorted(api.version_row("common", "HOT", v)["version"] for v in range(1, 5)) == [1, 2, 3, 4]
    # every request, winner or loser, left exactly one audit event
    by_request: dict[str, list[str]] = {}
    for row in api.all_audit():
        by_request.setdefault(row["request_id"], []).append(row["outcome"])
    assert len(set(request_ids)) == len(request_ids)
    assert all(len(by_request.get(rid, [])) == 1 for rid in request_ids)
    outcomes = [by_request[rid][0] for rid in request_ids]
    assert outcomes.count("ok") == 4 and outcomes.count("invalid") == 4 * (WRITERS - 1)


def test_fifty_unconditional_writers_all_succeed_with_a_gapless_history(api: Api) -> None:
    """Catalogue 65: a write without `cas` is never refused for a concurrent writer, on either database."""
    assert api.put("common", "BUSY", random_value()).status_code == 200
    values = [random_value() for _ in range(WRITERS)]
    replies = race(api, api.url("common", "BUSY"), [{"value": v} for v in values])
    assert [status for status, _, _ in replies] == [200] * WRITERS, [b for _, b, _ in replies]
    won = {body["version"]: values[i] for i, (_, body, _) in enumerate(replies)}
    assert sorted(won) == list(range(2, WRITERS + 2))
    assert api.versions("common", "BUSY") == list(range(WRITERS + 1, 0, -1))
    for version, value in won.items():
        assert api.get("common", "BUSY", version=version).json()["value"] == value


def test_fifty_unconditional_writers_creating_one_secret_all_succeed(api: Api) -> None:
    """Catalogue 65, the create race: the writers that lose the insert of the new row write a version."""
    values = [random_value() for _ in range(WRITERS)]
    replies = race(api, api.url("common", "FRESH"), [{"value": v} for v in values])
    assert [status for status, _, _ in replies] == [200] * WRITERS, [b for _, b, _ in replies]
    won = {body["version"]: values[i] for i, (_, body, _) in enumerate(replies)}
    assert sorted(won) == list(range(1, WRITERS + 1))
    assert api.versions("common", "FRESH") == list(range(WRITERS, 0, -1))
    assert api.value("common", "FRESH") == won[WRITERS]
