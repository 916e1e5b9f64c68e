"""E28/E29 audit fails closed and comes before release; exactly one audit event per request."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event, func, select, text

import broker.repositories.audit as audit_repo
from broker.db.units import ConnTx, SqliteTx
from broker.models import audit_events
from tests.integration.secrets.conftest import Api, Reply, problem, random_value


class AuditDown(RuntimeError):
    """The audit sink is unavailable."""


def assert_503_without(r: Reply, *secrets: str) -> None:
    body = problem(r, 503)
    assert body["detail"] == "the audit trail is unavailable; retry later"
    assert r.headers.get("retry-after") == "5"
    for s in secrets:
        assert s not in r.text


def test_audit_sink_raising_fails_closed(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    old, new = random_value(), random_value()
    assert api.put("common", "DB_PASSWORD", old).status_code == 200
    before = api.stored()

    def down(*_a: Any, **_k: Any) -> None:
        raise AuditDown("audit sink down")

    # The one appender: every route's event goes through it.
    monkeypatch.setattr(audit_repo, "append", down)
    assert_503_without(api.safe("GET", api.url("common", "DB_PASSWORD"), headers=api.h), old)
    assert_503_without(
        api.safe("GET", api.url("common", "DB_PASSWORD"), params={"version": 1}, headers=api.h), old
    )
    assert_503_without(api.safe("GET", f"{api.env_url('production')}/resolved", headers=api.h), old)
    assert_503_without(
        api.safe("PUT", api.url("common", "DB_PASSWORD"), json={"value": new}, headers=api.h), old, new
    )
    assert_503_without(api.safe("PUT", api.url("common", "NEW_ONE"), json={"value": new}, headers=api.h), new)
    assert_503_without(api.safe("DELETE", api.url("common", "DB_PASSWORD"), headers=api.h), old)
    assert_503_without(
        api.safe("POST", f"{api.url('common', 'DB_PASSWORD')}/rollback", json={"version": 1}, headers=api.h),
        old,
    )
    assert_503_without(
        api.safe("POST", f"{api.url('common', 'DB_PASSWORD')}/versions/1/destroy", headers=api.h)
    )
    # failures are refused the same way (their event cannot be written either)
    assert_503_without(api.safe("GET", api.url("common", "MISSING"), headers=api.h))
    monkeypatch.undo()

    assert api.stored() == before
    assert api.value("common", "DB_PASSWORD") == old
    assert api.versions("common", "DB_PASSWORD") == [1]


def rename_audit_table(api: Api, to: str, frm: str = "audit_events") -> None:
    api.execute(text(f"ALTER TABLE {frm} RENAME TO {to}"))


def test_audit_table_missing_fails_closed(api: Api) -> None:
    old, new = random_value(), random_value()
    assert api.put("common", "DB_PASSWORD", old).status_code == 200
    before = api.stored()
    rename_audit_table(api, "audit_events_gone")
    try:
        assert_503_without(api.safe("GET", api.url("common", "DB_PASSWORD"), headers=api.h), old)
        assert_503_without(api.safe("GET", f"{api.env_url('common')}/resolved", headers=api.h), old)
        assert_503_without(
            api.safe("PUT", api.url("common", "DB_PASSWORD"), json={"value": new, "cas": 1}, headers=api.h),
            old,
            new,
        )
        assert_503_without(
            api.safe("POST", f"{api.url('common', 'DB_PASSWORD')}/undelete", headers=api.h), old
        )
    finally:
        rename_audit_table(api, "audit_events", frm="audit_events_gone")
    assert api.stored() == before
    assert api.value("common", "DB_PASSWORD") == old


@pytest.fixture
def fail_in_transaction_audit(api: Api, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, int]]:
    """The next `calls` audit inserts fail; later ones (the edge's own) succeed."""
    real = audit_repo.append
    state = {"calls": 0}

    async def flaky(*a: Any, **k: Any) -> None:
        if state["calls"] > 0:
            state["calls"] -= 1
            raise AuditDown("audit insert failed")
        await real(*a, **k)

    monkeypatch.setattr(audit_repo, "append", flaky)
    yield state


def test_failed_in_transaction_audit_commits_nothing(
    api: Api, fail_in_transaction_audit: dict[str, int]
) -> None:
    old, new = random_value(), random_value()
    assert api.put("common", "K", old).status_code == 200
    before = api.stored()
    for method, url, kw in (
        ("PUT", api.url("common", "K"), {"json": {"value": new}}),
        ("PUT", api.url("common", "FRESH"), {"json": {"value": new, "cas": 0}}),
        ("POST", f"{api.url('common', 'K')}/rollback", {"json": {"version": 1}}),
        ("DELETE", api.url("common", "K"), {}),
        ("POST", f"{api.url('common', 'K')}/versions/1/destroy", {}),
        ("GET", api.url("common", "K"), {}),
        ("GET", f"{api.env_url('production')}/resolved", {}),
    ):
        fail_in_transaction_audit["calls"] = 1
        r = api.safe(method, url, headers=api.h, **kw)
        assert r.status >= 500, (method, url, r.status)
        assert old not in r.text and new not in r.text
        assert fail_in_transaction_audit["calls"] == 0
        # the edge recorded the failure instead: exactly one event, outcome error
        event_row = api.one_audit(r.request_id)
        assert (event_row["outcome"], event_row["status"]) == ("error", r.status)
        assert api.stored() == before, (method, url)
    assert api.value("common", "K") == old


def test_failed_commit_is_not_a_success_and_is_still_audited(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The audit insert succeeds but the transaction's commit fails (disk full, lost connection)."""
    old, new = random_value(), random_value()
    assert api.put("common", "K", old).status_code == 200
    before = api.stored()
    sync_engine = api.rt.engine.sync_engine
    armed = {"n": 0}
    # Units of work on the raw driver run past the engine's events: fail them from the appender.
    real = audit_repo.append

    async def unit_commit_fails(tx: Any, *a: Any, **k: Any) -> None:
        if isinstance(tx, ConnTx) or armed["n"] == 0:
            await real(tx, *a, **k)
            return
        armed["n"] -= 1
        if isinstance(tx, SqliteTx):
            await real(tx, *a, **k)  # SQLite: the insert lands, then the unit fails and rolls it back
        raise AuditDown("commit failed")  # PostgreSQL: the insert is its own commit, which fails

    monkeypatch.setattr(audit_repo, "append", unit_commit_fails)

    def saw_audit_insert(conn: Any, _cursor: Any, statement: str, *_a: Any) -> None:
        if "INSERT INTO AUDIT_EVENTS " in statement.upper():
            conn.info["audit_insert"] = True

    def on_commit(conn: Any) -> None:
        if conn.info.pop("audit_insert", False) and armed["n"] > 0:
            armed["n"] -= 1
            raise AuditDown("commit failed")

    def on_rollback(conn: Any) -> None:
        conn.info.pop("audit_insert", None)

    event.listen(sync_engine, "before_cursor_execute", saw_audit_insert)
    event.listen(sync_engine, "commit", on_commit)
    event.listen(sync_engine, "rollback", on_rollback)
    try:
        for method, url, kw in (
            ("GET", api.url("common", "K"), {}),
            ("PUT", api.url("common", "K"), {"json": {"value": new}}),
            ("GET", f"{api.env_url('production')}/resolved", {}),
        ):
            armed["n"] = 1
            r = api.safe(method, url, headers=api.h, **kw)
            assert armed["n"] == 0
            assert r.status >= 500, (method, r.status)
            assert old not in r.text and new not in r.text
            rows = api.audit_for(r.request_id)
            assert [(e["outcome"], e["status"]) for e in rows] == [("error", r.status)], (method, rows)
    finally:
        event.remove(sync_engine, "before_cursor_execute", saw_audit_insert)
        event.remove(sync_engine, "commit", on_commit)
        event.remove(sync_engine, "rollback", on_rollback)
    assert api.stored() == before
    assert api.value("common", "K") == old


def test_audit_is_committed_before_the_value_is_released(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """A crash after the service returned (audit committed) and before the response: the event exists.

    The edge cannot tell this crash from a failed commit, so it records the failure as well: the
    request has its committed `ok` event and an `error` event, never none.
    """
    import broker.api.routes.secrets as routes

    value = random_value()
    assert api.put("common", "K", value).status_code == 200

    def crash(*_a: Any, **_k: Any) -> None:
        raise AuditDown("crash while building the response")

    monkeypatch.setattr(routes, "SecretValueOut", crash)
    r = api.safe("GET", api.url("common", "K"), headers=api.h)
    assert r.status == 500 and value not in r.text
    rows = sorted(api.audit_for(r.request_id), key=lambda e: e["id"])
    assert [(e["action"], e["outcome"], e["status"]) for e in rows] == [
        ("secret.read", "ok", 200),
        ("secret.read", "error", 500),
    ]
    assert rows[0]["version"] == 1


def count_audit(api: Api) -> int:
    return int(api.query(select(func.count()).select_from(audit_events))[0][0])


def test_exactly_one_audit_event_per_request(api: Api) -> None:
    reader = api.token_for(
        [{"project": "microblog", "environments": "*", "actions": ["read"]}], name="reader"
    )
    assert api.put("common", "K", random_value()).status_code == 200
    base = api.url("common", "K")
    cases: list[tuple[str, str, dict[str, Any], dict[str, str], int, str]] = [
        ("GET", base, {}, api.h, 200, "ok"),
        ("PUT", base, {"json": {"value": random_value(), "cas": 1}}, api.h, 200, "ok"),
        ("GET", api.url("common"), {}, api.h, 200, "ok"),
        ("GET", f"{base}/versions", {}, api.h, 200, "ok"),
        ("GET", f"{api.env_url('production')}/resolved", {}, api.h, 200, "ok"),
        ("PUT", api.url("common", "TMP"), {"json": {"value": "x"}}, api.h, 200, "ok"),
        ("DELETE", api.url("common", "TMP"), {}, api.h, 204, "ok"),
        ("POST", f"{api.url('common', 'TMP')}/undelete", {}, api.h, 200, "ok"),
        ("POST", f"{base}/rollback", {"json": {"version": 1}}, api.h, 200, "ok"),
        ("POST", f"{base}/versions/1/destroy", {}, api.h, 204, "ok"),
        ("GET", api.url("common", "BAD-NAME"), {}, api.h, 400, "invalid"),
        ("PUT", base, {"json": {"value": 5}}, api.h, 400, "invalid"),
        ("PUT", base, {"json": {"value": "x", "nope": 1}}, api.h, 400, "invalid"),
        ("GET", base, {"params": {"version": "abc"}}, api.h, 400, "invalid"),
        ("PUT", base, {"json": {"value": "x"}}, reader, 403, "denied"),
        ("POST", f"{base}/versions/2/destroy", {}, reader, 403, "denied"),
        ("GET", base, {}, {"Authorization": "Bearer srt_" + "A" * 43}, 401, "denied"),
        ("GET", base, {}, {}, 401, "denied"),
        ("GET", api.url("common", "MISSING"), {}, api.h, 404, "invalid"),
        ("GET", api.url("nowhere", "K"), {}, api.h, 404, "invalid"),
        ("PUT", base, {"json": {"value": "x", "cas": 1}}, api.h, 409, "invalid"),
        ("PUT", base, {"content": b'{"value": "' + b"A" * (2 * 1024 * 1024) + b'"}'}, api.h, 413, "invalid"),
        ("GET", "/v1/nope", {}, api.h, 404, "invalid"),
        ("GET", f"{base}/history", {}, api.h, 404, "invalid"),
        ("PATCH", base, {"json": {}}, api.h, 405, "invalid"),
    ]
    for method, url, kw, headers, status, outcome in cases:
        r = api.safe(method, url, headers=headers, **kw)
        assert r.status == status, (method, url, r.status, r.text)
        rows = api.audit_for(r.request_id)
        assert len(rows) == 1, (method, url, rows)
        assert (rows[0]["outcome"], rows[0]["status"], rows[0]["method"]) == (outcome, status, method)
        assert rows[0]["route"] == url.split("?")[0]
        assert rows[0]["source_addr"] == "127.0.0.1"

    before = count_audit(api)
    for path in ("/up", "/healthz"):
        r = api.safe("GET", path)
        assert r.status == 200 and r.json() == {"status": "ok"}
        assert api.audit_for(r.request_id) == []
    assert count_audit(api) == before
