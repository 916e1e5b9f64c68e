"""`deploy list`, `deploy show` and `deploy status --ledger-only` (issue 17) against a real broker process.

The deploys are driven over HTTP as the CLI's engine drives them (start, bundle, one report per host,
finish), with web2 failing the second one, so the ledger views can be checked without ssh hosts; the same
views after real deploys with sshd and dockerd are in tests/e2e/deploy/test_deploy_failures.py.
"""

from __future__ import annotations

import json
import secrets
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import BrokerProcess

pytestmark = pytest.mark.e2e

PROJECT, ENV = "shop", "production"
MANIFEST = """\
project: shop
service: shop
image: registry.example.com/acme/shop
registry:
  server: registry.example.com
  username: deployer
  password: REGISTRY_PASSWORD
roles:
  web:
    hosts: [web1, web2]
env:
  secret: [APP_SECRET]
"""


def ok(out: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert out.returncode == 0, (out.args, out.stdout, out.stderr)
    return out


def deploy(http: httpx.Client, version: str, failed: dict[str, str]) -> str:
    """One deploy of `version` to web1 and web2 as the engine reports it; `failed`: host -> error."""
    r = http.post(
        f"/v1/projects/{PROJECT}/environments/{ENV}/deploys", json={"manifest": MANIFEST, "version": version}
    )
    assert r.status_code == 201, r.text
    started = r.json()
    did, dt = started["deploy"]["id"], {"Authorization": f"Bearer {started['token']}"}
    r = http.post(f"/v1/deploys/{did}/bundle", headers=dt)
    assert r.status_code == 200, r.text
    for item in r.json()["hosts"]:
        error = failed.get(item["host"])
        report: dict[str, Any] = {"host": item["host"], "role": item["role"]}
        if error is None:
            report |= {"outcome": "deployed", "env_fingerprint": item["env_fingerprint"], "container": "c1"}
        else:
            report |= {"outcome": "failed", "error": error}
        assert http.post(f"/v1/deploys/{did}/hosts", json=report, headers=dt).status_code == 201
    outcome = "partial" if failed else "succeeded"
    assert http.post(f"/v1/deploys/{did}/finish", json={"outcome": outcome}, headers=dt).status_code == 200
    return str(did)


def test_deploy_list_show_and_status_after_a_partial_deploy(broker: BrokerProcess, tmp_path: Path) -> None:
    secret_file = broker.data_dir / "bootstrap-admin.secret"
    ok(broker.cli("login", "--url", broker.url, "--client-id", "admin", "--secret-file", str(secret_file)))
    token = httpx.post(
        f"{broker.url}/v1/auth/token",
        json={"client_id": "admin", "client_secret": secret_file.read_text().strip(), "ttl": 900},
    ).json()["token"]
    values = {
        "APP_SECRET": f"CANARY{secrets.token_hex(12)}",
        "REGISTRY_PASSWORD": f"CANARY{secrets.token_hex(12)}",
    }
    with httpx.Client(base_url=broker.url, headers={"Authorization": f"Bearer {token}"}) as http:
        assert http.post("/v1/projects", json={"slug": PROJECT}).status_code == 201
        assert http.post(f"/v1/projects/{PROJECT}/environments", json={"slug": ENV}).status_code == 201
        for name, value in values.items():
            r = http.put(f"/v1/projects/{PROJECT}/environments/{ENV}/secrets/{name}", json={"value": value})
            assert r.status_code == 200, r.text
        first = deploy(http, "v1", {})
        second = deploy(
            http, "v2", {"web2": "web2: unreachable: ssh: connect to host web2 port 22: Connection refused"}
        )
    manifest = tmp_path / "strongroom.yml"
    manifest.write_text(MANIFEST)

    listed = ok(broker.cli("deploy", "list", "-e", ENV, "-f", str(manifest)))
    rows = listed.stdout.splitlines()
    assert rows[0].split() == ["ID", "KIND", "VERSION", "STATUS", "STARTED", "TOOK", "BY"]
    assert rows[1].split()[:4] == [second, "deploy", "v2", "partial"] and rows[2].startswith(first)
    as_json = json.loads(ok(broker.cli("deploy", "list", "-e", ENV, "-p", PROJECT, "--json")).stdout)
    assert [(d["id"], d["status"], d["via"], d["by"]) for d in as_json["deploys"]] == [
        (second, "partial", "ssh", "admin"),
        (first, "succeeded", "ssh", "admin"),
    ]

    shown = json.loads(ok(broker.cli("deploy", "show", second, "--json")).stdout)
    assert {h["host"]: h["outcome"] for h in shown["hosts"]} == {"web1": "deployed", "web2": "failed"}
    assert [(k["host"], k["name"], k["version"]) for k in shown["host_keys"]] == [("web1", "APP_SECRET", 1)]
    assert {k["name"] for k in shown["keys"]} == {"APP_SECRET", "REGISTRY_PASSWORD"}
    table = ok(broker.cli("deploy", "show", second)).stdout
    assert f"deploy of shop v2 to {PROJECT}/{ENV}" in table and "partial" in table and "admin" in table
    assert any(
        line.startswith("web2") and "failed" in line and "Connection refused" in line
        for line in table.splitlines()
    )
    assert shown["host_keys"][0]["fingerprint"] in table
    assert any(line.startswith("-") and "REGISTRY_PASSWORD" in line for line in table.splitlines())
    missing = broker.cli("deploy", "show", "00000000-0000-0000-0000-000000000000")
    assert missing.returncode != 0 and "no such deploy" in missing.stderr

    status = broker.cli("deploy", "status", "-e", ENV, "-f", str(manifest), "--ledger-only", "--json")
    assert status.returncode == 1, status.stdout + status.stderr
    hosts = {h["host"]: h for h in json.loads(status.stdout)["hosts"]}
    assert hosts["web1"]["state"] == "current"
    assert hosts["web2"]["states"] == ["failed", "behind"]
    assert (
        hosts["web2"]["last"]["deploy_id"] == first and hosts["web2"]["last_attempt"]["deploy_id"] == second
    )
    for out in broker.outputs:
        for value in values.values():
            assert value not in out
