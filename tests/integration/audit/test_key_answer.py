"""Catalogue 60, the complete key answer (journey 5: "who read DATABASE_URL?"): key K read by every route
(single read on the hot path, reveal, resolve as `strongroom run` and `strongroom export` make it,
compile, deploy bundle, named values as `strongroom kamal fetch` makes it), on SQLite and PostgreSQL;
`GET /v1/audit/events?name=K` returns every one of those events and only events that touched K. The
key index is what makes it fast: EXPLAIN shows the query walking it, on both databases. The CLI side
is in tests/integration/audit/test_cli.py."""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from broker.repositories import audit as audit_repo
from broker.services import audit as svc
from tests.integration.audit.conftest import AuditApi

K = "DATABASE_URL"
AUDITOR = [{"project": "*", "environments": "*", "actions": ["audit"]}]


def manifest(*names: str) -> str:
    return (
        "project: microblog\nservice: microblog\nimage: registry.example.com/acme/microblog\n"
        "roles:\n  web:\n    hosts: [web1]\n"
        f"env:\n  secret: [{', '.join(names)}]\n"
    )


class Traffic:
    """Requests against the broker, split into those that touched K and those that did not."""

    def __init__(self, api: AuditApi) -> None:
        self.api = api
        self.touched: dict[str, str] = {}  # request id -> what it was
        self.untouched: dict[str, str] = {}

    def send(self, what: str, touches: bool, response: httpx.Response, status: int = 200) -> Any:
        assert response.status_code == status, (what, response.text)
        (self.touched if touches else self.untouched)[response.headers["x-request-id"]] = what
        return response.json() if response.content else None


def every_route(api: AuditApi) -> Traffic:
    t = Traffic(api)
    c, h, prod = api.client, api.h, api.env_url("production")
    t.send("write K", True, api.put("production", K, "postgres://u:pw@db/app"))
    t.send("write OTHER", False, api.put("production", "OTHER", "other-value"))
    t.send("write SHARED", False, api.put("common", "SHARED", "shared-value"))
    for _ in range(2):  # the hot path (the second read finds its statements compiled)
        t.send("single read", True, api.get("production", K))
    t.send("reveal", True, c.get(api.url("production", K), headers={**h, "X-Strongroom-Reveal": "1"}))
    t.send("resolve (run)", True, c.get(f"{prod}/resolved", headers=h))
    t.send(
        "resolve (export --reveal)",
        True,
        c.get(f"{prod}/resolved", headers={**h, "X-Strongroom-Reveal": "1"}),
    )
    compile_body = {"manifest": manifest(K, "SHARED"), "targets": ["dotenv"]}
    t.send("compile", True, c.post(f"{prod}/compile", json=compile_body, headers=h))
    t.send(
        "named values (kamal fetch)", True, c.post(f"{prod}/values", json={"names": [K, "OTHER"]}, headers=h)
    )
    started = t.send(
        "deploy start",
        False,
        c.post(f"{prod}/deploys", json={"manifest": manifest(K), "version": "v1"}, headers=h),
        201,
    )
    bundle = f"/v1/deploys/{started['deploy']['id']}/bundle"
    t.send("deploy bundle", True, c.post(bundle, headers={"Authorization": f"Bearer {started['token']}"}))
    ci = api.token_for([{"project": "microblog", "environments": "common", "actions": ["read"]}], name="ci")
    t.send("denied read of K", True, c.get(api.url("production", K), headers=ci), 403)
    # Noise: the same routes without K.
    t.send("single read OTHER", False, api.get("production", "OTHER"))
    t.send("named values OTHER", False, c.post(f"{prod}/values", json={"names": ["OTHER"]}, headers=h))
    other = {"manifest": manifest("OTHER"), "targets": ["dotenv"]}
    t.send("compile OTHER", False, c.post(f"{prod}/compile", json=other, headers=h))
    t.send("resolve common", False, c.get(f"{api.env_url('common')}/resolved", headers=h))
    return t


def answer(api: AuditApi, headers: dict[str, str], **params: str) -> dict[str, str]:
    """request id -> action of every event the query returns (all pages)."""
    found: dict[str, str] = {}
    cursor: int | None = None
    while True:
        query: dict[str, Any] = {**params, "limit": 7}
        if cursor is not None:
            query["cursor"] = cursor
        r = api.client.get("/v1/audit/events", params=query, headers=headers)
        assert r.status_code == 200, r.text
        page = r.json()
        for event in page["events"]:
            assert event["request_id"] not in found, "an event came twice"
            found[event["request_id"]] = event["action"]
        cursor = page["next_cursor"]
        if cursor is None:
            return found


