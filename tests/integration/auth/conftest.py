"""Fixtures for the authentication and authorization tests (SECURITY.md C15-C21, D22, D26, J56).

Time is never slept: `runtime.clock` (UTC wall clock) and the failure limiter's clock (seconds) are
replaced by fake clocks the tests advance. Settings for one test come from the marker
`@pytest.mark.broker_settings(**overrides)`. The default failure limit is raised to 1000 here so that
tests which provoke many failures on purpose are not cut short by 429s; the rate-limit tests set their
own small limit.

The `broker` fixture records every token, client secret and bearer credential that crosses the test
client, and on teardown checks that none of them appears in any audit_events row.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import MetaData, select

from broker.main import build_runtime, create_app
from broker.models import audit_events
from broker.services.auth import bootstrap_admin
from broker.services.runtime import Runtime
from tests.conftest import make_settings, sqlite_db
from tests.support import pg

DEFAULT_OVERRIDES: dict[str, Any] = {"auth_failure_limit": 1000, "auth_failure_window": 60}
ALL_ACTIONS = ["admin", "audit", "read", "write"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "broker_settings(**kw): Settings overrides for the auth tests' broker")


class FakeClock:
    """A UTC wall clock that moves only when told to."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class FakeMonotonic:
    """A monotonic clock (seconds as float) that moves only when told to."""

    def __init__(self) -> None:
        self.now = 10_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# -- databases: SQLite as in tests/conftest.py; on PostgreSQL one database for this folder, emptied per test
# (CREATE DATABASE per test costs ~0.3 s each, an emptied database ~0.05 s) --

_TRUNCATE_ALL = """
SET lock_timeout = '10s';
DO $$
DECLARE names text;
BEGIN
  SELECT string_agg(format('%I', tablename), ', ') INTO names
    FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'alembic_version';
  EXECUTE 'TRUNCATE ' || names || ' RESTART IDENTITY CASCADE';
END $$;
"""


@pytest.fixture(scope="session")
def auth_pg_database(pg_cluster: pg.Cluster) -> str:
    name = f"auth_{os.getpid()}_{secrets.token_hex(4)}"
    pg_cluster.psql(f"CREATE DATABASE {name} TEMPLATE strongroom_template")
    return name


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated, empty database: SQLite in tmp_path, or this folder's PostgreSQL database emptied."""
    if request.param == "sqlite":
        # A copy of the session's migrated template, not a migration per test (~0.3 s each, ~80 tests).
        return sqlite_db(tmp_path / "broker.db", request.getfixturevalue("sqlite_template"))
    cluster: pg.Cluster = request.getfixturevalue("pg_cluster")
    name: str = request.getfixturevalue("auth_pg_database")
    cluster.psql(_TRUNCATE_ALL, db=name)
    return cluster.url(name)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime.now(UTC).replace(microsecond=0))


@pytest.fixture
def mono() -> FakeMonotonic:
    return FakeMonotonic()


@pytest.fixture
def runtime(
    db_url: str, tmp_path: Path, request: pytest.FixtureRequest, clock: FakeClock, mono: FakeMonotonic
) -> Runtime:
    """The shared `runtime`, with fake clocks and per-test settings from the broker_settings marker."""
    overrides = dict(DEFAULT_OVERRIDES)
    marker = request.node.get_closest_marker("broker_settings")
    if marker is not None:
        overrides.update(marker.kwargs)
    rt = build_runtime(make_settings(db_url, tmp_path, **overrides))
    rt.clock = clock
    rt.limiter.clock = mono
    return rt


@dataclass
class Sensitive:
    """Every credential seen on the wire during one test; none may reach the audit trail."""

    values: set[str] = field(default_factory=set)
    accessors: set[str] = field(default_factory=set)

    def on_request(self, request: httpx.Request) -> None:
        auth = request.headers.get("authorization", "")
        cred = auth.partition(" ")[2].strip() or auth.strip()
        if len(cred) >= 16:
            self.values.add(cred[:8192])
        if request.url.path == "/v1/auth/token" and request.content:
            try:
                body = json.loads(request.content)
            except ValueError:
                return
            if isinstance(body, dict) and isinstance(body.get("client_secret"), str):
                self.values.add(body["client_secret"])

    def on_response(self, response: httpx.Response) -> None:
        response.read()
        if "json" not in response.headers.get("content-type", ""):
            return
        try:
            body = response.json()
        except ValueError:
            return
        if isinstance(body, dict):
            for key in ("token", "client_secret"):
                if isinstance(body.get(key), str):
                    self.values.add(body[key])
            if isinstance(body.get("accessor"), str):
                self.accessors.add(body["accessor"])

    def secrets(self) -> set[str]:
        # An accessor is not a credential and is audited on purpose, even when (mis)used as a bearer token.
        return {v for v in self.values if v not in self.accessors}


