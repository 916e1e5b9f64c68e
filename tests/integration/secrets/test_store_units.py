"""The database store's use cases run as units of work (prepared statements on the raw driver), each
with its audit event in the same unit: no SQLAlchemy connection is opened on their request paths."""

from __future__ import annotations

import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from broker.services import secrets, stores
from tests.integration.secrets.conftest import Api, random_value

ACTIONS = {
    "list": "secret.list",
    "history": "secret.history",
    "delete": "secret.delete",
    "undelete": "secret.undelete",
    "rollback": "secret.rollback",
    "destroy": "secret.destroy",
    "left alone": "secret.generate",
    "rotate": "secret.generate",
    "resolve": "secret.resolve",
}


SERVICE = (Path(secrets.__file__), *Path(stores.__file__).parent.glob("*.py"))


@pytest.fixture
def no_engine(api: Api, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every SQLAlchemy transaction or connection opened from the secrets use cases or the stores while
    the test runs (the audit chainer's own background connections on PostgreSQL are not theirs)."""
    opened: list[str] = []
    service = {str(p) for p in SERVICE}
    begin, connect = AsyncEngine.begin, AsyncEngine.connect

    def note(how: str) -> None:
        # A coroutine runs on the stack of the coroutines awaiting it, so a use case that opens a
        # connection is on the stack when it does.
        frames = [f for f in traceback.extract_stack() if f.filename in service]
        if frames:
            opened.append(f"{how} from {Path(frames[-1].filename).name}:{frames[-1].lineno}")

    def counting_begin(self: AsyncEngine) -> Any:
        note("begin")
        return begin(self)

    def counting_connect(self: AsyncEngine) -> Any:
        note("connect")
        return connect(self)

    monkeypatch.setattr(AsyncEngine, "begin", counting_begin)
    monkeypatch.setattr(AsyncEngine, "connect", counting_connect)
    yield opened


def test_each_use_case_is_one_unit_with_its_event(api: Api, no_engine: list[str]) -> None:
    """list, history, delete, undelete, destroy, rollback, generate (left alone, rotated) and resolve:
    the right answer, one event each, and not one SQLAlchemy connection."""
    assert api.put("common", "UNIT_KEY", random_value()).status_code == 200
    assert api.put("common", "UNIT_KEY", random_value()).status_code == 200
    base = api.url("common", "UNIT_KEY")
    replies = {
        "list": api.client.get(api.url("common"), headers=api.h),
        "history": api.client.get(f"{base}/versions", headers=api.h),
        "delete": api.client.delete(base, headers=api.h),
        "undelete": api.client.post(f"{base}/undelete", headers=api.h),
        "rollback": api.client.post(f"{base}/rollback", json={"version": 1}, headers=api.h),
        "destroy": api.client.post(f"{base}/versions/1/destroy", headers=api.h),
        "left alone": api.client.post(f"{base}/generate", json={}, headers=api.h),
        "rotate": api.client.post(f"{base}/generate", json={"rotate": True}, headers=api.h),
        "resolve": api.client.get(f"{api.env_url('common')}/resolved", headers=api.h),
    }
    statuses = {what: r.status_code for what, r in replies.items()}
    assert statuses == {
        "list": 200,
        "history": 200,
        "delete": 204,
        "undelete": 200,
        "rollback": 200,
        "destroy": 204,
        "left alone": 200,
        "rotate": 200,
        "resolve": 200,
    }
    assert [v["version"] for v in replies["history"].json()["versions"]] == [2, 1]
    assert replies["left alone"].json()["generated"] is False
    assert replies["rotate"].json()["rotated"] is True
    for what, r in replies.items():
        events = api.audit_for(r.headers["x-request-id"])
        assert len(events) == 1, (what, events)
        assert (events[0]["action"], events[0]["outcome"]) == (ACTIONS[what], "ok"), what
    assert no_engine == []


def test_a_refused_change_writes_nothing_and_is_audited_once(api: Api) -> None:
    """A delete of a deleted secret and a destroy of a missing version: 404, nothing changed, one event."""
    assert api.put("common", "GONE", random_value()).status_code == 200
    assert api.client.delete(api.url("common", "GONE"), headers=api.h).status_code == 204
    before = api.stored()
    again = api.client.delete(api.url("common", "GONE"), headers=api.h)
    missing = api.client.post(f"{api.url('common', 'GONE')}/versions/9/destroy", headers=api.h)
    assert (again.status_code, missing.status_code) == (404, 404)
    assert "already deleted" in again.json()["detail"]
    assert "no version 9" in missing.json()["detail"]
    assert api.stored() == before
    for r in (again, missing):
        events = api.audit_for(r.headers["x-request-id"])
        assert len(events) == 1 and events[0]["outcome"] != "ok", events