def test_every_read_of_a_key_by_any_route_and_only_those(api: AuditApi) -> None:
    t = every_route(api)
    auditor = api.token_for(AUDITOR, name="auditor")
    found = answer(api, auditor, name=K)
    assert set(found) == set(t.touched), {
        t.touched.get(i) or t.untouched.get(i, i) for i in set(found) ^ set(t.touched)
    }
    assert set(found.values()) == {
        "secret.write",
        "secret.read",
        "secret.reveal",
        "secret.resolve",
        "compile",
        "secret.read_many",
        "deploy.bundle",
    }
    # The same answer narrowed to the project and environment; another project's K is not in it.
    assert answer(api, auditor, name=K, project="microblog", environment="production") == found
    assert answer(api, auditor, name=K, project="elsewhere") == {}
    assert set(answer(api, auditor, name=K, action="secret.resolve")) == {
        i
        for i, what in t.touched.items()
        if what == "resolve (run)"  # export --reveal is a reveal
    }


def test_an_inherited_key_is_found_where_it_lives_and_where_it_was_read(api: AuditApi) -> None:
    t = every_route(api)
    auditor = api.token_for(AUDITOR, name="auditor")
    through_production = answer(api, auditor, name="SHARED", environment="production")
    where_it_lives = answer(api, auditor, name="SHARED", environment="common")
    resolves = {i for i, what in t.touched.items() if what.startswith("resolve") or what == "compile"}
    assert set(through_production) == resolves
    write, resolve_common = (
        next(i for i, w in t.untouched.items() if w == what) for what in ("write SHARED", "resolve common")
    )
    assert set(where_it_lives) == resolves | {write, resolve_common}


def test_key_rows_are_what_touched_keys_derives_from_each_record(api: AuditApi) -> None:
    """The hot read binds its one key in SQL and the migrations' backfills (0005, 0010's downgrade) have
    their own copies of the rule: all must agree with touched_keys, event by event."""
    every_route(api)
    api.chain()
    rows = api.query(text("SELECT event_id, seq, project, environment, name FROM audit_event_keys"))
    by_event: dict[int, set[tuple[str, str, str]]] = {}
    for event_id, _seq, project, environment, name in rows:
        by_event.setdefault(event_id, set()).add((project, environment, name))
    backfills = [migration_rule(), migration_rule("0010_audit_event_keys_by_name.py")]
    for event in api.linked():
        derived = set(svc.touched_keys(event))
        assert by_event.get(event["id"], set()) == derived, event["action"]
        for backfill in backfills:
            assert (
                set(
                    backfill(
                        event["project"], event["environment"], event["secret_name"], event["fingerprints"]
                    )
                )
                == derived
            )
    assert all(seq is not None for _, seq, *_ in rows)


