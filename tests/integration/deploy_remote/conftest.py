"""A one-host deploy lab for the remote side: a real sshd whose sessions use their own real dockerd, a registry.

tests/support/deploy_lab.py starts it (build engine, registry, `web1`); the app images (`v1`, `v2`,
`broken`) are built once with BuildKit and pushed, so each deploy really logs in and pulls over ssh.
Without root, dockerd, sshd or docker-registry the tests skip, and fail under CI=true.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import need
from tests.support import deploy_lab


def canary(label: str) -> str:
    """A random marker value (with a space and shell metacharacters) that must never leak."""
    return f"{label}CANARY{secrets.token_hex(10)} x&y'z"


@dataclass
class RemoteLab:
    """The running lab and the pushed tags of the app."""

    lab: deploy_lab.Lab
    tags: dict[str, str]  # version -> full image reference in the registry

    @property
    def host(self) -> deploy_lab.LabHost:
        """The one ssh host, `web1`."""
        return self.lab.hosts["web1"]

    def environ(self) -> dict[str, str]:
        """What RemoteHost reads: the lab's ssh config and its recording ssh."""
        env = self.lab.env()
        return {
            "STRONGROOM_SSH_CONFIG": env["STRONGROOM_SSH_CONFIG"],
            "STRONGROOM_SSH": env["STRONGROOM_SSH"],
        }

    def plan(self, service: str, **extra: Any) -> dict[str, Any]:
        """A PlanOut for `service` on web1 with the lab registry and the app's file health check."""
        plan: dict[str, Any] = {
            "service": service,
            "image": self.lab.image,
            "version": "v1",
            "registry": {"server": self.lab.registry.server, "username": self.lab.registry.username},
            "builder": None,
            "roles": [
                {
                    "name": "web",
                    "cmd": None,
                    "options": {"network": "host"},
                    "hosts": [{"host": "web1", "tags": []}],
                }
            ],
            "ssh": {"user": None, "port": None, "host_keys": {}},
            "healthcheck": {
                "path": None,
                "port": None,
                "cmd": deploy_lab.HEALTH_CMD,
                "interval": 1,
                "timeout": 20,
            },
            "retain_images": 5,
            "stop_timeout": 1,
        }
        plan.update(extra)
        return plan


def _build(lab: deploy_lab.Lab, root: Path, version: str) -> str:
    context = deploy_lab.app_context(root / f"ctx-{version}", version)
    secret_file = root / f"token-{version}"
    secret_file.write_text(canary("BUILD"))
    secret_file.chmod(0o600)
    image = f"{lab.image}:remote-{version}"
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
    lab.build_docker("push", image)
    return image


@pytest.fixture(scope="package")
def remote_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RemoteLab]:
    """The lab with one host and the app pushed as v1, v2 and broken."""
    reason = deploy_lab.missing()
    if reason:
        need(reason)
    root = tmp_path_factory.mktemp("remote-lab")
    with deploy_lab.lab(hosts=1, extras=False) as lab:
        lab.build_docker(
            "login",
            "-u",
            lab.registry.username,
            "--password-stdin",
            lab.registry.server,
            input=lab.registry.password.encode(),
        )
        tags = {version: _build(lab, root, version) for version in ("v1", "v2", "broken")}
        yield RemoteLab(lab, tags)
