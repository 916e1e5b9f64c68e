"""End-to-end of the core API through the app, on SQLite and PostgreSQL."""

from __future__ import annotations

from fastapi.testclient import TestClient


def test_store_and_read_back(client: TestClient, admin: dict[str, str], canary: str) -> None:
    h = admin
    assert client.post("/v1/projects", json={"slug": "microblog"}, headers=h).status_code == 201
    assert (
        client.post("/v1/projects/microblog/environments", json={"slug": "common"}, headers=h).status_code
        == 201
    )
    r = client.post(
        "/v1/projects/microblog/environments", json={"slug": "production", "parent": "common"}, headers=h
    )
    assert r.status_code == 201, r.text
    base = "/v1/projects/microblog/environments"
    r = client.put(f"{base}/common/secrets/DB_PASSWORD", json={"value": canary}, headers=h)
    assert r.status_code == 200, r.text
    assert canary not in r.text
    r = client.get(f"{base}/production/resolved", headers=h)
    assert r.status_code == 200, r.text
    assert r.json()["values"]["DB_PASSWORD"] == {
        "value": canary,
        "version": 1,
        "environment": "common",
        "sensitive": True,
    }
    assert r.headers["cache-control"] == "no-store"
    r = client.get(f"{base}/common/secrets/DB_PASSWORD", headers=h)
    assert r.json()["value"] == canary