def migration_rule(file: str = "0005_audit_event_keys.py") -> Callable[..., Any]:
    path = Path(__file__).parents[3] / "broker" / "migrations" / "versions" / file
    spec = importlib.util.spec_from_file_location("migration_" + file[:4], path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rule: Callable[..., Any] = module._touched
    return rule


@pytest.mark.parametrize("narrow", [False, True])
def test_the_key_query_walks_the_key_index(api: AuditApi, narrow: bool) -> None:
    """EXPLAIN of the query `audit list --name` runs, on a trail of 20,000 events of which K is read by
    one in five: the key index drives it in sequence order, so a page costs its own size, with no sort
    of every read of K (on PostgreSQL after ANALYZE, as autovacuum would have done). The walk is the
    primary key (name, seq, ...), the table's only B-tree on SQLite (WITHOUT ROWID)."""
    big = 20_000
    if api.rt.engine.dialect.name == "postgresql":
        api.sql(
            "INSERT INTO audit_events (occurred_at, request_id, method, route, action, outcome, status, seq, "
            "project, environment, secret_name) SELECT now(), 'r' || i, 'GET', '/x', 'secret.read', 'ok', 200, "
            "1000000 + i, 'microblog', 'production', CASE WHEN i % 5 = 0 THEN :k ELSE 'N' || (i % 500) END "
            "FROM generate_series(1, :n) AS i",
            n=big,
            k=K,
        )
        api.sql(
            "INSERT INTO audit_event_keys (event_id, seq, project, environment, name) SELECT id, seq, project, "
            "environment, secret_name FROM audit_events WHERE seq > 1000000"
        )
        api.sql("ANALYZE audit_events")
        api.sql("ANALYZE audit_event_keys")
    else:
        api.sql(
            "WITH RECURSIVE i(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM i WHERE n < :n) "
            "INSERT INTO audit_events (occurred_at, request_id, method, route, action, outcome, status, seq, "
            "project, environment, secret_name) SELECT '2026-12-04 12:00:00', 'r' || n, 'GET', '/x', "
            "'secret.read', 'ok', 200, 1000000 + n, 'microblog', 'production', CASE WHEN n % 5 = 0 THEN :k ELSE 'N' || (n % 500) END FROM i",
            n=big,
            k=K,
        )
        api.sql(
            "INSERT INTO audit_event_keys (event_id, seq, project, environment, name) SELECT id, seq, project, "
            "environment, secret_name FROM audit_events WHERE seq > 1000000"
        )
    key = audit_repo.KeyFilter(K, "microblog", "production") if narrow else audit_repo.KeyFilter(K)
    stmt = audit_repo.search_statement(
        [audit_repo.column("outcome") == "ok"], key=key, cursor=None, newest_first=True, limit=100
    )
    compiled = stmt.compile(dialect=api.rt.engine.dialect, compile_kwargs={"literal_binds": True})
    explain = "EXPLAIN QUERY PLAN " if api.rt.engine.dialect.name == "sqlite" else "EXPLAIN "
    plan = "\n".join(str(row[-1]) for row in api.query(text(explain + str(compiled))))
    if api.rt.engine.dialect.name == "sqlite":
        assert "SEARCH audit_event_keys USING PRIMARY KEY (name=?" in plan, plan
        assert "SCAN audit_events" not in plan and "USE TEMP B-TREE FOR ORDER BY" not in plan, plan
    else:
        assert "pk_audit_event_keys" in plan, plan
        assert "Seq Scan on audit_events" not in plan and "Sort" not in plan, plan


def test_the_migration_indexes_the_events_already_there(db_url: str, tmp_path: Path) -> None:
    """Events recorded before revision 0005 (its downgrade drops the index) are found once it is applied."""
    from broker.db import migrate
    from tests.integration.audit.conftest import broker

    with broker(db_url, tmp_path) as api:
        t = every_route(api)
        api.chain()
    migrate.downgrade(db_url, "0004")
    migrate.upgrade(db_url)
    with broker(db_url, tmp_path) as api:
        rows = api.query(text("SELECT event_id, seq, project, environment, name FROM audit_event_keys"))
        by_event: dict[int, set[tuple[str, str, str]]] = {}
        for event_id, seq, project, environment, name in rows:
            assert seq is not None
            by_event.setdefault(event_id, set()).add((project, environment, name))
        for event in api.linked():
            assert by_event.get(event["id"], set()) == set(svc.touched_keys(event)), event["action"]
        auditor = api.token_for(AUDITOR, name="auditor")
        assert set(answer(api, auditor, name=K)) == set(t.touched)


async def _on_database(db_url: str, statement: str, **params: Any) -> set[tuple[Any, ...]]:
    """Run one statement with no broker running (its rows, if any)."""
    from broker.db.engine import make_engine

    engine = make_engine(db_url)
    try:
        async with engine.begin() as conn:
            result = await conn.execute(text(statement), params)
            return {tuple(r) for r in result} if result.returns_rows else set()
    finally:
        await engine.dispose()


def _key_rows(db_url: str) -> set[tuple[Any, ...]]:
    """(event_id, seq, project, environment, name) of every key row."""
    return asyncio.run(
        _on_database(db_url, "SELECT event_id, seq, project, environment, name FROM audit_event_keys")
    )


def test_revision_0010_keeps_the_linked_keys_and_the_chainer_writes_the_rest(
    db_url: str, tmp_path: Path
) -> None:
    """Across 0010's downgrade and upgrade the rows of linked events are kept as they were; an event not
    linked yet (planted, as the PostgreSQL appender leaves them) gets null-seq rows in the former schema
    (as 0005 derived them) and none in the new one, where the chainer writes them, with the event's seq,
    when it links it."""
    from broker.db import migrate
    from tests.integration.audit.conftest import broker

    with broker(db_url, tmp_path) as api:
        every_route(api)
        api.chain()
    linked = _key_rows(db_url)
    assert linked and all(seq is not None for _, seq, *_ in linked)
    asyncio.run(
        _on_database(
            db_url,
            "INSERT INTO audit_events (occurred_at, request_id, method, route, action, outcome, status, "
            "project, environment, secret_name, fingerprints) VALUES (CURRENT_TIMESTAMP, 'planted', 'GET', "
            "'/x', 'secret.resolve', 'ok', 200, 'microblog', 'production', 'PLANTED', :prints)",
            prints='[{"environment": "common", "name": "FROM_COMMON", "fingerprint": "x"}]',
        )
    )
    ((planted,),) = asyncio.run(_on_database(db_url, "SELECT id FROM audit_events WHERE seq IS NULL"))
    expected = {
        (planted, "microblog", "production", "PLANTED"),
        (planted, "microblog", "common", "FROM_COMMON"),
        (planted, "microblog", "production", "FROM_COMMON"),
    }
    assert _key_rows(db_url) == linked
    migrate.downgrade(db_url, "0009")
    assert _key_rows(db_url) == linked | {(e, None, p, env, n) for e, p, env, n in expected}
    migrate.upgrade(db_url)
    assert _key_rows(db_url) == linked
    with broker(db_url, tmp_path) as api:
        api.chain()
        (seq,) = (event["seq"] for event in api.linked() if event["id"] == planted)
    assert _key_rows(db_url) == linked | {(e, seq, p, env, n) for e, p, env, n in expected}