@pytest.fixture
def sensitive() -> Sensitive:
    return Sensitive()


@pytest.fixture
def client(runtime: Runtime, sensitive: Sensitive) -> Iterator[TestClient]:
    """A TestClient on the app from peer 127.0.0.1, recording credentials that cross it."""
    with TestClient(create_app(runtime), client=("127.0.0.1", 50000)) as c:
        c.event_hooks = {"request": [sensitive.on_request], "response": [sensitive.on_response]}
        yield c


@dataclass(frozen=True)
class Login:
    """A client credential and the token it was exchanged for."""

    client_id: str
    client_secret: str
    token: str
    accessor: str
    body: dict[str, Any]

    @property
    def headers(self) -> dict[str, str]:
        return bearer(self.token)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def admin_login(client: TestClient, runtime: Runtime, sensitive: Sensitive) -> Login:
    """Bootstrap the admin through the service, then log in over HTTP."""
    created = client.portal.call(bootstrap_admin, runtime)  # type: ignore[union-attr]
    assert created is not None
    sensitive.values.add(created.client_secret)
    r = client.post("/v1/auth/token", json={"client_id": "admin", "client_secret": created.client_secret})
    assert r.status_code == 200, r.text
    body = r.json()
    return Login("admin", created.client_secret, body["token"], body["accessor"], body)


@pytest.fixture
def admin(admin_login: Login) -> dict[str, str]:
    return admin_login.headers


