"""Issue 15 end to end against a real broker process and the real CLI.

- An admin manages a machine identity with `strongroom identities` only (no curl): created with its secret
  written 0600 to a file, logged in with, rotated with a grace period (both secrets work, then only the
  new one), disabled, enabled, deleted.
- Journey 3 with OIDC: the CI job holds no stored credential. A small issuer on loopback
  (tests/support/oidc_issuer.py) signs the job's ID token; `strongroom login --oidc` exchanges it for a
  token scoped by the role's claims, which reads production and is refused staging. The ID token never
  appears in any output or in the broker's log, and the job's home holds nothing but the 0600 session.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from joserfc import jwt

from tests.e2e.conftest import BrokerProcess, start, stop
from tests.support.oidc_issuer import LabIssuer

pytestmark = pytest.mark.e2e

GITHUB = "https://token.actions.githubusercontent.com"


def ok(out: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert out.returncode == 0, (out.args, out.stdout, out.stderr)
    return out


@pytest.fixture
def lab() -> Iterator[LabIssuer]:
    issuer = LabIssuer()
    yield issuer
    issuer.stop()


@pytest.fixture
def admin(tmp_path: Path, lab: LabIssuer) -> Iterator[BrokerProcess]:
    """A broker trusting the lab issuer as GitHub, the admin logged in, project microblog with envs."""
    oidc = tmp_path / "oidc.json"
    oidc.write_text(
        json.dumps(
            {
                "format": "strongroom-oidc/1",
                "issuers": {
                    "github": {
                        "preset": "github",
                        "jwks_url": lab.url,
                        "audience": "https://strongroom.test",
                        "allow_networks": ["127.0.0.1/32"],
                    }
                },
                "roles": {
                    "microblog-production": {
                        "issuer": "github",
                        "bound_claims": {"repository": "acme/microblog", "environment": "production"},
                        "scopes": [
                            {"project": "microblog", "environments": "production", "actions": ["read"]}
                        ],
                    }
                },
            }
        )
    )
    oidc.chmod(0o600)
    broker = start(
        tmp_path / "data",
        tmp_path / "home" / ".config",
        tmp_path / "broker.log",
        server_env={"STRONGROOM_OIDC_FILE": str(oidc)},
    )
    try:
        secret_file = broker.data_dir / "bootstrap-admin.secret"
        ok(
            broker.cli(
                "login", "--url", broker.url, "--client-id", "admin", "--secret-file", str(secret_file)
            )
        )
        ok(broker.cli("projects", "create", "microblog"))
        ok(broker.cli("envs", "create", "-p", "microblog", "common"))
        ok(broker.cli("envs", "create", "-p", "microblog", "staging", "--parent", "common"))
        ok(broker.cli("envs", "create", "-p", "microblog", "production", "--parent", "common"))
        yield broker
    finally:
        stop(broker)


def _ci_env(broker: BrokerProcess, home: Path) -> dict[str, str]:
    home.mkdir(parents=True)
    return {"HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config")}


def test_an_identity_lives_its_whole_life_through_the_cli(admin: BrokerProcess, tmp_path: Path) -> None:
    first = tmp_path / "ci.secret"
    created = ok(
        admin.cli(
            "identities",
            "create",
            "ci",
            "--client-id",
            "ci-deployer",
            "--scope",
            "microblog:production:read",
            "--secret-file",
            str(first),
            "--json",
        )
    )
    assert json.loads(created.stdout)["client_id"] == "ci-deployer"
    assert stat.S_IMODE(first.stat().st_mode) == 0o600
    old = first.read_text().strip()
    ci = _ci_env(admin, tmp_path / "ci-home")

    def login(secret: str) -> subprocess.CompletedProcess[str]:
        return admin.cli(
            "login", "--url", admin.url, "--client-id", "ci-deployer", input=secret.encode(), env=ci
        )

    ok(login(old))
    second = tmp_path / "ci2.secret"
    ok(admin.cli("identities", "rotate-secret", "ci-deployer", "--grace", "1h", "--secret-file", str(second)))
    new = second.read_text().strip()
    ok(login(old))  # within the grace period
    ok(login(new))
    ok(admin.cli("identities", "rotate-secret", "ci-deployer", "--secret-file", str(second)))
    assert login(new).returncode != 0  # no grace: the previous secret is refused at once
    newest = second.read_text().strip()
    ok(login(newest))
    ok(admin.cli("identities", "disable", "ci-deployer"))
    assert login(newest).returncode != 0
    ok(admin.cli("identities", "enable", "ci-deployer"))
    ok(login(newest))
    ok(admin.cli("identities", "delete", "ci-deployer"))
    assert login(newest).returncode != 0
    assert "ci-deployer" not in ok(admin.cli("identities", "list")).stdout
    events = ok(admin.cli("audit", "list", "--action", "identity.*", "--json")).stdout
    for action in (
        "identity.create",
        "identity.rotate-secret",
        "identity.disable",
        "identity.enable",
        "identity.delete",
    ):
        assert action in events
    for secret in (old, new, newest):
        assert all(secret not in out for out in admin.outputs)
        assert secret not in admin.server_output()


def test_journey_3_with_oidc_needs_no_stored_credential(
    admin: BrokerProcess, lab: LabIssuer, tmp_path: Path
) -> None:
    value = f"CANARY{secrets.token_hex(12)}"
    ok(admin.cli("secrets", "set", "-p", "microblog", "-e", "production", "API_KEY", input=value.encode()))
    now = int(time.time())
    claims = {
        "iss": GITHUB,
        "aud": "https://strongroom.test",
        "sub": "repo:acme/microblog:environment:production",
        "repository": "acme/microblog",
        "environment": "production",
        "jti": secrets.token_hex(8),
        "iat": now,
        "exp": now + 300,
    }
    id_token = jwt.encode({"alg": "RS256", "kid": lab.rsa.kid}, claims, lab.rsa)
    home = tmp_path / "ci-home"
    ci = {**_ci_env(admin, home), "STRONGROOM_ID_TOKEN": id_token}

    out = ok(admin.cli("login", "--url", admin.url, "--oidc", "microblog-production", env=ci))
    assert "oidc:github:repo:acme/microblog:environment:production" in out.stdout
    run = ok(admin.cli("run", "-p", "microblog", "-e", "production", "--", "printenv", "API_KEY", env=ci))
    assert run.stdout.strip() == value
    refused = admin.cli("secrets", "list", "-p", "microblog", "-e", "staging", env=ci)
    assert refused.returncode != 0 and "does not grant" in refused.stderr
    # The same ID token cannot be exchanged twice (jti).
    assert admin.cli("login", "--url", admin.url, "--oidc", "microblog-production", env=ci).returncode != 0
    assert all(id_token not in o and id_token.split(".")[2] not in o for o in admin.outputs)
    assert id_token.split(".")[2] not in admin.server_output()
    files = [p for p in home.rglob("*") if p.is_file()]
    assert [p.name for p in files] == ["credentials.json"]
    assert stat.S_IMODE(files[0].stat().st_mode) == 0o600
    assert os.environ.get("STRONGROOM_TOKEN") is None
