"""Fixtures of the deploy end-to-end package: one lab and one broker process for the whole session.

The lab (tests/support/deploy_lab.py) is a build engine, a registry and two ssh hosts with their own engines,
all real and on loopback; the broker is a real `strongroom-server serve` (tests/e2e/conftest.py). Without
root, dockerd, sshd or docker-registry the tests skip, and fail under CI=true (tests/conftest.py `need`).
"""

from __future__ import annotations

import json
import secrets
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import need
from tests.e2e.conftest import BIN, BrokerProcess, start, stop
from tests.support import deploy_lab
from tests.support.oidc_issuer import LabIssuer

PROJECT = "shop"

# Journey 3 (test_deploy_ci_identity.py): CI logs in with its platform's OIDC ID token, signed by a loopback
# issuer the session's broker trusts as GitHub Actions; this role lets the job's repository read production.
CI_PROJECT = "ci-journey"
CI_ROLE = "ci-journey-production"
CI_REPOSITORY = "acme/ci-journey"
OIDC_AUDIENCE = "https://strongroom.test"


def canary(label: str) -> str:
    """A random marker value (with a space and shell metacharacters) that must never leak."""
    return f"{label}CANARY{secrets.token_hex(10)} x&y'z"


@dataclass
class DeployBroker:
    """The session's broker, an admin token for it and helpers to set up environments and read results."""

    process: BrokerProcess
    token: str
    http: httpx.Client
    environments: set[str] = field(default_factory=set)

    def environment(self, name: str, values: dict[str, str]) -> None:
        """Create environment `name` of the project (once) and store `values` in it."""
        if name not in self.environments:
            r = self.http.post(f"/v1/projects/{PROJECT}/environments", json={"slug": name, "parent": None})
            assert r.status_code == 201, r.text
            self.environments.add(name)
        for key, value in values.items():
            self.put(name, key, value)

    def put(self, environment: str, key: str, value: str) -> int:
        """Store a value; returns its new version."""
        r = self.http.put(
            f"/v1/projects/{PROJECT}/environments/{environment}/secrets/{key}", json={"value": value}
        )
        assert r.status_code == 200, r.text
        return int(r.json()["version"])

    def deploys(self, environment: str) -> list[dict[str, Any]]:
        """The environment's deploys, newest first."""
        r = self.http.get(f"/v1/projects/{PROJECT}/environments/{environment}/deploys")
        assert r.status_code == 200, r.text
        return list(r.json()["deploys"])

    def deploy(self, deploy_id: str) -> dict[str, Any]:
        """One deploy with its host ledger and keys."""
        r = self.http.get(f"/v1/deploys/{deploy_id}")
        assert r.status_code == 200, r.text
        return dict(r.json())

    def audit(self) -> list[dict[str, Any]]:
        """Every audit event so far, oldest first, read from the broker's SQLite file."""
        import sqlite3

        with sqlite3.connect(self.process.data_dir / "strongroom.db") as db:
            db.row_factory = sqlite3.Row
            return [dict(row) for row in db.execute("SELECT * FROM audit_events ORDER BY id")]


@pytest.fixture(scope="session")
def lab() -> Iterator[deploy_lab.Lab]:
    """The session's deploy lab (started once, engines in parallel)."""
    reason = deploy_lab.missing()
    if reason:
        need(reason)
    with deploy_lab.lab() as running:
        yield running


@pytest.fixture(scope="session")
def oidc_issuer() -> Iterator[LabIssuer]:
    """A JWKS endpoint on loopback that signs CI jobs' ID tokens (tests/support/oidc_issuer.py)."""
    issuer = LabIssuer()
    try:
        yield issuer
    finally:
        issuer.stop()


def _oidc_file(root: Path, issuer: LabIssuer) -> Path:
    """The broker's OIDC configuration: the lab issuer as GitHub, and journey 3's role."""
    path = root / "oidc.json"
    path.write_text(
        json.dumps(
            {
                "format": "strongroom-oidc/1",
                "issuers": {
                    "github": {
                        "preset": "github",
                        "jwks_url": issuer.url,
                        "audience": OIDC_AUDIENCE,
                        "allow_networks": ["127.0.0.1/32"],
                    }
                },
                "roles": {
                    CI_ROLE: {
                        "issuer": "github",
                        "bound_claims": {"repository": CI_REPOSITORY, "environment": "production"},
                        "scopes": [
                            {"project": CI_PROJECT, "environments": "production", "actions": ["read"]}
                        ],
                        "ttl": 900,
                    }
                },
            }
        )
    )
    path.chmod(0o600)
    return path


@pytest.fixture(scope="session")
def deploy_broker(tmp_path_factory: pytest.TempPathFactory, oidc_issuer: LabIssuer) -> Iterator[DeployBroker]:
    """A real broker process with project `shop`, and an admin token (not use-limited: it mints deploy tokens).

    It trusts the loopback OIDC issuer, for journey 3's CI login."""
    root = tmp_path_factory.mktemp("deploy-broker")
    process = start(
        root / "data",
        root / "home" / ".config",
        root / "broker.log",
        server_env={"STRONGROOM_OIDC_FILE": str(_oidc_file(root, oidc_issuer))},
    )
    try:
        client_secret = (process.data_dir / "bootstrap-admin.secret").read_text().strip()
        # The broker's longest TTL: the session's deploys cut their 900 s tokens to what this token has
        # left (and refuse under 180 s), so a 1 h token changed their output once a loaded run of the lab
        # group passed 45 minutes.
        r = httpx.post(
            f"{process.url}/v1/auth/token",
            json={"client_id": "admin", "client_secret": client_secret, "ttl": 8 * 3600},
        )
        assert r.status_code == 200, r.text
        token = r.json()["token"]
        with httpx.Client(
            base_url=process.url, headers={"Authorization": f"Bearer {token}"}, timeout=30
        ) as http:
            assert http.post("/v1/projects", json={"slug": PROJECT}).status_code == 201
            yield DeployBroker(process, token, http)
    finally:
        stop(process)


