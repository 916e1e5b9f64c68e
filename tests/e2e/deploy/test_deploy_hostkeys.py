"""Catalogue G44 end to end: what the real CLI does with host keys, against real sshd hosts.

- a fingerprint pinned in the manifest admits a host that known_hosts does not know (`stranger`, whose
  sessions use web1's engine), and nothing is added to known_hosts;
- a host whose key differs from the one known_hosts remembers is refused with both fingerprints shown,
  before anything is built;
- a host whose key is not the pinned one is refused with both fingerprints shown, before anything is built.
Every ssh the CLI ran had `StrictHostKeyChecking=yes` (no accept-new, no no).
"""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from tests.e2e.deploy.conftest import DeployBroker, Run, canary, project_dir, run, service_containers
from tests.support import deploy_lab, sshd

pytestmark = pytest.mark.e2e

ENV = "keys"


@pytest.fixture(scope="module")
def keys_env(lab: deploy_lab.Lab, deploy_broker: DeployBroker) -> None:
    """Environment `keys` with the values the lab app needs."""
    deploy_broker.environment(
        ENV,
        {
            "APP_SECRET": canary("KEYS"),
            "BUILD_TOKEN": canary("KEYSBUILD"),
            "REGISTRY_PASSWORD": lab.registry.password,
        },
    )


def strict_only(r: Run) -> None:
    """Every ssh connection the CLI made checked host keys strictly."""
    connections = [c for c in r.calls if c.program == "ssh" and "-G" not in c.argv]
    assert connections
    for call in connections:
        checks = [a for a in call.argv if a.startswith("StrictHostKeyChecking")]
        assert checks == ["StrictHostKeyChecking=yes"], call.argv


def impostor_key(directory: Path) -> tuple[str, str]:
    """A throwaway host key nobody serves: (its `type base64` public key, its fingerprint)."""
    key = sshd.keygen(directory / "impostor", "impostor")
    public = key.with_suffix(".pub")
    return " ".join(public.read_text().split()[:2]), sshd.fingerprint(public)


def nothing_built(r: Run) -> None:
    """The refused key stopped the deploy before the build: no `docker build`, push or login here."""
    local = [c.argv[:3] for c in r.calls if c.where == "local" and c.program == "docker"]
    assert not [argv for argv in local if {"build", "push", "login"} & set(argv)], local


def accepted_logins(host: sshd.SshHost) -> int:
    """How many logins the host's sshd has accepted so far."""
    return (host.root / "sshd.log").read_text().count("Accepted publickey")


def test_a_pinned_fingerprint_admits_a_host_known_hosts_does_not_know(
    lab: deploy_lab.Lab, deploy_broker: DeployBroker, keys_env: None, tmp_path: Path
) -> None:
    stranger = lab.unknown_host
    assert stranger is not None
    known_before = lab.known_hosts.read_text()
    logins = accepted_logins(stranger)
    project_dir(
        tmp_path,
        lab,
        "v1",
        service="pinned",
        hosts=[lab.unknown],
        host_keys={lab.unknown: [stranger.fingerprint]},
    )
    r = run(lab, deploy_broker, "deploy", "-e", ENV, "--version", "v1", cwd=tmp_path)
    assert r.out.returncode == 0, r.out.stdout + r.out.stderr
    [container] = service_containers(lab, "web1", "pinned")  # the stranger's engine is web1's
    assert container["Name"] == "/pinned-web-v1"
    assert container["State"]["Health"]["Status"] == "healthy"
    env_file = stranger.remote_dir / "pinned" / "web.env"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    assert lab.known_hosts.read_text() == known_before
    # It logged in there (which is what the refusal tests look for, and do not find, on their hosts).
    assert accepted_logins(stranger) > logins
    strict_only(r)


def test_a_changed_host_key_is_refused_showing_both_fingerprints(
    lab: deploy_lab.Lab, deploy_broker: DeployBroker, keys_env: None, tmp_path: Path
) -> None:
    web1 = lab.hosts["web1"].ssh
    remembered, remembered_fingerprint = impostor_key(tmp_path)
    known = tmp_path / "known_hosts"
    known.write_text(f"[{web1.address}]:{web1.port} {remembered}\n")
    config = tmp_path / "ssh_config"
    config.write_text(web1.config_block("web1", known))
    logins = accepted_logins(web1)
    project_dir(tmp_path / "app", lab, "v1", service="changed", hosts=["web1"])
    r = run(
        lab,
        deploy_broker,
        "deploy",
        "-e",
        ENV,
        "--version",
        "v1",
        cwd=tmp_path / "app",
        env={"STRONGROOM_SSH_CONFIG": str(config)},
    )
    assert r.out.returncode != 0
    said = r.out.stdout + r.out.stderr
    assert remembered_fingerprint in said and web1.fingerprint in said, said
    assert accepted_logins(web1) == logins  # refused before logging in
    assert service_containers(lab, "web1", "changed") == []
    nothing_built(r)
    assert known.read_text() == f"[{web1.address}]:{web1.port} {remembered}\n"


def test_a_host_whose_key_is_not_the_pinned_one_is_refused_showing_both(
    lab: deploy_lab.Lab, deploy_broker: DeployBroker, keys_env: None, tmp_path: Path
) -> None:
    web2 = lab.hosts["web2"].ssh
    _, pinned = impostor_key(tmp_path)
    logins = accepted_logins(web2)
    project_dir(
        tmp_path / "app", lab, "v1", service="mispinned", hosts=["web2"], host_keys={"web2": [pinned]}
    )
    r = run(lab, deploy_broker, "deploy", "-e", ENV, "--version", "v1", cwd=tmp_path / "app")
    assert r.out.returncode != 0
    said = r.out.stdout + r.out.stderr
    assert pinned in said and web2.fingerprint in said, said
    assert accepted_logins(web2) == logins
    assert service_containers(lab, "web2", "mispinned") == []
    nothing_built(r)
