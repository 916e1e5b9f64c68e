"""The optimistic PostgreSQL write (issue 13): a new version of an existing secret in two round trips,
the row read unlocked and one statement that moves the version, inserts it and inserts its audit event.

Real PostgreSQL throughout (the db_url fixture's cluster). Races are forced, never timed: a hook on the
row read lets another writer commit between a writer's read and its statement.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any

import asyncpg
import pytest
from sqlalchemy import select

from broker.db import engine as db_engine
from broker.db.units import IntegrityViolation, Units
from broker.domain.request import Actor, RequestContext
from broker.errors import Conflict, KeyUnavailable
from broker.models import audit_events
from broker.repositories import secrets as repo
from broker.services import auth
from broker.services.audit import chaining
from broker.services.runtime import Runtime
from broker.services.stores import database
from broker.services.stores.base import SecretMeta
from tests.integration.secrets.conftest import Api, random_value

pytestmark = pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)

STORE = database.DatabaseStore()
KEY = ("microblog", "common")


def _ctx(request_id: str, name: str) -> RequestContext:
    ctx = RequestContext(
        request_id,
        "PUT",
        "/v1/projects/{project}/environments/{environment}/secrets/{name}",
        "127.0.0.1",
        "pytest",
    )
    ctx.about("secret.write", project=KEY[0], environment=KEY[1], secret_name=name)
    return ctx


def _actor(api: Api) -> Actor:
    ctx = RequestContext("login", "GET", "/", "127.0.0.1", None)
    actor: Actor = api.run(auth.authenticate, api.rt, ctx, api.h["Authorization"])
    return actor


async def _write(
    api: Api,
    actor: Actor,
    ctx: RequestContext,
    name: str,
    value: str,
    cas: int | None = None,
    *,
    rt: Runtime | None = None,
) -> SecretMeta:
    return await STORE.write(
        rt or api.rt,
        ctx,
        actor,
        project=KEY[0],
        environment=KEY[1],
        name=name,
        value=value,
        sensitive=True,
        cas=cas,
    )


def _events(api: Api, name: str) -> list[dict[str, Any]]:
    """Every write event about `name`, oldest first."""

    async def go() -> list[dict[str, Any]]:
        async with api.rt.engine.connect() as conn:
            rows = await conn.execute(
                select(audit_events)
                .where(audit_events.c.secret_name == name, audit_events.c.action == "secret.write")
                .order_by(audit_events.c.id)
            )
            return [dict(r._mapping) for r in rows.all()]

    return list(api.run(go))


@pytest.fixture
def round_trips(monkeypatch: pytest.MonkeyPatch) -> tuple[list[str], list[bool]]:
    """(the SQL of every call the units' own asyncpg connections make while `on[0]` is set, `on`): each
    call is one round trip, BEGIN and COMMIT included (asyncpg sends them through `execute`)."""
    ours: set[int] = set()
    sent: list[str] = []
    on = [False]
    original = db_engine.PgConnections.connection

    @contextlib.asynccontextmanager
    async def tagged(self: db_engine.PgConnections) -> AsyncIterator[Any]:
        async with original(self) as conn:
            ours.add(id(conn))
            yield conn

    monkeypatch.setattr(db_engine.PgConnections, "connection", tagged)
    for method in ("execute", "executemany", "fetch", "fetchrow", "fetchval"):
        real = getattr(asyncpg.connection.Connection, method)

        def counting(self: Any, query: str, *args: Any, _real: Any = real, **kw: Any) -> Any:
            if on[0] and id(self) in ours:
                sent.append(query)
            return _real(self, query, *args, **kw)

        monkeypatch.setattr(asyncpg.connection.Connection, method, counting)
    return sent, on


def test_a_new_version_is_two_round_trips_with_its_event(
    api: Api, round_trips: tuple[list[str], list[bool]]
) -> None:
    """A new version of an existing secret: two round trips on PostgreSQL (no BEGIN, no COMMIT, no
    separate event insert), the version readable and its one event written; the same write through the
    row lock (forced) costs five."""
    sent, on = round_trips
    actor = _actor(api)
    api.run(_write, api, actor, _ctx("first", "TRIPS2"), "TRIPS2", random_value())
    value = random_value()
    on[0] = True
    meta = api.run(_write, api, actor, _ctx("second", "TRIPS2"), "TRIPS2", value)
    on[0] = False
    assert meta.version == 2
    assert len(sent) == 2, sent
    assert sent[0].startswith("SELECT") and "FOR UPDATE" not in sent[0]
    assert sent[1].startswith("WITH bumped AS") and "INSERT INTO audit_events" in sent[1]
    assert api.value("common", "TRIPS2") == value
    assert [e["request_id"] for e in _events(api, "TRIPS2")] == ["first", "second"]

    sent.clear()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Units, "one_statement", property(lambda self: False))
        on[0] = True
        assert api.run(_write, api, actor, _ctx("locked", "TRIPS2"), "TRIPS2", random_value()).version == 3
        on[0] = False
    assert [q.split()[0] for q in sent] == ["BEGIN;", "SELECT", "WITH", "INSERT", "COMMIT;"], sent


def test_the_event_row_is_the_one_the_locking_write_writes(api: Api) -> None:
    """The same write through both paths leaves event rows equal column by column, apart from what
    differs between two requests (id, time, request id, the version and the fingerprint's version
    field); the chainer links both and the chain verifies."""
    actor = _actor(api)
    value = random_value()
    api.run(_write, api, actor, _ctx("create", "SAME"), "SAME", value)
    api.run(_write, api, actor, _ctx("optimistic", "SAME"), "SAME", value)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Units, "one_statement", property(lambda self: False))
        api.run(_write, api, actor, _ctx("locked", "SAME"), "SAME", value)
    api.run(chaining.chain, api.rt)
    _, fast, slow = _events(api, "SAME")
    assert (fast["request_id"], slow["request_id"]) == ("optimistic", "locked")
    assert (fast["version"], slow["version"]) == (2, 3)
    differ = {"id", "occurred_at", "request_id", "version", "fingerprints", "seq", "prev_hash", "hash"}
    assert {k: v for k, v in fast.items() if k not in differ} == {
        k: v for k, v in slow.items() if k not in differ
    }
    fast_seen, slow_seen = json.loads(fast["fingerprints"]), json.loads(slow["fingerprints"])
    assert [s["version"] for s in fast_seen + slow_seen] == [2, 3]
    assert [{**s, "version": None} for s in fast_seen] == [{**s, "version": None} for s in slow_seen]
    assert fast["seq"] is not None and slow["seq"] == fast["seq"] + 1
    report = api.run(chaining.verify_database, api.rt)
    assert report.problem is None and report.bad_seq is None, report


def _interloping(
    api: Api,
    actor: Actor,
    monkeypatch: pytest.MonkeyPatch,
    *,
    times: int,
    then: Callable[[], None] = lambda: None,
) -> tuple[list[bool], list[SecretMeta]]:
    """Make the first `times` unlocked row reads of the outer write each let another writer (request
    `interloper-<n>`) commit a new version before the outer write's statement, calling `then` after each:
    (the `lock` of every read of the outer write, the interlopers' results). The interloper runs on units
    of its own, as another broker process would (this process's writers to one key take turns)."""
    reads: list[bool] = []
    interlopers: list[SecretMeta] = []
    real: Callable[..., Awaitable[Any]] = repo.lock_secret_at
    inside = [False]

    async def hooked(tx: Any, project: str, environment: str, name: str, *, lock: bool = True) -> Any:
        found = await real(tx, project, environment, name, lock=lock)
        if inside[0]:
            return found
        reads.append(lock)
        if not lock and len(interlopers) < times:
            inside[0] = True
            other = dataclasses.replace(api.rt, units=Units(api.rt.engine))
            try:
                n = len(interlopers) + 1
                ctx = _ctx(f"interloper-{n}", name)
                interlopers.append(await _write(api, actor, ctx, name, random_value(), rt=other))
            finally:
                inside[0] = False
                await other.units.close()
            then()
        return found

    monkeypatch.setattr(repo, "lock_secret_at", hooked)
    return reads, interlopers


def test_a_stale_read_writes_nothing_and_the_write_then_takes_the_next_version(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another writer commits between the read and the statement: the statement writes no version and
    no event, the write reads again and commits version 3 with one event holding one fingerprint."""
    actor = _actor(api)
    api.run(_write, api, actor, _ctx("create", "RACED"), "RACED", random_value())
    reads, interlopers = _interloping(api, actor, monkeypatch, times=1)
    events_before = api.rt.audit.counters["events"]
    value = random_value()
    ctx = _ctx("outer", "RACED")
    meta = api.run(_write, api, actor, ctx, "RACED", value)
    assert api.rt.audit.counters["events"] - events_before == 2  # the interloper's and the outer one
    assert [m.version for m in interlopers] == [2]
    assert meta.version == 3 and reads == [False, False]
    assert sorted(api.versions("common", "RACED")) == [1, 2, 3]
    assert api.value("common", "RACED") == value
    events = _events(api, "RACED")
    assert [(e["request_id"], e["version"]) for e in events] == [
        ("create", 1),
        ("interloper-1", 2),
        ("outer", 3),
    ]
    assert len(ctx.values) == 1 and ctx.values[0].version == 3 and ctx.audited


def test_a_clock_anomaly_noted_by_a_write_that_lost_its_race_is_still_recorded(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The audit service notes the wall clock stepping back while the write shapes its event: that
    anomaly event goes in the write's one statement whatever happens, so a lost race still records it
    (once), while the write's own event waits for the attempt that commits the version."""
    actor = _actor(api)
    api.run(_write, api, actor, _ctx("create", "STEPPED"), "STEPPED", random_value())
    real = api.rt.clock

    def step_back() -> None:
        api.rt.clock = lambda: real() - timedelta(minutes=10)

    _interloping(api, actor, monkeypatch, times=1, then=step_back)
    events_before = api.rt.audit.counters["events"]
    try:
        meta = api.run(_write, api, actor, _ctx("outer", "STEPPED"), "STEPPED", random_value())
    finally:
        api.rt.clock = real
    assert api.rt.audit.counters["events"] - events_before == 3  # interloper, anomaly, outer
    assert meta.version == 3
    anomalies = [e for e in api.all_audit() if e["action"] == "audit.clock_anomaly"]
    assert len(anomalies) == 1 and anomalies[0]["actor_type"] == "system", anomalies
    assert [(e["request_id"], e["version"]) for e in _events(api, "STEPPED")][1:] == [
        ("interloper-1", 2),
        ("outer", 3),
    ]


def test_a_key_that_keeps_moving_is_written_under_the_row_lock(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every optimistic attempt loses: after OPTIMISTIC_TRIES the write takes the row lock and succeeds
    (a write without cas serialises instead of failing), with one event."""
    actor = _actor(api)
    api.run(_write, api, actor, _ctx("create", "HOTKEY"), "HOTKEY", random_value())
    tries = database.OPTIMISTIC_TRIES
    reads, interlopers = _interloping(api, actor, monkeypatch, times=tries)
    meta = api.run(_write, api, actor, _ctx("outer", "HOTKEY"), "HOTKEY", random_value())
    assert reads == [False] * tries + [True]
    assert [m.version for m in interlopers] == list(range(2, tries + 2))
    assert meta.version == tries + 2
    assert sorted(api.versions("common", "HOTKEY")) == list(range(1, tries + 3))
    outer = [e for e in _events(api, "HOTKEY") if e["request_id"] == "outer"]
    assert [e["version"] for e in outer] == [tries + 2]


def test_a_cas_write_that_loses_the_race_is_a_conflict_and_records_nothing(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With cas, a lost race is the 409 it always was: no version, no event, the request not marked
    audited (the route then records its refusal)."""
    actor = _actor(api)
    api.run(_write, api, actor, _ctx("create", "CASRACE"), "CASRACE", random_value())
    _interloping(api, actor, monkeypatch, times=1)
    ctx = _ctx("outer", "CASRACE")
    with pytest.raises(Conflict, match="CASRACE: cas 1 is stale"):
        api.run(_write, api, actor, ctx, "CASRACE", random_value(), 1)
    assert sorted(api.versions("common", "CASRACE")) == [1, 2]
    assert [e["request_id"] for e in _events(api, "CASRACE")] == ["create", "interloper-1"]
    assert not ctx.audited and ctx.values == []


def test_twenty_concurrent_writers_all_succeed_with_contiguous_versions(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Twenty writes without cas gathered on one key: all succeed, versions 2..21 each once, every value
    reads back at its version (no lost update), one event per write; the chain verifies. Writers in one
    process take turns: each reads the row once, unlocked (none lost a race or took the lock)."""
    actor = _actor(api)
    api.run(_write, api, actor, _ctx("create", "CROWD"), "CROWD", random_value())
    reads: list[bool] = []
    real: Callable[..., Awaitable[Any]] = repo.lock_secret_at

    async def noting(tx: Any, project: str, environment: str, name: str, *, lock: bool = True) -> Any:
        reads.append(lock)
        return await real(tx, project, environment, name, lock=lock)

    monkeypatch.setattr(repo, "lock_secret_at", noting)
    values = [random_value() for _ in range(20)]

    async def crowd() -> list[SecretMeta]:
        return list(
            await asyncio.gather(
                *(_write(api, actor, _ctx(f"w{i}", "CROWD"), "CROWD", v) for i, v in enumerate(values))
            )
        )

    metas = api.run(crowd)
    assert reads == [False] * 20
    assert api.rt.units._turns == {}  # every turn given back, no key kept
    assert sorted(m.version for m in metas) == list(range(2, 22))
    for meta, value in zip(metas, values, strict=True):
        assert api.get("common", "CROWD", version=meta.version).json()["value"] == value
    events = _events(api, "CROWD")[1:]
    assert sorted((e["request_id"], e["version"]) for e in events) == sorted(
        (f"w{i}", m.version) for i, m in enumerate(metas)
    )
    report = api.run(chaining.verify_database, api.rt)
    assert report.problem is None and report.events >= 21, report


def test_twenty_concurrent_cas_writers_exactly_one_wins(api: Api) -> None:
    """Twenty writes with the same cas gathered on one key: exactly one succeeds, the others get 409 and
    none of them wrote a version or an event."""
    actor = _actor(api)
    api.run(_write, api, actor, _ctx("create", "CASCROWD"), "CASCROWD", random_value())

    async def crowd() -> list[SecretMeta | BaseException]:
        return list(
            await asyncio.gather(
                *(
                    _write(api, actor, _ctx(f"w{i}", "CASCROWD"), "CASCROWD", random_value(), 1)
                    for i in range(20)
                ),
                return_exceptions=True,
            )
        )

    results = api.run(crowd)
    won = [r for r in results if isinstance(r, SecretMeta)]
    assert [m.version for m in won] == [2]
    assert all(isinstance(r, Conflict) for r in results if not isinstance(r, SecretMeta)), results
    assert sorted(api.versions("common", "CASCROWD")) == [1, 2]
    assert len(_events(api, "CASCROWD")) == 2


def _refuse_seal(monkeypatch: pytest.MonkeyPatch, api: Api) -> None:
    # Forced: the keyring's seal raises KeyUnavailable, as for a KEK this process lacks.
    def refuse(self: Any, plaintext: bytes, aad: bytes) -> Any:
        raise KeyUnavailable("kek-gone")

    monkeypatch.setattr(type(api.rt.keys.keyring), "seal", refuse)


@pytest.mark.parametrize("optimistic", [True, False], ids=["optimistic", "locked"])
def test_a_write_whose_sealing_fails_records_the_failure_once(
    api: Api, monkeypatch: pytest.MonkeyPatch, optimistic: bool
) -> None:
    """When sealing fails nothing is written and the request's one event is the failure, without the
    unwritten value's fingerprint and without a version it never wrote, on either path."""
    assert api.put("common", "NOKEY", random_value()).status_code == 200
    if not optimistic:
        monkeypatch.setattr(Units, "one_statement", property(lambda self: False))
    _refuse_seal(monkeypatch, api)
    before = api.stored()
    reply = api.safe("PUT", api.url("common", "NOKEY"), json={"value": random_value()}, headers=api.h)
    assert reply.status == 503, reply.text
    assert api.stored() == before
    events = api.audit_for(reply.request_id)
    assert [(e["action"], e["outcome"], e["fingerprints"], e["version"]) for e in events] == [
        ("secret.write", "error", None, None)
    ], events


@pytest.mark.parametrize("optimistic", [True, False], ids=["optimistic", "locked"])
def test_a_clock_anomaly_survives_a_write_whose_sealing_fails(
    api: Api, monkeypatch: pytest.MonkeyPatch, optimistic: bool
) -> None:
    """The clock has stepped back and the write's sealing fails: the anomaly is still recorded (the
    optimistic write seals before it shapes its events, as the locking one does), and the event counter
    matches the rows written."""
    assert api.put("common", "STEPFAIL", random_value()).status_code == 200
    if not optimistic:
        monkeypatch.setattr(Units, "one_statement", property(lambda self: False))
    _refuse_seal(monkeypatch, api)
    rows_before, counted_before = len(api.all_audit()), api.rt.audit.counters["events"]
    real = api.rt.clock
    api.rt.clock = lambda: real() - timedelta(minutes=10)
    try:
        reply = api.safe("PUT", api.url("common", "STEPFAIL"), json={"value": random_value()}, headers=api.h)
    finally:
        api.rt.clock = real
    assert reply.status == 503, reply.text
    rows = api.all_audit()[rows_before:]
    assert sorted((e["action"], e["outcome"]) for e in rows) == [
        ("audit.clock_anomaly", "error"),
        ("secret.write", "error"),
    ]
    assert api.rt.audit.counters["events"] - counted_before == len(rows)


def test_the_refusal_of_a_cas_write_that_lost_its_race_claims_no_version(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The optimistic attempt had taken version cas+1 for its event; the race lost, the route's 409 event
    must not claim it (the version the other writer committed)."""
    actor = _actor(api)
    assert api.put("common", "CASV", random_value()).status_code == 200
    _interloping(api, actor, monkeypatch, times=1)
    reply = api.safe(
        "PUT", api.url("common", "CASV"), json={"value": random_value(), "cas": 1}, headers=api.h
    )
    assert reply.status == 409, reply.text
    events = api.audit_for(reply.request_id)
    assert [(e["action"], e["outcome"], e["version"]) for e in events] == [("secret.write", "invalid", None)]
    assert sorted(api.versions("common", "CASV")) == [1, 2]


def test_a_constraint_refusing_the_optimistic_statement_falls_back_to_the_locking_write(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A constraint refusing the optimistic statement (forced here: it takes state no ordinary traffic
    makes, such as a version row ahead of current_version) is handed to the locking write, which retries
    it and answers 409 if it persists, instead of escaping as a 500."""
    actor = _actor(api)
    api.run(_write, api, actor, _ctx("create", "REFUSED"), "REFUSED", random_value())

    async def refused(self: Units, unit: Any) -> Any:
        raise IntegrityViolation("UniqueViolationError")

    monkeypatch.setattr(Units, "run_one_statement", refused)
    meta = api.run(_write, api, actor, _ctx("outer", "REFUSED"), "REFUSED", random_value())
    assert meta.version == 2
    assert [(e["request_id"], e["version"]) for e in _events(api, "REFUSED")] == [("create", 1), ("outer", 2)]
