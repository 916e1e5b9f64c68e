"""The deploy plan as pure data: PlanOut + bundle → build argv and host steps; the dry run shows no value."""

from __future__ import annotations

from typing import Any

import pytest

from cli.client import (
    BundleHost,
    DeployBundle,
    HostStatus,
    KeyRef,
    LastDeploy,
    Rotated,
    plan_from_json,
)
from cli.deploy import plan as deploy_plan
from cli.errors import CliError

CANARY = "canary-value-7f3a"


def plan_json(**overrides: Any) -> dict[str, Any]:
    """A PlanOut as the broker sends it (docs/api.md)."""
    data: dict[str, Any] = {
        "service": "app",
        "image": "team/app",
        "version": "abc123",
        "registry": {"server": "127.0.0.1:5000", "username": "ci"},
        "builder": {
            "context": "web",
            "dockerfile": "web/Dockerfile.prod",
            "target": None,
            "args": {"APP_ENV": "production"},
            "secrets": ["NPM_TOKEN"],
        },
        "roles": [
            {"name": "web", "cmd": None, "options": {"network": "host"}, "hosts": [
                {"host": "web1", "tags": []}, {"host": "web2", "tags": ["eu"]}]},
            {"name": "jobs", "cmd": "bin/jobs", "options": {}, "hosts": [{"host": "web1", "tags": []}]},
        ],
        "ssh": {"user": "deploy", "port": 2222, "host_keys": {"web1": ["SHA256:abc"]}},
        "healthcheck": {"path": "/up", "port": 3000, "cmd": None, "interval": 1, "timeout": 20},
        "retain_images": 3,
        "stop_timeout": 10,
    }  # fmt: skip
    data.update(overrides)
    return data


def bundle(*pairs: tuple[str, str]) -> DeployBundle:
    return DeployBundle(
        hosts=tuple(
            BundleHost(
                host=h, role=r, env_file=f"SECRET={CANARY}-{h}-{r}\n", env_fingerprint=f"hmac-sha256:{h}{r}"
            )
            for r, h in pairs
        ),
        registry_password=CANARY + "-registry",
        build_secrets={"NPM_TOKEN": CANARY + "-npm"},
        keys=(KeyRef("production", "SECRET", 3, "hmac-sha256:k"),),
    )


def test_plan_parses_every_field() -> None:
    plan = plan_from_json(plan_json())
    assert plan.registry is not None and plan.registry.server == "127.0.0.1:5000"
    assert plan.builder is not None and plan.builder.secrets == ("NPM_TOKEN",)
    assert [r.name for r in plan.roles] == ["web", "jobs"]
    assert plan.roles[0].hosts[1].tags == ("eu",)
    assert plan.ssh.host_keys == {"web1": ("SHA256:abc",)}
    assert plan.healthcheck is not None and plan.healthcheck.timeout == 20
    assert plan.retain_images == 3
    assert plan.raw["service"] == "app"


def test_plan_with_a_wrong_type_names_the_field() -> None:
    with pytest.raises(CliError, match=r"plan\.roles\[0\]\.hosts is missing"):
        plan_from_json(plan_json(roles=[{"name": "web", "cmd": None, "options": {}}]))


def test_a_sub_second_health_interval_is_read_and_a_non_number_names_the_field() -> None:
    check = {"path": "/up", "port": 3000, "cmd": None, "interval": 0.25, "timeout": 20}
    plan = plan_from_json(plan_json(healthcheck=check))
    assert plan.healthcheck is not None and plan.healthcheck.interval == 0.25
    with pytest.raises(CliError, match=r"plan\.healthcheck\.interval is not a number"):
        plan_from_json(plan_json(healthcheck={**check, "interval": "fast"}))


def test_image_ref_puts_the_registry_in_front() -> None:
    plan = plan_from_json(plan_json())
    assert deploy_plan.image_ref(plan) == "127.0.0.1:5000/team/app:abc123"
    assert deploy_plan.image_ref(plan_from_json(plan_json(registry=None))) == "team/app:abc123"


def test_host_steps_pair_every_role_host_with_its_env_file() -> None:
    plan = plan_from_json(plan_json())
    steps = deploy_plan.host_steps(plan, bundle(("web", "web1"), ("web", "web2"), ("jobs", "web1")))
    assert [(s.role, s.host, s.cmd) for s in steps] == [
        ("web", "web1", None),
        ("web", "web2", None),
        ("jobs", "web1", "bin/jobs"),
    ]
    assert steps[2].env_file == f"SECRET={CANARY}-web1-jobs\n".encode()
    assert steps[0].options == {"network": "host"}
    assert CANARY not in repr(steps)


