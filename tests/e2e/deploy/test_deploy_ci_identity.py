"""Journey 3 end to end with OIDC: CI deploys holding no stored credential at all, never an admin token.

The session's broker trusts a loopback issuer as GitHub Actions (tests/support/oidc_issuer.py, configured in
conftest.py), with a role that lets one repository's `production` jobs read `production` of this journey's
project. The CI job does what a GitHub Actions pipeline does: a login step whose environment holds only the
platform's ID token (`strongroom login --oidc ROLE` exchanges it), then `strongroom deploy -e production` in an
environment with no STRONGROOM_TOKEN, no ID token, no client secret and no broker data directory: the
short-lived cached session is all it has. The deploy reaches web1, the container sees the values and the
ledger names the OIDC principal. The same job deploying `staging` is refused with a 403 before anything runs.
No client secret exists anywhere and the job's home holds nothing but the 0600 session. Everything is real:
broker, CLI, issuer, sshd, engines, registry. The journey has a project of its own, so the other modules'
`shop` environments are left as they expect.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from joserfc import jwt

from tests.e2e.conftest import BIN
from tests.e2e.deploy.conftest import (
    CI_PROJECT,
    CI_REPOSITORY,
    CI_ROLE,
    OIDC_AUDIENCE,
    DeployBroker,
    canary,
    health_file,
    manifest,
    service_containers,
)
from tests.support import deploy_lab
from tests.support.oidc_issuer import LabIssuer

pytestmark = pytest.mark.e2e

PROJECT = CI_PROJECT
SERVICE = "ci-identity"
HOST = "web1"
GITHUB = "https://token.actions.githubusercontent.com"
SUBJECT = f"repo:{CI_REPOSITORY}:environment:production"
PRINCIPAL = f"oidc:github:{SUBJECT}"  # how the broker names a job that logged in with OIDC


@dataclass
class Pipeline:
    """The CI side: the platform's ID token, the job's home and the directory it deploys from."""

    id_token: str
    home: Path
    root: Path
    values: dict[str, dict[str, str]]

    def env(self, lab: deploy_lab.Lab, broker: DeployBroker, **extra: str) -> dict[str, str]:
        """A CI job's environment: the broker's URL, the lab's ssh and docker, its own home; no token."""
        environ = {
            **lab.env(),
            "PATH": f"{lab.shims}:{BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "HOME": str(self.home),
            "XDG_CONFIG_HOME": str(self.home / ".config"),
            "LANG": "C.UTF-8",
            "STRONGROOM_URL": broker.process.url,
            **extra,
        }
        assert "STRONGROOM_TOKEN" not in environ and "STRONGROOM_DATA_DIR" not in environ
        return environ


@dataclass
class Step:
    """One CLI run of the CI job: its result, its environment and the docker/ssh calls it made."""

    out: subprocess.CompletedProcess[str]
    env: dict[str, str]
    calls: list[deploy_lab.Call]


def step(
    lab: deploy_lab.Lab, environ: dict[str, str], *args: str, cwd: Path, stdin: bytes | None = None
) -> Step:
    """Run `strongroom ARGS` as a CI step with exactly `environ`, recording only its own calls."""
    lab.forget_calls()
    done = subprocess.run(
        [str(BIN / "strongroom"), *args],
        input=stdin,
        env=environ,
        cwd=cwd,
        capture_output=True,
        timeout=180,
        check=False,
    )
    out = subprocess.CompletedProcess(done.args, done.returncode, done.stdout.decode(), done.stderr.decode())
    return Step(out, environ, lab.calls())


