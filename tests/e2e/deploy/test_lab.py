"""The deploy lab itself: hosts reach their own engines, the registry wants credentials, strangers are refused.

These prove the parts the deploy scenarios stand on (tests/support/deploy_lab.py), with the plain docker and
ssh clients and no Strongroom code, so a failing scenario points at Strongroom and not at the lab. They also
prove the test app: it becomes healthy with its secret's digest in /tmp/health, the "broken" version never
does, and a BuildKit build secret reaches the build but no layer (catalogue G41 on the fixture image).
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest

from tests.e2e.deploy.conftest import canary
from tests.support import deploy_lab

pytestmark = pytest.mark.e2e


def wait_health(host: deploy_lab.LabHost, container: str, want: str, deadline: float = 120) -> str:
    """Poll the container's health status until it is `want` (or it is plainly never going to be)."""
    end = time.monotonic() + deadline
    status = ""
    while time.monotonic() < end:
        status = host.docker("inspect", "-f", "{{.State.Health.Status}}", container).stdout.decode().strip()
        if status == want:
            return status
        time.sleep(0.2)
    raise AssertionError(f"{container} on {host.alias} is {status!r}, not {want!r}, after {deadline}s")


def build(lab: deploy_lab.Lab, tmp_path: Path, version: str, token: str) -> str:
    """Build the app for `version` on the build engine with BUILD_TOKEN as a BuildKit secret; returns the tag."""
    context = deploy_lab.app_context(tmp_path / f"ctx-{version}", version)
    secret_file = tmp_path / f"token-{version}"
    secret_file.write_text(token)
    secret_file.chmod(0o600)
    image = f"{lab.image}:lab-{version}"
    lab.build_docker(
        "build",
        "--network",
        "host",
        "-t",
        image,
        "--secret",
        f"id=BUILD_TOKEN,src={secret_file}",
        str(context),
    )
    return image


def test_each_alias_reaches_its_own_engine_docker_config_and_remote_dir(lab: deploy_lab.Lab) -> None:
    seen = set()
    for alias, host in lab.hosts.items():
        out = lab.ssh(
            alias,
            "docker version --format '{{.Server.Version}}' >/dev/null"
            " && docker info --format '{{.DockerRootDir}}' && printenv DOCKER_CONFIG STRONGROOM_REMOTE_DIR",
        )
        assert out.returncode == 0, out.stderr
        root_dir, docker_config, remote_dir = out.stdout.decode().split()
        assert root_dir == str(host.engine.root / "data")
        assert docker_config == str(host.ssh.docker_config)
        assert remote_dir == str(host.remote_dir)
        seen.add(root_dir)
    assert len(seen) == len(lab.hosts) == 2
    # The hosts' docker goes through the recording shim, which saw those calls.
    assert {c.where for c in lab.calls() if c.program == "docker"} == set(lab.hosts)


def test_unknown_host_key_and_closed_port_are_refused(lab: deploy_lab.Lab) -> None:
    stranger = lab.ssh(lab.unknown, "true")
    assert stranger.returncode == 255
    assert b"Host key verification failed" in stranger.stderr
    down = lab.ssh(lab.unreachable, "true")
    assert down.returncode == 255
    assert b"Connection refused" in down.stderr
    # The stranger is a live sshd: only its key is unknown (accepting it once shows it answers).
    assert lab.unknown_host is not None
    accepted = lab.unknown_host.ssh("true")
    assert accepted.returncode == 0, accepted.stderr


def test_registry_login_push_pull_and_the_app_on_a_host(lab: deploy_lab.Lab, tmp_path: Path) -> None:
    token, app_secret = canary("BUILD"), canary("APP")
    image = build(lab, tmp_path, "v1", token)
    denied = lab.build_docker("push", image, check=False)
    assert denied.returncode != 0 and b"basic auth" in denied.stderr + denied.stdout

    password = lab.registry.password.encode()
    lab.build_docker(
        "login", "-u", lab.registry.username, "--password-stdin", lab.registry.server, input=password
    )
    lab.build_docker("push", image)
    assert "lab-v1" in lab.registry.tags(deploy_lab.REPOSITORY)

    web1, web2 = lab.hosts["web1"], lab.hosts["web2"]
    login = lab.ssh(
        "web1",
        f"docker login -u {lab.registry.username} --password-stdin {lab.registry.server}",
        input=password,
    )
    assert login.returncode == 0, login.stderr
    pulled = lab.ssh("web1", f"docker pull -q {image}")
    assert pulled.returncode == 0, pulled.stderr
    assert web1.docker("image", "inspect", image, check=False).returncode == 0
    assert web2.docker("image", "inspect", image, check=False).returncode != 0  # its own engine

    env_file = web1.remote_dir / "lab.env"
    write = lab.ssh(
        "web1",
        f"umask 077 && mkdir -p {web1.remote_dir} && cat > {env_file}",
        input=f"APP_SECRET={app_secret}\nAPP_MODE=e2e\n".encode(),
    )
    assert write.returncode == 0, write.stderr
    started = lab.ssh("web1", f"docker run -d --name lab-app --network host --env-file {env_file} {image}")
    assert started.returncode == 0, started.stderr
    try:
        wait_health(web1, "lab-app", "healthy")
        health = web1.docker("exec", "lab-app", "cat", "/tmp/health").stdout.decode()
        assert health == deploy_lab.health_line("v1", app_secret, token)
    finally:
        web1.docker("rm", "-f", "lab-app", check=False)


def test_the_broken_version_never_becomes_healthy(lab: deploy_lab.Lab, tmp_path: Path) -> None:
    web2 = lab.hosts["web2"]
    image = build(lab, tmp_path, "broken", canary("BUILD"))
    web2.engine.docker("load", input=lab.build_docker("save", image).stdout, timeout=120)
    web2.docker(
        "run",
        "-d",
        "--name",
        "lab-broken",
        "--network",
        "host",
        "-e",
        "APP_SECRET=x",
        "-e",
        "APP_MODE=e2e",
        image,
    )
    try:
        wait_health(web2, "lab-broken", "unhealthy")
        assert web2.docker("exec", "lab-broken", "test", "-e", "/tmp/health", check=False).returncode != 0
        assert web2.docker("inspect", "-f", "{{.State.Running}}", "lab-broken").stdout.strip() == b"true"
    finally:
        web2.docker("rm", "-f", "lab-broken", check=False)


def test_g41_a_buildkit_secret_reaches_the_build_but_no_layer(lab: deploy_lab.Lab, tmp_path: Path) -> None:
    token = canary("BUILD")
    image = build(lab, tmp_path, "g41", token)
    assert deploy_lab.image_leaks(lab.build_docker, image, token) == []
    # The secret was really mounted during the build: its digest is in the image, the value is not.
    digest = deploy_lab.layer_file(lab.build_docker, image, "/app/build_token.sha256")
    assert digest == (hashlib.sha256(token.encode()).hexdigest() + "\n").encode()
    # The check can fail: the same value passed as a build argument is found.
    leaky = tmp_path / "leaky"
    leaky.mkdir()
    (leaky / "Dockerfile").write_text(
        "FROM scratch\nCOPY Dockerfile /Dockerfile\nARG BUILD_TOKEN\nLABEL token=$BUILD_TOKEN\n"
    )
    lab.build_docker(
        "build", "--network", "host", "-t", "lab/leaky:1", "--build-arg", f"BUILD_TOKEN={token}", str(leaky)
    )
    assert "docker inspect" in deploy_lab.image_leaks(lab.build_docker, "lab/leaky:1", token)