def test_host_step_without_env_file_is_refused() -> None:
    plan = plan_from_json(plan_json())
    with pytest.raises(CliError, match="no env file for host web2 of role web"):
        deploy_plan.host_steps(plan, bundle(("web", "web1"), ("jobs", "web1")))


def test_build_argv_takes_paths_from_the_manifest_directory() -> None:
    plan = plan_from_json(plan_json())
    argv = deploy_plan.build_argv(
        plan, docker_binary="docker", manifest_dir="/src/repo", secret_files={"NPM_TOKEN": "/tmp/d/NPM_TOKEN"}
    )
    assert argv == [
        "docker", "build", "--tag", "127.0.0.1:5000/team/app:abc123", "--label", "strongroom.service=app",
        "--file", "/src/repo/web/Dockerfile.prod", "--build-arg", "APP_ENV=production",
        "--secret", "id=NPM_TOKEN,src=/tmp/d/NPM_TOKEN", "/src/repo/web",
    ]  # fmt: skip


def test_build_without_builder_section_uses_the_manifest_directory() -> None:
    plan = plan_from_json(plan_json(builder=None))
    assert deploy_plan.build_paths(plan, "/src/repo") == ("/src/repo", None)


def test_describe_shows_names_hosts_and_fingerprints_never_values() -> None:
    plan = plan_from_json(plan_json())
    statuses = [
        HostStatus(
            host="web1",
            role="web",
            last=LastDeploy("d1", "old1", "sha256:x", "hmac-sha256:0123456789abcdef", None, "ci", "deployed"),
            expected_env_fingerprint="hmac-sha256:fedcba9876543210",
            rotated=(Rotated("SECRET", 2, 3),),
        ),
        HostStatus("web2", "web", None, "hmac-sha256:aaaa", ()),
    ]
    lines = deploy_plan.describe(
        plan,
        project="shop",
        environment="production",
        kind="deploy",
        keys=[KeyRef("production", "SECRET"), KeyRef("production", "NPM_TOKEN")],
        statuses=statuses,
        manifest_dir="/src/repo",
    )
    text = "\n".join(lines)
    assert "Deploy app abc123 to shop/production" in text
    assert "production/SECRET, production/NPM_TOKEN" in text
    assert "--secret 'id=NPM_TOKEN,src=<0600 temp file>'" in text
    assert "--password-stdin 127.0.0.1:5000  (password on stdin)" in text
    assert "web1" in text and "runs old1 (env hmac-sha256:0123456789ab)" in text
    assert "rotated since: SECRET v2→v3" in text
    assert "nothing deployed yet" in text
    assert "keep 3 images" in text
    assert CANARY not in text


def test_describe_rollback_has_no_build() -> None:
    plan = plan_from_json(plan_json(builder=None, healthcheck={"cmd": "true", "interval": 1, "timeout": 5}))
    text = "\n".join(
        deploy_plan.describe(plan, project="shop", environment="production", kind="rollback", keys=[])
    )
    assert "Build:" not in text and "No build or push" in text
    assert "health command passes" in text


def test_describe_says_what_the_deploy_script_waits_for() -> None:
    from cli.plans.remote import DEFAULT_HEALTH_TIMEOUT, health_from_plan

    def wait(**overrides: object) -> str:
        plan = plan_from_json(plan_json(**overrides))
        return deploy_plan.health_wait(plan)

    # No health check in the plan: the image's own HEALTHCHECK for as long as the script waits, else
    # the container must stay up for readiness_delay (7 s unless the plan says otherwise).
    bare = wait(healthcheck=None)
    assert f"up to {DEFAULT_HEALTH_TIMEOUT} s" in bare and "stayed up for 7 s" in bare
    assert "stayed up for 20 s" in wait(healthcheck=None, readiness_delay=20)
    assert "(up to 310 s)" in wait(healthcheck=None, readiness_delay=300)
    # An HTTP check: run inside the container with wget or curl, on the plan's port and path.
    http = wait(healthcheck={"path": "/up", "port": 3000, "cmd": None, "interval": 2, "timeout": 40})
    assert "GET /up on 127.0.0.1:3000 inside the container" in http and "wget or curl" in http
    assert "every 2 s" in http and "giving up after 40 s" in http
    # A start period is shown exactly when the script gives docker one.
    script = health_from_plan({"path": "/up", "port": 3000, "interval": 2, "timeout": 40})
    assert script is not None
    assert ("start period" in http) == ("--health-start-period" in script.options())
    # A check without a timeout: the script's default, not the client's.
    assert f"giving up after {DEFAULT_HEALTH_TIMEOUT} s" in wait(healthcheck={"cmd": "true", "interval": 1})
