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


@pytest.fixture
def secret_statements(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the statements of broker.repositories.secrets that units run (through PgTx or SqliteTx)
    while the test runs, in order."""
    from broker.db import units
    from broker.repositories import secrets as repo

    names = {id(v): k for k, v in vars(repo).items() if isinstance(v, units.Statement)}
    ran: list[str] = []
    for cls in (units.PgTx, units.SqliteTx):
        for method in ("one", "all", "execute", "execute_many"):
            original = getattr(cls, method)

            def counting(self: Any, st: Any, values: Any, _original: Any = original) -> Any:
                if id(st) in names:
                    ran.append(names[id(st)])
                return _original(self, st, values)

            monkeypatch.setattr(cls, method, counting)
    return ran


def test_a_new_version_is_two_statements_one_round_trip_each(api: Api, secret_statements: list[str]) -> None:
    """Writing a new version of an existing secret finds the environment and the row in one statement,
    then moves the version and inserts it in one more: on PostgreSQL the row is read unlocked and that
    second statement carries the audit event too (test_pg_write counts the round trips); on SQLite the
    row is "locked" (the writer's one lock) and the move and the insert are two statements, where a
    statement is no round trip. The value reads back as the new version."""
    assert api.put("common", "TRIPS", random_value()).status_code == 200
    secret_statements.clear()
    value = random_value()
    r = api.put("common", "TRIPS", value)
    assert r.status_code == 200 and r.json()["version"] == 2, r.text
    if api.rt.engine.dialect.name == "postgresql":
        assert secret_statements == ["SECRET_AT", "ADVANCE_ADD_AND_RECORD"]
    else:
        assert secret_statements == ["LOCK_SECRET_AT", "ADVANCE", "ADD_VERSION"]
    assert api.value("common", "TRIPS") == value
    assert sorted(api.versions("common", "TRIPS")) == [1, 2]


def test_a_stale_advance_writes_nothing(api: Api) -> None:
    """The version insert only follows a bump that happened: from a version the secret is no longer at,
    `add_version` answers False and neither the secret row nor its versions change."""
    from sqlalchemy import select

    from broker.db.units import Tx
    from broker.models import secret_versions
    from broker.models import secrets as secrets_table
    from broker.repositories import secrets as repo

    assert api.put("common", "STALE", random_value()).status_code == 200
    assert api.put("common", "STALE", random_value()).status_code == 200
    (secret_id,) = api.query(select(secrets_table.c.id).where(secrets_table.c.name == "STALE"))[0]
    before = api.stored()

    async def unit(tx: Tx) -> bool:
        return await repo.add_version(
            tx,
            secret_id=secret_id,
            version=2,
            ciphertext=b"x",
            wrapped_dek=b"y",
            kek_id="k",
            author_id=None,
            now=api.rt.clock(),
            binding=b"z",
            advance=(1, True),
        )

    assert api.run(api.rt.units.run, unit) is False
    assert api.stored() == before
    rows = api.query(select(secret_versions.c.version).where(secret_versions.c.secret_id == secret_id))
    assert sorted(v for (v,) in rows) == [1, 2]