@pytest.fixture(autouse=True)
def _fresh_calls(request: pytest.FixtureRequest) -> None:
    """Tests that look at recorded calls see only their own (module fixtures keep theirs separately)."""
    if "lab" in request.fixturenames:
        request.getfixturevalue("lab").forget_calls()


def strongroom(
    lab: deploy_lab.Lab,
    broker: DeployBroker,
    *args: str,
    cwd: Path,
    url: str | None = None,
    timeout: float = 180,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the real `strongroom` CLI as a deployer's shell would, through the lab's ssh and docker."""
    environ = {
        **broker.process.env,
        **lab.env(),
        "PATH": f"{lab.shims}:{broker.process.env['PATH']}",
        "STRONGROOM_URL": url or broker.process.url,
        "STRONGROOM_TOKEN": broker.token,
        "HOME": str(cwd),
        **(env or {}),
    }
    done = subprocess.run(
        [str(BIN / "strongroom"), *args],
        env=environ,
        cwd=cwd,
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    return subprocess.CompletedProcess(done.args, done.returncode, done.stdout.decode(), done.stderr.decode())


def manifest(
    lab: deploy_lab.Lab,
    *,
    service: str,
    hosts: list[str],
    secret: tuple[str, ...] = ("APP_SECRET",),
    build_secrets: tuple[str, ...] = ("BUILD_TOKEN",),
    ssh_port: bool = True,
    host_keys: dict[str, list[str]] | None = None,
    healthcheck: dict[str, Any] | None = None,
) -> str:
    """A strongroom.yml deploying the lab app (context: the manifest's directory) to `hosts`.

    The default health check gives a healthy version generous time; a version that must fail passes its own
    short `healthcheck` so the test does not wait out 20 s for the expected failure."""
    document: dict[str, Any] = {
        "project": PROJECT,
        "service": service,
        "image": lab.image,
        "registry": {
            "server": lab.registry.server,
            "username": lab.registry.username,
            "password": "REGISTRY_PASSWORD",
        },
        "builder": {"context": ".", "dockerfile": "Dockerfile", "secrets": list(build_secrets)},
        "roles": {"web": {"hosts": hosts, "options": {"network": "host"}}},
        "healthcheck": healthcheck or {"cmd": deploy_lab.HEALTH_CMD, "interval": 1, "timeout": 20},
        "env": {"clear": {"APP_MODE": "e2e"}, "secret": list(secret)},
    }
    if ssh_port:
        # Every lab host listens on this port (each on its own loopback address): see deploy_lab.
        document["ssh"] = {"port": lab.ssh_port}
    if host_keys:
        document.setdefault("ssh", {})["host_keys"] = host_keys
    return str(yaml.safe_dump(document, sort_keys=False))


def project_dir(root: Path, lab: deploy_lab.Lab, version: str, **manifest_args: Any) -> Path:
    """A directory holding the app's build context for `version` and its strongroom.yml."""
    deploy_lab.app_context(root, version)
    (root / "strongroom.yml").write_text(manifest(lab, **manifest_args))
    return root


@dataclass
class Run:
    """One CLI run: its result and every docker/ssh call it made (local and on the hosts)."""

    out: subprocess.CompletedProcess[str]
    calls: list[deploy_lab.Call]
    seconds: float


def run(
    lab: deploy_lab.Lab,
    broker: DeployBroker,
    *args: str,
    cwd: Path,
    url: str | None = None,
    env: dict[str, str] | None = None,
) -> Run:
    """Run the CLI with a clean call log and keep what it did."""
    lab.forget_calls()
    started = time.monotonic()
    out = strongroom(lab, broker, *args, cwd=cwd, url=url, env=env)
    return Run(out, lab.calls(), time.monotonic() - started)


def service_containers(lab: deploy_lab.Lab, alias: str, service: str) -> list[dict[str, Any]]:
    """`docker inspect` of every container (running or not) of `service` on a host's engine."""
    host = lab.hosts[alias]
    ids = host.docker("ps", "-aq", "--filter", f"label=strongroom.service={service}").stdout.decode().split()
    return list(json.loads(host.docker("inspect", *ids).stdout)) if ids else []


def health_file(lab: deploy_lab.Lab, alias: str, container: str) -> str:
    """What the app in `container` wrote to /tmp/health, read with `docker exec` on that host's engine."""
    return lab.hosts[alias].docker("exec", container, "cat", "/tmp/health").stdout.decode()


def ok(out: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    """Assert the CLI exited 0, showing its output when not."""
    assert out.returncode == 0, (out.args, out.stdout, out.stderr)
    return out