def admin(broker: DeployBroker, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """An admin call to the broker that must succeed; its JSON body (None for 204)."""
    r = broker.http.request(method, path, json=body)
    assert r.status_code in (200, 201, 204), (method, path, r.status_code, r.text)
    return r.json() if r.status_code != 204 else None


def containers(lab: deploy_lab.Lab) -> dict[str, list[tuple[str, str, str]]]:
    """Per host: (id, name, started at) of every container of the service, running or not."""
    return {
        alias: [
            (c["Id"], c["Name"], c["State"]["StartedAt"]) for c in service_containers(lab, alias, SERVICE)
        ]
        for alias in lab.hosts
    }


@pytest.fixture(scope="module")
def pipeline(
    lab: deploy_lab.Lab,
    deploy_broker: DeployBroker,
    oidc_issuer: LabIssuer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Pipeline:
    """Project ci-journey (production and staging, same keys), the job's ID token, and the deploy's directory."""
    admin(deploy_broker, "POST", "/v1/projects", {"slug": PROJECT})
    values: dict[str, dict[str, str]] = {}
    for env in ("production", "staging"):
        admin(deploy_broker, "POST", f"/v1/projects/{PROJECT}/environments", {"slug": env, "parent": None})
        values[env] = {
            "APP_SECRET": canary(f"CI{env.upper()}"),
            "BUILD_TOKEN": canary(f"CIBUILD{env.upper()}"),
            "REGISTRY_PASSWORD": lab.registry.password,
        }
        for key, value in values[env].items():
            admin(
                deploy_broker,
                "PUT",
                f"/v1/projects/{PROJECT}/environments/{env}/secrets/{key}",
                {"value": value},
            )
    # What GitHub Actions hands a job of CI_REPOSITORY running in its `production` environment.
    now = int(time.time())
    claims = {
        "iss": GITHUB,
        "aud": OIDC_AUDIENCE,
        "sub": SUBJECT,
        "repository": CI_REPOSITORY,
        "environment": "production",
        "ref": "refs/heads/main",
        "jti": secrets.token_hex(8),
        "iat": now,
        "exp": now + 600,
    }
    id_token = jwt.encode({"alg": "RS256", "kid": oidc_issuer.rsa.kid}, claims, oidc_issuer.rsa)
    root = tmp_path_factory.mktemp("ci-deploy")
    deploy_lab.app_context(root, "v1")
    document = yaml.safe_load(manifest(lab, service=SERVICE, hosts=[HOST]))
    document["project"] = PROJECT
    (root / "strongroom.yml").write_text(yaml.safe_dump(document, sort_keys=False))
    home = tmp_path_factory.mktemp("ci-home")
    return Pipeline(id_token, home, root, values)


@pytest.fixture(scope="module")
def logged_in(lab: deploy_lab.Lab, deploy_broker: DeployBroker, pipeline: Pipeline) -> Step:
    """The login step: only the platform's ID token in its environment, exchanged by `login --oidc`."""
    environ = pipeline.env(lab, deploy_broker, STRONGROOM_ID_TOKEN=pipeline.id_token)
    done = step(lab, environ, "login", "--oidc", CI_ROLE, "--json", cwd=pipeline.root)
    assert done.out.returncode == 0, done.out.stderr
    return done


@pytest.fixture(scope="module")
def production(lab: deploy_lab.Lab, deploy_broker: DeployBroker, pipeline: Pipeline, logged_in: Step) -> Step:
    """The deploy step to production: only the cached session of the login step, no secret variable."""
    environ = pipeline.env(lab, deploy_broker)
    return step(lab, environ, "deploy", "-e", "production", "--version", "v1", cwd=pipeline.root)


@pytest.fixture(scope="module")
def staging(
    lab: deploy_lab.Lab, deploy_broker: DeployBroker, pipeline: Pipeline, production: Step
) -> tuple[Step, dict[str, list[tuple[str, str, str]]]]:
    """The same job deploying staging; with every host's containers of the service just before."""
    before = containers(lab)
    environ = pipeline.env(lab, deploy_broker)
    return step(lab, environ, "deploy", "-e", "staging", "--version", "v2", cwd=pipeline.root), before


def test_the_login_step_holds_a_session_of_the_oidc_principal(pipeline: Pipeline, logged_in: Step) -> None:
    said = json.loads(logged_in.out.stdout)
    assert said["principal"]["name"] == PRINCIPAL
    assert pipeline.id_token.split(".")[2] not in logged_in.out.stdout + logged_in.out.stderr
    assert logged_in.calls == []  # a login runs no docker and no ssh


def test_no_credential_file_exists_but_the_short_lived_session(pipeline: Pipeline, production: Step) -> None:
    files = sorted(p for p in pipeline.home.rglob("*") if p.is_file())
    assert [p.name for p in files] == ["credentials.json"]
    assert stat.S_IMODE(files[0].stat().st_mode) == 0o600
    # The ID token is in no file the job left behind (nor is any client secret: none was ever made).
    signature = pipeline.id_token.split(".")[2].encode()
    for path in [*pipeline.home.rglob("*"), *pipeline.root.rglob("*")]:
        if path.is_file():
            assert signature not in path.read_bytes(), path


def test_the_job_deploys_production_and_the_container_sees_its_values(
    lab: deploy_lab.Lab, pipeline: Pipeline, production: Step
) -> None:
    assert production.out.returncode == 0, (production.out.stdout, production.out.stderr)
    [container] = service_containers(lab, HOST, SERVICE)
    assert container["Name"] == f"/{SERVICE}-web-v1"
    assert container["State"]["Health"]["Status"] == "healthy"
    values = pipeline.values["production"]
    assert health_file(lab, HOST, container["Id"]) == deploy_lab.health_line(
        "v1", values["APP_SECRET"], values["BUILD_TOKEN"]
    )
    for other in lab.hosts:
        if other != HOST:
            assert service_containers(lab, other, SERVICE) == [], other


def test_the_ledger_names_the_oidc_principal_as_who_deployed(
    deploy_broker: DeployBroker, pipeline: Pipeline, production: Step
) -> None:
    [listed] = admin(deploy_broker, "GET", f"/v1/projects/{PROJECT}/environments/production/deploys")[
        "deploys"
    ]
    deploy = admin(deploy_broker, "GET", f"/v1/deploys/{listed['id']}")
    assert (deploy["by"], deploy["status"], deploy["version"]) == (
        PRINCIPAL,
        "succeeded",
        "v1",
    )
    assert {h["host"]: h["outcome"] for h in deploy["hosts"]} == {HOST: "deployed"}
    assert {k["name"] for k in deploy["keys"]} == {"APP_SECRET", "BUILD_TOKEN", "REGISTRY_PASSWORD"}
    # The deploy token was the job's session's child, and is dead now.
    tokens = admin(deploy_broker, "GET", "/v1/tokens?include_inactive=true&limit=1000")["tokens"]
    minted = [t for t in tokens if t["principal"]["name"] == PRINCIPAL and t["num_uses"] is not None]
    assert len(minted) == 1, minted
    assert minted[0]["revoked"] is True


def test_no_admin_credential_or_id_token_reaches_the_deploy_or_its_children(
    deploy_broker: DeployBroker, pipeline: Pipeline, production: Step
) -> None:
    bootstrap = (deploy_broker.process.data_dir / "bootstrap-admin.secret").read_text().strip()
    environment = "\0".join(f"{k}={v}" for k, v in production.env.items())
    for credential in (deploy_broker.token, bootstrap, pipeline.id_token):
        assert credential not in environment
    assert production.calls, "the deploy's docker and ssh calls were not recorded"
    watched = [
        deploy_broker.token,
        bootstrap,
        pipeline.id_token,
        *pipeline.values["production"].values(),
    ]
    for call in production.calls:
        text = "\0".join([*call.argv, *(f"{k}={v}" for k, v in call.env.items())])
        for value in watched:
            assert value not in text, f"a credential in {call.program} {call.argv[:3]} on {call.where}"
    for value in watched:
        assert value not in production.out.stdout + production.out.stderr


def test_the_same_job_is_refused_staging_with_a_403_before_anything_runs(
    lab: deploy_lab.Lab,
    deploy_broker: DeployBroker,
    pipeline: Pipeline,
    staging: tuple[Step, dict[str, list[tuple[str, str, str]]]],
) -> None:
    refused, before = staging
    assert refused.out.returncode == 1, (refused.out.stdout, refused.out.stderr)
    said = refused.out.stderr
    assert said.startswith("Error: ") and f"does not grant read on {PROJECT}/staging" in said, said
    # Nothing ran: no docker, no ssh, here or on a host; no build, no container, no ledger row.
    assert [(c.where, c.program, c.argv[:2]) for c in refused.calls] == []
    assert before[HOST] and containers(lab) == before  # production's container, and nothing new
    assert (
        admin(deploy_broker, "GET", f"/v1/projects/{PROJECT}/environments/staging/deploys")["deploys"] == []
    )
    for value in pipeline.values["staging"].values():
        assert value not in refused.out.stdout + said
    # The broker answered 403 to that job's principal, from loopback, and recorded it.
    refusals = [
        (e["method"], e["status"], e["source_addr"])
        for e in deploy_broker.audit()
        if (e["actor_name"], e["project"], e["environment"]) == (PRINCIPAL, PROJECT, "staging")
    ]
    assert refusals == [("POST", 403, "127.0.0.1")], refusals
