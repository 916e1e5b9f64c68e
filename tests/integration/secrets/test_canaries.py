"""E31: canary values appear only in the bodies of successful value reads.

Every secrets route is driven through success and error paths (validation, type confusion,
oversize, denied, unauthenticated, not found, conflict, integrity failure, audit outage) while all
loggers record at DEBUG (SQLAlchemy included, so SQL parameters are logged too). Then every log
record, every response header and body, every audit row and the process's stdout/stderr are searched.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

import broker.repositories.audit as audit_repo
from tests.integration.secrets.conftest import Api, Reply

CLIENT_LOGGERS = {"httpx", "httpcore"}


def all_loggers_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    names = set(logging.root.manager.loggerDict) | {
        "sqlalchemy",
        "sqlalchemy.engine",
        "sqlalchemy.pool",
        "aiosqlite",
        "asyncpg",
        "httpx",
        "httpcore",
        "fastapi",
        "starlette",
        "uvicorn",
        "strongroom",
    }
    for name in sorted(names):
        caplog.set_level(logging.DEBUG, logger=name)


def test_canaries_only_in_successful_reads(
    api: Api,
    canary: str,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    stored_common, stored_prod, never_stored = canary, canary[::-1] + "Z", "NEVER" + canary
    canaries = (stored_common, stored_prod, never_stored)
    reader = api.token_for(
        [{"project": "microblog", "environments": "*", "actions": ["read"]}], name="reader"
    )
    all_loggers_at_debug(caplog)
    assert logging.getLogger("sqlalchemy.engine").isEnabledFor(logging.DEBUG)

    url = api.url("common", "DB_PASSWORD")
    prod_url = api.url("production", "API_TOKEN")
    json_h = {**api.h, "content-type": "application/json"}
    allowed: set[str] = set()  # request ids whose body may carry a stored canary

    def call(method: str, target: str, *, may_reveal: bool = False, headers: Any = None, **kw: Any) -> Reply:
        r = api.safe(method, target, headers=api.h if headers is None else headers, **kw)
        if may_reveal:
            assert r.status == 200, (method, target, r.status, r.text)
            allowed.add(r.request_id)
        return r

    # successful writes and reads
    assert call("PUT", url, json={"value": stored_common, "cas": 0}).status == 200
    assert call("PUT", prod_url, json={"value": stored_prod}).status == 200
    assert call("PUT", url, json={"value": "second-version"}).status == 200
    assert stored_common in call("GET", url, params={"version": 1}, may_reveal=True).text
    assert stored_prod in call("GET", prod_url, may_reveal=True).text
    resolved = call("GET", f"{api.env_url('production')}/resolved", may_reveal=True)
    assert stored_prod in resolved.text
    # metadata routes
    assert call("GET", api.url("common")).status == 200
    assert call("GET", api.url("common"), params={"include_deleted": "true"}).status == 200
    assert call("GET", f"{url}/versions").status == 200
    assert call("POST", f"{url}/rollback", json={"version": 1}).status == 200
    assert call("DELETE", url).status == 204
    assert call("GET", url).status == 404
    assert call("POST", f"{url}/undelete").status == 200
    # failing writes carrying canaries
    big = json.dumps({"value": never_stored * 40000}).encode()
    failures: list[tuple[str, str, dict[str, Any], int]] = [
        ("PUT", url, {"json": {"value": never_stored, "cas": 1}}, 409),
        ("PUT", url, {"json": {"value": never_stored, "cas": 0}}, 409),
        ("PUT", url, {"json": {"value": {"nested": never_stored}}}, 400),
        ("PUT", url, {"json": {"value": [never_stored]}}, 400),
        ("PUT", url, {"json": {"value": never_stored, "cas": never_stored}}, 400),
        ("PUT", url, {"json": {"value": never_stored, "sensitive": never_stored}}, 400),
        ("PUT", url, {"json": {"value": never_stored, "extra": never_stored}}, 400),
        ("PUT", url, {"json": {"value": never_stored + "A" * 65536}}, 400),
        ("PUT", url, {"json": [never_stored]}, 400),
        ("PUT", url, {"content": b'{"value": "' + never_stored.encode(), "headers": json_h}, 400),
        (
            "PUT",
            url,
            {"content": b'{"value": "\\ud800' + never_stored.encode() + b'"}', "headers": json_h},
            400,
        ),
        (
            "PUT",
            url,
            {"content": never_stored.encode(), "headers": {**api.h, "content-type": "text/plain"}},
            400,
        ),
        ("PUT", url, {"content": big, "headers": json_h}, 413),
        ("PUT", api.url("common", "BAD-NAME"), {"json": {"value": never_stored}}, 400),
        ("PUT", api.url("Common", "OK"), {"json": {"value": never_stored}}, 400),
        ("PUT", api.url("nowhere", "OK"), {"json": {"value": never_stored}}, 404),
        ("PUT", url, {"json": {"value": never_stored}, "headers": reader}, 403),
        ("PUT", url, {"json": {"value": never_stored}, "headers": {}}, 401),
        ("PUT", f"{url}/unknown", {"json": {"value": never_stored}}, 404),
        ("POST", url, {"json": {"value": never_stored}}, 405),
        ("POST", f"{url}/rollback", {"json": {"version": never_stored}}, 400),
        ("POST", f"{url}/rollback", {"json": {"version": 99}}, 404),
        ("POST", f"{url}/versions/99/destroy", {}, 404),
        ("GET", url, {"params": {"version": never_stored}}, 400),
        ("GET", url, {"params": {"version": 99}}, 404),
    ]
    for method, target, kw, status in failures:
        r = call(method, target, **kw)
        assert r.status == status, (method, target, kw.get("json"), r.status, r.text)

    # integrity failure: the stored canary's ciphertext is damaged
    row = api.version_row("production", "API_TOKEN", 1)
    api.set_version_row(row["id"], ciphertext=row["ciphertext"][:-1] + bytes([row["ciphertext"][-1] ^ 1]))
    assert call("GET", prod_url).status == 500
    assert call("GET", f"{api.env_url('production')}/resolved").status == 500
    api.set_version_row(row["id"], ciphertext=row["ciphertext"])
    # audit outage while a canary is readable and while one is written
    with monkeypatch.context() as m:

        def down(*_a: Any, **_k: Any) -> None:
            raise RuntimeError("audit sink down")

        m.setattr(audit_repo, "append", down)  # the one appender, every route's
        assert call("GET", prod_url).status == 503
        assert call("GET", f"{api.env_url('production')}/resolved").status == 503
        assert call("PUT", url, json={"value": never_stored}).status == 503
    # destroy the stored canary's versions last
    assert call("POST", f"{prod_url}/versions/1/destroy").status == 204
    assert call("GET", prod_url, params={"version": 1}).status == 404

    # ---- the search ---------------------------------------------------------------------------
    def hits(text: str) -> list[str]:
        return [c for c in canaries if c in text]

    for reply in api.seen:
        assert hits(json.dumps(reply.headers)) == [], reply.headers
        if reply.request_id in allowed:
            assert never_stored not in reply.text
        else:
            assert hits(reply.text) == [], (reply.status, reply.text[:300])
    # the reads that may reveal did reveal: the search can see canaries
    assert sum(1 for r in api.seen if r.request_id in allowed and hits(r.text)) == len(allowed) == 3

    # httpx/httpcore are the test's own HTTP client (it logs the URLs it requests, and one test
    # request puts a canary in a query string on purpose); everything else is the server side.
    records = [r for r in caplog.records if r.name.split(".")[0] not in CLIENT_LOGGERS]
    assert any(r.name.startswith("sqlalchemy.engine") for r in records), "SQL logging was not captured"
    assert any(r.name == "strongroom.edge" for r in records), "the broker's own logs were not captured"
    assert any("API_TOKEN" in r.getMessage() for r in records), "SQL parameters were not logged"
    for record in records:
        rendered = f"{record.name} {record.getMessage()} {record.exc_text or ''}"
        if record.exc_info:
            rendered += logging.Formatter().formatException(record.exc_info)
        assert hits(rendered) == [], rendered[:500]

    events = api.all_audit()
    assert len(events) >= len(api.seen)
    assert hits(json.dumps([{k: str(v) for k, v in e.items()} for e in events])) == []

    out, err = capfd.readouterr()
    assert hits(out + err) == []

    if not api.rt.settings.resolved_database_url.startswith("sqlite"):
        # the PostgreSQL server's own log (failed statements are logged there)
        server_log = request.getfixturevalue("pg_cluster").datadir.parent / "log"
        assert hits(server_log.read_text("utf-8", "replace")) == []