class Broker:
    """Helpers over one test broker: identities, tokens, audit rows and database dumps."""

    def __init__(
        self,
        client: TestClient,
        runtime: Runtime,
        clock: FakeClock,
        mono: FakeMonotonic,
        admin: Login,
        sensitive: Sensitive,
    ) -> None:
        self.client = client
        self.rt = runtime
        self.clock = clock
        self.mono = mono
        self.admin = admin
        self.sensitive = sensitive

    # -- running coroutines on the app's event loop (the engine is bound to it) --
    def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self.client.portal.call(fn, *args)  # type: ignore[union-attr]

    def peer(self, addr: str) -> TestClient:
        """A client whose ASGI scope says the peer is `addr` (no traffic is sent), on the same event loop."""
        c = TestClient(self.client.app, client=(addr, 1234))
        c.portal = self.client.portal
        c.event_hooks = self.client.event_hooks
        return c

    # -- identities and tokens --
    def identity(
        self,
        scopes: list[dict[str, Any]],
        *,
        name: str = "svc",
        token_ttl: int | None = None,
        token_max_ttl: int | None = None,
        bound_cidrs: list[str] | None = None,
    ) -> dict[str, Any]:
        r = self.client.post(
            "/v1/identities",
            json={
                "name": name,
                "type": "machine",
                "scopes": scopes,
                "token_ttl": token_ttl,
                "token_max_ttl": token_max_ttl,
                "bound_cidrs": bound_cidrs or [],
            },
            headers=self.admin.headers,
        )
        assert r.status_code == 201, r.text
        body: dict[str, Any] = r.json()
        return body

    def exchange(
        self, client_id: str, client_secret: str, *, ttl: int | None = None, via: TestClient | None = None
    ) -> httpx.Response:
        payload: dict[str, Any] = {"client_id": client_id, "client_secret": client_secret}
        if ttl is not None:
            payload["ttl"] = ttl
        r: httpx.Response = (via or self.client).post("/v1/auth/token", json=payload)
        return r

    def login(self, scopes: list[dict[str, Any]], **kw: Any) -> Login:
        """Create an identity with these scopes and exchange its credential for a token."""
        ident = self.identity(scopes, **kw)
        r = self.exchange(ident["client_id"], ident["client_secret"])
        assert r.status_code == 200, r.text
        body = r.json()
        return Login(ident["client_id"], ident["client_secret"], body["token"], body["accessor"], body)

    def child(self, parent: str, **body: Any) -> httpx.Response:
        r: httpx.Response = self.client.post("/v1/tokens", json=body, headers=bearer(parent))
        return r

    def child_token(self, parent: str, **body: Any) -> dict[str, Any]:
        r = self.child(parent, **body)
        assert r.status_code == 201, r.text
        out: dict[str, Any] = r.json()
        return out

    def whoami(self, token: str, via: TestClient | None = None) -> httpx.Response:
        r: httpx.Response = (via or self.client).get("/v1/auth/token/self", headers=bearer(token))
        return r

    # -- audit --
    def audit_rows(self, request_id: str | None = None) -> list[dict[str, Any]]:
        async def go() -> list[dict[str, Any]]:
            async with self.rt.engine.connect() as conn:
                q = select(audit_events).order_by(audit_events.c.id)
                if request_id is not None:
                    q = q.where(audit_events.c.request_id == request_id)
                return [dict(r._mapping) for r in (await conn.execute(q)).all()]

        rows: list[dict[str, Any]] = self.run(go)
        return rows

    def audit_of(self, response: httpx.Response) -> dict[str, Any]:
        """The single audit event of a response (there must be exactly one)."""
        rid = response.headers["x-request-id"]
        rows = self.audit_rows(rid)
        assert len(rows) == 1, f"expected exactly one audit event for {response.request.url}, got {rows}"
        return rows[0]

    def expect_denied(self, response: httpx.Response, status: int) -> dict[str, Any]:
        """The response has this 401/403/429 status and exactly one audit event with outcome denied."""
        assert response.status_code == status, (response.request.method, response.request.url, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        event = self.audit_of(response)
        assert event["outcome"] == "denied", event
        assert event["status"] == status, event
        return event

    # -- database --
    def dump(self) -> dict[str, list[dict[str, Any]]]:
        """Every row of every table, reflected from the live database."""

        async def go() -> dict[str, list[dict[str, Any]]]:
            meta = MetaData()
            async with self.rt.engine.connect() as conn:
                await conn.run_sync(lambda sync: meta.reflect(sync))
                out: dict[str, list[dict[str, Any]]] = {}
                for name, table in meta.tables.items():
                    out[name] = [dict(r._mapping) for r in (await conn.execute(select(table))).all()]
                return out

        dumped: dict[str, list[dict[str, Any]]] = self.run(go)
        return dumped

    def assert_no_leak_in_audit(self) -> None:
        needles = self.sensitive.secrets()
        for row in self.audit_rows():
            text = json.dumps(row, default=str)
            for needle in needles:
                assert needle not in text, f"a credential reached audit event {row['id']}"


def as_text(value: Any) -> bytes:
    """A cell as bytes for substring searches."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if isinstance(value, str):
        return value.encode()
    return json.dumps(value, default=str).encode()


@pytest.fixture
def broker(
    client: TestClient,
    runtime: Runtime,
    clock: FakeClock,
    mono: FakeMonotonic,
    admin_login: Login,
    sensitive: Sensitive,
) -> Iterator[Broker]:
    b = Broker(client, runtime, clock, mono, admin_login, sensitive)
    yield b
    b.assert_no_leak_in_audit()


def scope(project: str, actions: list[str], environments: str = "*") -> dict[str, Any]:
    return {"project": project, "environments": environments, "actions": actions}


def grants(scopes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Scopes as the API returns them, with the default `deny: false` dropped for comparison."""
    return [{k: v for k, v in s.items() if not (k == "deny" and v is False)} for s in scopes]


@dataclass(frozen=True)
class World:
    """Two tenants, each with `common` and `prod` (inheriting from common) and one secret in each."""

    values: dict[str, dict[str, str]]  # project -> "env/NAME" -> value

    def canaries(self, project: str) -> list[str]:
        return list(self.values[project].values())


@pytest.fixture
def world(broker: Broker, canary: str) -> World:
    h = broker.admin.headers
    c = broker.client
    values: dict[str, dict[str, str]] = {}
    for project in ("alpha", "beta"):
        assert (
            c.post(
                "/v1/projects", json={"slug": project, "description": f"{project} desc"}, headers=h
            ).status_code
            == 201
        )
        base = f"/v1/projects/{project}/environments"
        assert c.post(base, json={"slug": "common"}, headers=h).status_code == 201
        assert c.post(base, json={"slug": "prod", "parent": "common"}, headers=h).status_code == 201
        values[project] = {}
        for env, name in (("common", "DB_URL"), ("prod", "API_KEY")):
            value = f"{canary}-{project}-{name}"
            r = c.put(f"{base}/{env}/secrets/{name}", json={"value": value}, headers=h)
            assert r.status_code == 200, r.text
            values[project][f"{env}/{name}"] = value
    return World(values)
