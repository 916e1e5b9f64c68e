"""Fixtures for the secrets API tests: a seeded project, DB access on the app's loop, raw ASGI calls.

Everything that touches `runtime.engine` runs through `client.portal`, the event loop the app itself
runs on, so pooled connections (asyncpg binds them to a loop) are shared safely with the app.
"""

from __future__ import annotations

import contextlib
import json
import secrets
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from broker.models import audit_events, environments, projects, secret_versions
from broker.models import secrets as secrets_table
from broker.services.runtime import Runtime

PROJECT = "microblog"
CLIENT_ADDR = ("127.0.0.1", 50000)


@dataclass
class Reply:
    """A response captured from a raw ASGI call or an httpx request."""

    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def request_id(self) -> str:
        return self.headers["x-request-id"]


@dataclass
class Api:
    """The test client, the runtime and the admin's headers, with helpers for the secrets routes."""

    client: TestClient
    rt: Runtime
    h: dict[str, str]
    seen: list[Reply] = field(default_factory=list)

    # ---- URLs -------------------------------------------------------------------------------
    @staticmethod
    def env_url(environment: str, project: str = PROJECT) -> str:
        return f"/v1/projects/{project}/environments/{environment}"

    def url(self, environment: str, name: str | None = None, project: str = PROJECT) -> str:
        base = f"{self.env_url(environment, project)}/secrets"
        return f"{base}/{name}" if name is not None else base

    # ---- HTTP through the TestClient ----------------------------------------------------------
    def put(self, env: str, name: str, value: str, **extra: Any) -> httpx.Response:
        return self.client.put(self.url(env, name), json={"value": value, **extra}, headers=self.h)

    def get(self, env: str, name: str, **params: Any) -> httpx.Response:
        return self.client.get(self.url(env, name), params=params, headers=self.h)

    def value(self, env: str, name: str) -> str:
        r = self.get(env, name)
        assert r.status_code == 200, r.text
        return str(r.json()["value"])

    def versions(self, env: str, name: str) -> list[int]:
        r = self.client.get(f"{self.url(env, name)}/versions", headers=self.h)
        assert r.status_code == 200, r.text
        return [v["version"] for v in r.json()["versions"]]

    def make_env(self, slug: str, parent: str | None = None, project: str = PROJECT) -> None:
        r = self.client.post(
            f"/v1/projects/{project}/environments", json={"slug": slug, "parent": parent}, headers=self.h
        )
        assert r.status_code == 201, r.text

    def make_project(self, slug: str) -> None:
        r = self.client.post("/v1/projects", json={"slug": slug}, headers=self.h)
        assert r.status_code == 201, r.text

    def token_for(self, scopes: list[dict[str, Any]], name: str = "ci-bot") -> dict[str, str]:
        """Auth headers of a new machine identity holding exactly these scopes."""
        r = self.client.post(
            "/v1/identities", json={"name": name, "type": "machine", "scopes": scopes}, headers=self.h
        )
        assert r.status_code == 201, r.text
        ident = r.json()
        r = self.client.post(
            "/v1/auth/token",
            json={"client_id": ident["client_id"], "client_secret": ident["client_secret"]},
        )
        assert r.status_code == 200, r.text
        return {"Authorization": f"Bearer {r.json()['token']}"}

    # ---- requests that must not raise in the test (the app may re-raise after answering) -------
    def safe(self, method: str, url: str, **kw: Any) -> Reply:
        """One request through httpx.ASGITransport with app exceptions turned into the sent reply."""

        async def go() -> Reply:
            transport = httpx.ASGITransport(
                app=self.client.app, raise_app_exceptions=False, client=CLIENT_ADDR
            )
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as ac:
                r = await ac.request(method, url, **kw)
                return Reply(r.status_code, dict(r.headers), r.content)

        reply = self.run(go)
        self.seen.append(reply)
        return reply

    def raw(
        self,
        method: str,
        target: str,
        *,
        headers: Iterable[tuple[str, str]] = (),
        chunks: Iterable[bytes] = (b"",),
        query: bytes = b"",
    ) -> Reply:
        """Call the ASGI app with a hand-built scope, as uvicorn would build it from this request target.

        `target` is the percent-encoded path as sent on the wire; like uvicorn, the scope's `path` is
        its percent-decoding and `raw_path` the bytes as sent. No client normalises dot segments or
        fixes headers, so the exact bytes reach the app.
        """
        hdrs = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in self.h.items()]
        hdrs += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers]
        parts = list(chunks)

        async def go() -> Reply:
            scope = {
                "type": "http",
                "asgi": {"version": "3.0"},
                "http_version": "1.1",
                "method": method,
                "scheme": "http",
                "path": unquote(target),
                "raw_path": target.encode("ascii"),
                "root_path": "",
                "query_string": query,
                "headers": [(b"host", b"testserver"), *hdrs],
                "client": CLIENT_ADDR,
                "server": ("testserver", 80),
            }
            pending = [
                {"type": "http.request", "body": part, "more_body": i < len(parts) - 1}
                for i, part in enumerate(parts)
            ]
            sent: list[dict[str, Any]] = []

            async def receive() -> dict[str, Any]:
                if pending:
                    return pending.pop(0)
                return {"type": "http.disconnect"}

            async def send(message: dict[str, Any]) -> None:
                sent.append(message)

            # Starlette re-raises unhandled errors after answering; the answer sent is what a client sees.
            with contextlib.suppress(Exception):
                await self.client.app(scope, receive, send)
            start = next(m for m in sent if m["type"] == "http.response.start")
            body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
            return Reply(
                start["status"],
                {k.decode("latin-1"): v.decode("latin-1") for k, v in start.get("headers", [])},
                body,
            )

        reply = self.run(go)
        self.seen.append(reply)
        return reply

    # ---- the database, on the app's own loop --------------------------------------------------
    def run(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        return self.client.portal.call(fn, *args)  # type: ignore[union-attr]

    def query(self, stmt: Any) -> list[tuple[Any, ...]]:
        async def go() -> list[tuple[Any, ...]]:
            async with self.rt.engine.connect() as conn:
                return [tuple(r) for r in (await conn.execute(stmt)).all()]

        return list(self.run(go))

    def execute(self, stmt: Any) -> int:
        async def go() -> int:
            async with self.rt.engine.begin() as conn:
                return int((await conn.execute(stmt)).rowcount)

        return int(self.run(go))

    def audit_for(self, request_id: str) -> list[dict[str, Any]]:
        async def go() -> list[dict[str, Any]]:
            async with self.rt.engine.connect() as conn:
                rows = await conn.execute(select(audit_events).where(audit_events.c.request_id == request_id))
                return [dict(r._mapping) for r in rows.all()]

        return list(self.run(go))

    def all_audit(self) -> list[dict[str, Any]]:
        async def go() -> list[dict[str, Any]]:
            async with self.rt.engine.connect() as conn:
                rows = await conn.execute(select(audit_events).order_by(audit_events.c.id))
                return [dict(r._mapping) for r in rows.all()]

        return list(self.run(go))

    def one_audit(self, request_id: str) -> dict[str, Any]:
        rows = self.audit_for(request_id)
        assert len(rows) == 1, rows
        return rows[0]

    def stored(self) -> list[tuple[Any, ...]]:
        """Every secrets and secret_versions row, for "nothing changed" comparisons."""
        return self.query(select(secrets_table).order_by(secrets_table.c.id)) + self.query(
            select(secret_versions).order_by(secret_versions.c.id)
        )

    def version_row(self, env: str, name: str, version: int, project: str = PROJECT) -> dict[str, Any]:
        """The secret_versions row (as a dict) of project/env/name at `version`."""
        stmt = (
            select(secret_versions)
            .join(secrets_table, secrets_table.c.id == secret_versions.c.secret_id)
            .join(environments, environments.c.id == secrets_table.c.environment_id)
            .join(projects, projects.c.id == environments.c.project_id)
            .where(
                projects.c.slug == project,
                environments.c.slug == env,
                secrets_table.c.name == name,
                secret_versions.c.version == version,
            )
        )

        async def go() -> list[dict[str, Any]]:
            async with self.rt.engine.connect() as conn:
                return [dict(r._mapping) for r in (await conn.execute(stmt)).all()]

        rows = self.run(go)
        assert len(rows) == 1, rows
        return dict(rows[0])

    def set_version_row(self, row_id: int, **values: Any) -> None:
        assert (
            self.execute(update(secret_versions).where(secret_versions.c.id == row_id).values(**values)) == 1
        )


@pytest.fixture
def api(client: TestClient, runtime: Runtime, admin: dict[str, str]) -> Api:
    """Project `microblog` with `common` and `production` (inherits common), as the bootstrap admin."""
    a = Api(client=client, rt=runtime, h=admin)
    a.make_project(PROJECT)
    a.make_env("common")
    a.make_env("production", parent="common")
    return a


def random_value() -> str:
    """A random 24-byte value as upper-case hex (upper case so it cannot collide with the lower-case
    hex ids the broker stores, such as request ids)."""
    return secrets.token_hex(24).upper()


def problem(r: httpx.Response | Reply, status: int) -> dict[str, Any]:
    """Assert a problem-JSON reply with this status and return its body."""
    code = r.status_code if isinstance(r, httpx.Response) else r.status
    assert code == status, (code, r.text)
    assert r.headers["content-type"].startswith("application/problem+json"), r.headers
    body = r.json()
    assert body["status"] == status
    assert body["request_id"] == r.headers["x-request-id"]
    return dict(body)
