"""Fixtures for the deploy routes: the auth tests' broker (fake clocks, SQLite and PostgreSQL) with a project
`shop` whose `production` inherits `common`, a manifest with two roles and tagged hosts, and canary values."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.integration.auth.conftest import (  # noqa: F401 (fixtures re-exported)
    Broker,
    Login,
    admin,
    admin_login,
    auth_pg_database,
    bearer,
    broker,
    client,
    clock,
    db_url,
    mono,
    runtime,
    scope,
    sensitive,
)

PROJECT = "shop"
ENV = "production"
BASE = f"/v1/projects/{PROJECT}/environments"

MANIFEST = """\
project: shop
service: shop
image: registry.example.com/acme/shop
registry:
  server: registry.example.com
  username: deployer
  password: REGISTRY_PASSWORD
builder:
  secrets: [BUILD_TOKEN]
  args:
    RUBY_VERSION: "3.3"
healthcheck:
  path: /up
  port: 3000
roles:
  web:
    hosts:
      - web1
      - host: web2
        tags: [eu]
    options:
      network: host
  job:
    hosts: [job1]
    cmd: bin/jobs
    env:
      secret: [JOB_KEY]
env:
  clear:
    RAILS_ENV: production
    DATABASE_URL: postgres://app:${DB_PASSWORD}@db/app
  secret: [SECRET_KEY_BASE]
  tags:
    eu:
      clear:
        REGION: eu
      secret: [EU_KEY]
deploy:
  retain_images: 3
  stop_timeout: 7
"""


@dataclass
class Shop:
    """The seeded project: values by name (each holds the canary), and helpers over the deploy routes."""

    broker: Broker
    values: dict[str, str]
    canary: str

    @property
    def client(self) -> Any:
        return self.broker.client

    def put(self, env: str, name: str, value: str) -> None:
        r = self.client.put(
            f"{BASE}/{env}/secrets/{name}", json={"value": value}, headers=self.broker.admin.headers
        )
        assert r.status_code == 200, r.text

    def start(self, token: str, **body: Any) -> httpx.Response:
        payload = {"manifest": MANIFEST, "version": "v1", **body}
        r: httpx.Response = self.client.post(f"{BASE}/{ENV}/deploys", json=payload, headers=bearer(token))
        return r

    def started(self, token: str, **body: Any) -> dict[str, Any]:
        r = self.start(token, **body)
        assert r.status_code == 201, r.text
        out: dict[str, Any] = r.json()
        return out

    def call(self, method: str, path: str, token: str, body: Any = None) -> httpx.Response:
        r: httpx.Response = self.client.request(method, path, json=body, headers=bearer(token))
        return r


@pytest.fixture
def shop(broker: Broker, canary: str) -> Shop:  # noqa: F811 (the imported fixture)
    h = broker.admin.headers
    c = broker.client
    assert c.post("/v1/projects", json={"slug": PROJECT}, headers=h).status_code == 201
    assert c.post(BASE, json={"slug": "common"}, headers=h).status_code == 201
    assert c.post(BASE, json={"slug": ENV, "parent": "common"}, headers=h).status_code == 201
    shop = Shop(broker, {}, canary)
    for env, name in (
        ("common", "DB_PASSWORD"),
        (ENV, "SECRET_KEY_BASE"),
        (ENV, "JOB_KEY"),
        (ENV, "EU_KEY"),
        (ENV, "REGISTRY_PASSWORD"),
        (ENV, "BUILD_TOKEN"),
        (ENV, "OUTSIDE_PLAN"),
    ):
        value = f"{canary}-{name}"
        shop.put(env, name, value)
        shop.values[name] = value
    return shop
