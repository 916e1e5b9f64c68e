"""Issue 6 end to end: the real `strongroom` CLI deploys the lab app to two ssh hosts through a real broker.

One environment (`production`) goes through a life: the first deploy of v1 to web1 and web2; APP_SECRET
is rotated and v2 deployed (the containers see the new value, the ledger and `deploy status` follow);
web2's container is removed behind the CLI's back (`deploy status` says missing); `rollback` goes back
to v1 without building; a version that never becomes healthy fails while v1 keeps
serving. Each step is a module fixture building on the previous one, so any test can run alone. The
catalogue checks of section G run over what those deploys did: every argv and environment given to
docker and ssh, here and on the hosts (G40), the built and pulled images (G41), the hosts' files (G42),
and the deploy token, seen through a recording proxy between the CLI and the broker.
"""

from __future__ import annotations

import hashlib
import json
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.deploy.broker_proxy import Proxy, broker_proxy
from tests.e2e.deploy.conftest import (
    PROJECT,
    DeployBroker,
    Run,
    canary,
    health_file,
    manifest,
    project_dir,
    run,
    service_containers,
)
from tests.support import deploy_lab

pytestmark = pytest.mark.e2e

ENV = "production"
SERVICE = "shop"
HOSTS = ["web1", "web2"]
# The broken version can never pass, so its deploy only waits out this timeout: keep it short (the
# healthy versions keep manifest()'s 20 s).
BROKEN_HEALTHCHECK = {"cmd": deploy_lab.HEALTH_CMD, "interval": 1, "timeout": 2}


@dataclass
class World:
    """The environment's values (all canaries) and the project directory deploys run from."""

    app_secret: str
    build_token: str
    outside: str
    registry_password: str
    root: Path
    rotated_app_secret: str = ""
    runs: dict[str, Run] = field(default_factory=dict)

    def values(self) -> list[str]:
        """Every value that must never leak."""
        found = [self.app_secret, self.build_token, self.outside, self.registry_password]
        return found + ([self.rotated_app_secret] if self.rotated_app_secret else [])


@pytest.fixture(scope="module")
def world(
    lab: deploy_lab.Lab, deploy_broker: DeployBroker, tmp_path_factory: pytest.TempPathFactory
) -> World:
    """Environment production with the app's secret, the build token, the registry password and a key outside the plan."""
    w = World(
        app_secret=canary("APP"),
        build_token=canary("BUILD"),
        outside=canary("OUTSIDE"),
        registry_password=lab.registry.password,
        root=tmp_path_factory.mktemp("shop"),
    )
    deploy_broker.environment(
        ENV,
        {
            "APP_SECRET": w.app_secret,
            "BUILD_TOKEN": w.build_token,
            "OUTSIDE_SECRET": w.outside,
            "REGISTRY_PASSWORD": w.registry_password,
        },
    )
    return w


def probe(url: str, token: str) -> dict[str, int]:
    """What a token gets for a key outside the plan and for the whole environment (status codes only)."""
    headers = {"Authorization": f"Bearer {token}"}
    base = f"{url}/v1/projects/{PROJECT}/environments/{ENV}"
    return {
        "outside key": httpx.get(f"{base}/secrets/OUTSIDE_SECRET", headers=headers).status_code,
        "resolved": httpx.get(f"{base}/resolved", headers=headers).status_code,
    }


@dataclass
class TokenWatch:
    """The deploy token as the proxy saw it, and what it could do during and after the deploy."""

    created: dict[str, Any] = field(default_factory=dict)
    during: dict[str, int] = field(default_factory=dict)
    after: dict[str, int] = field(default_factory=dict)
    proxy: Proxy | None = None


@pytest.fixture(scope="module")
def first(lab: deploy_lab.Lab, deploy_broker: DeployBroker, world: World) -> Iterator[TokenWatch]:
    """Deploy v1 to web1 and web2, through the recording proxy that probes the deploy token."""
    project_dir(world.root, lab, "v1", service=SERVICE, hosts=HOSTS)
    watch = TokenWatch()
    url = deploy_broker.process.url

    def on_deploy(created: dict[str, Any]) -> None:
        watch.created = created
        watch.during = probe(url, created["token"])

    with broker_proxy(deploy_broker.process.port) as proxy:
        proxy.on_deploy = on_deploy
        watch.proxy = proxy
        world.runs["first"] = run(
            lab, deploy_broker, "deploy", "-e", ENV, "--version", "v1", cwd=world.root, url=proxy.url
        )
    if watch.created:
        watch.after = probe(url, watch.created["token"])
    yield watch


@pytest.fixture(scope="module")
def second(lab: deploy_lab.Lab, deploy_broker: DeployBroker, world: World, first: TokenWatch) -> Run:
    """Rotate APP_SECRET, look at `deploy status`, loosen web2's file modes, deploy v2, look again."""
    world.rotated_app_secret = canary("ROTATED")
    # G42: a directory and an env file left 0755/0644 on a host (by hand, by another tool) are fixed.
    loose = lab.hosts["web2"].remote_dir / SERVICE
    loose.chmod(0o755)
    (loose / "web.env").chmod(0o644)
    deploy_broker.put(ENV, "APP_SECRET", world.rotated_app_secret)
    world.runs["status-rotated"] = run(
        lab, deploy_broker, "deploy", "status", "-e", ENV, "--json", cwd=world.root
    )
    project_dir(world.root, lab, "v2", service=SERVICE, hosts=HOSTS)
    world.runs["second"] = run(lab, deploy_broker, "deploy", "-e", ENV, "--version", "v2", cwd=world.root)
    world.runs["status-current"] = run(
        lab, deploy_broker, "deploy", "status", "-e", ENV, "--json", cwd=world.root
    )
    return world.runs["second"]


@pytest.fixture(scope="module")
def missing(lab: deploy_lab.Lab, deploy_broker: DeployBroker, world: World, second: Run) -> Run:
    """Remove web2's container with `docker rm -f` on its engine, then `deploy status`."""
    [container] = running(lab, "web2")
    lab.hosts["web2"].docker("rm", "-f", container["Id"])
    assert running(lab, "web2") == []
    world.runs["status-missing"] = run(
        lab, deploy_broker, "deploy", "status", "-e", ENV, "--json", cwd=world.root
    )
    return world.runs["status-missing"]


@pytest.fixture(scope="module")
def rolled_back(lab: deploy_lab.Lab, deploy_broker: DeployBroker, world: World, missing: Run) -> Run:
    """`strongroom rollback` with no version: back to the one before the current one (v1)."""
    world.runs["rollback"] = run(lab, deploy_broker, "rollback", "-e", ENV, cwd=world.root)
    return world.runs["rollback"]


@pytest.fixture(scope="module")
def broken(lab: deploy_lab.Lab, deploy_broker: DeployBroker, world: World, rolled_back: Run) -> Run:
    """Deploy a version whose container never becomes healthy (a short timeout: only the failure waits on it)."""
    project_dir(world.root, lab, "broken", service=SERVICE, hosts=HOSTS, healthcheck=BROKEN_HEALTHCHECK)
    world.runs["broken"] = run(lab, deploy_broker, "deploy", "-e", ENV, "--version", "broken", cwd=world.root)
    return world.runs["broken"]


def ok(r: Run) -> Run:
    assert r.out.returncode == 0, (r.out.args, r.out.stdout, r.out.stderr)
    return r


def running(lab: deploy_lab.Lab, alias: str) -> list[dict[str, Any]]:
    """The service's containers on a host (any state)."""
    return service_containers(lab, alias, SERVICE)


def only_container(lab: deploy_lab.Lab, alias: str, version: str) -> dict[str, Any]:
    """The one container of the service on the host, which must be `version`, running and healthy."""
    found = running(lab, alias)
    assert [c["Name"] for c in found] == [f"/{SERVICE}-web-{version}"], found
    container = found[0]
    assert container["State"]["Status"] == "running"
    assert container["State"]["Health"]["Status"] == "healthy"
    return container


def latest(deploy_broker: DeployBroker) -> dict[str, Any]:
    """The newest deploy of the environment, with hosts and keys."""
    return deploy_broker.deploy(deploy_broker.deploys(ENV)[0]["id"])


# --- the first deploy ----------------------------------------------------------------------------------


def test_first_deploy_runs_v1_healthy_on_both_hosts(
    lab: deploy_lab.Lab, world: World, first: TokenWatch
) -> None:
    ok(world.runs["first"])
    for alias in HOSTS:
        container = only_container(lab, alias, "v1")
        labels = container["Config"]["Labels"]
        assert labels["strongroom.service"] == SERVICE
        assert labels["strongroom.role"] == "web"
        assert labels["strongroom.version"] == "v1"
        assert labels["strongroom.env-fingerprint"].startswith("hmac-sha256:")
        assert labels["strongroom.deploy"] == first.created["deploy"]["id"]
        assert health_file(lab, alias, container["Id"]) == deploy_lab.health_line(
            "v1", world.app_secret, world.build_token
        )
    assert "v1" in lab.registry.tags(deploy_lab.REPOSITORY)


def test_first_deploy_is_in_the_ledger(
    lab: deploy_lab.Lab, deploy_broker: DeployBroker, first: TokenWatch
) -> None:
    deploy = deploy_broker.deploy(first.created["deploy"]["id"])
    assert (deploy["status"], deploy["kind"], deploy["version"], deploy["service"]) == (
        "succeeded",
        "deploy",
        "v1",
        SERVICE,
    )
    assert deploy["finished_at"] is not None
    hosts = {h["host"]: h for h in deploy["hosts"]}
    assert set(hosts) == set(HOSTS)
    for alias, row in hosts.items():
        assert row["outcome"] == "deployed", row
        labels = running(lab, alias)[0]["Config"]["Labels"]
        assert row["env_fingerprint"] == labels["strongroom.env-fingerprint"]
        assert row["image_digest"] and "sha256:" in row["image_digest"]
    served = {(k["environment"], k["name"]): k for k in deploy["keys"]}
    assert {"APP_SECRET", "BUILD_TOKEN", "REGISTRY_PASSWORD"} <= {name for _, name in served}
    assert (ENV, "OUTSIDE_SECRET") not in served
    assert served[(ENV, "APP_SECRET")]["version"] == 1


def test_deploy_token_reads_only_the_plan_and_is_dead_after_the_deploy(
    deploy_broker: DeployBroker, first: TokenWatch
) -> None:
    assert first.created, "the proxy saw no deploy being created"
    keys = {(k["environment"], k["name"]) for k in first.created["keys"]}
    assert keys == {(ENV, "APP_SECRET"), (ENV, "BUILD_TOKEN"), (ENV, "REGISTRY_PASSWORD")}
    assert first.created["uses"] == 4 + 2 * len(HOSTS)
    # During the deploy the token is alive (403: authenticated, not allowed), but not for what is outside.
    assert first.during == {"outside key": 403, "resolved": 403}
    # After it, it is dead.
    assert first.after == {"outside key": 401, "resolved": 401}
    listed = deploy_broker.http.get("/v1/tokens", params={"include_inactive": "true", "limit": 1000}).json()
    mine = [t for t in listed["tokens"] if t["accessor"] == first.created["accessor"]]
    assert len(mine) == 1 and mine[0]["revoked"] is True
    # The CLI used it for everything after creating the deploy.
    assert first.proxy is not None
    deploy_token = f"Bearer {first.created['token']}"
    after_create = [e for e in first.proxy.exchanges if e.path.startswith("/v1/deploys/")]
    assert after_create and all(e.authorization == deploy_token for e in after_create)
    assert {e.path.rsplit("/", 1)[1] for e in after_create} >= {"bundle", "hosts", "finish"}


# --- G41, G42 over what the first deploy did -----------------------------------------------------------


def test_g41_the_built_and_the_pulled_image_hold_no_build_secret(
    lab: deploy_lab.Lab, world: World, first: TokenWatch
) -> None:
    image = f"{lab.image}:v1"
    assert deploy_lab.image_leaks(lab.build_docker, image, world.build_token) == []
    assert deploy_lab.image_leaks(lab.hosts["web1"].docker, image, world.build_token) == []
    # The build did get the secret: its digest is in the image.
    digest = deploy_lab.layer_file(lab.build_docker, image, "/app/build_token.sha256")
    assert digest == (hashlib.sha256(world.build_token.encode()).hexdigest() + "\n").encode()


def test_g42_remote_directory_is_0700_and_env_file_0600_with_no_value_elsewhere(
    lab: deploy_lab.Lab, world: World, first: TokenWatch
) -> None:
    for alias in HOSTS:
        host = lab.hosts[alias]
        service_dir = host.remote_dir / SERVICE
        assert stat.S_IMODE(service_dir.stat().st_mode) == 0o700
        files = [p for p in service_dir.rglob("*") if p.is_file()]
        current = (world.rotated_app_secret or world.app_secret).encode()
        env_files = [p for p in files if current in p.read_bytes()]
        assert [p.name for p in env_files] == ["web.env"], files
        for path in files:
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        # The host's docker config keeps no registry credential (the script logs out after the pull).
        config = host.ssh.docker_config / "config.json"
        if config.exists():
            assert world.registry_password.encode() not in config.read_bytes()
            assert lab.registry.server not in json.loads(config.read_text()).get("auths", {})
    # Nor does the deploying machine's docker config.
    build_config = lab.build.root / "docker-config" / "config.json"
    assert not build_config.exists() or world.registry_password.encode() not in build_config.read_bytes()


def test_g42_build_secret_files_and_the_login_config_are_gone_after_the_deploy(
    lab: deploy_lab.Lab, world: World, first: TokenWatch
) -> None:
    local = [c for c in world.runs["first"].calls if c.where == "local" and c.program == "docker"]
    [build] = [c for c in local if "build" in c.argv]
    sources = [
        Path(part.removeprefix("src="))
        for i, arg in enumerate(build.argv)
        if arg == "--secret"
        for part in build.argv[i + 1].split(",")
        if part.startswith("src=")
    ]
    assert sources, build.argv
    for source in sources:
        assert not source.exists() and not source.parent.exists(), source
    # The push logged in with a throwaway docker config, gone as well: no registry credential stays here.
    [login] = [c for c in local if "login" in c.argv]
    config = Path(login.env["DOCKER_CONFIG"])
    assert config != lab.build.root / "docker-config"
    assert not config.exists()


# --- app exec and logs: the deployed containers, and a one-off one with the deployed env file ---------


def test_app_exec_runs_in_the_deployed_container_and_a_new_one_gets_its_env_file(
    lab: deploy_lab.Lab, deploy_broker: DeployBroker, world: World, first: TokenWatch
) -> None:
    inside = run(lab, deploy_broker, "app", "exec", "-e", ENV, "--", "cat", "/tmp/health", cwd=world.root)
    assert inside.out.returncode == 0, inside.out.stderr
    health = {alias: health_file(lab, alias, running(lab, alias)[0]["Id"]) for alias in HOSTS}
    assert sorted(inside.out.stdout.splitlines()) == sorted(f"{a}: {h.strip()}" for a, h in health.items())

    # Kamal's #1180 gap: a one-off container gets the same env file as the deployed one.
    digest_cmd = 'printf %s "$APP_SECRET" | sha256sum | cut -d" " -f1'
    new = run(
        lab,
        deploy_broker,
        "app",
        "exec",
        "-e",
        ENV,
        "--role",
        "web",
        "--hosts",
        "web1",
        "--new",
        "--",
        "sh",
        "-c",
        digest_cmd,
        cwd=world.root,
    )
    assert new.out.returncode == 0, new.out.stderr
    deployed = health["web1"].split("app_secret_sha256=")[1].split()[0]
    assert new.out.stdout.strip() == deployed
    assert [c["Name"] for c in running(lab, "web1")] == [running(lab, "web1")[0]["Name"]]  # nothing left over

    logs = run(lab, deploy_broker, "app", "logs", "-e", ENV, "--tail", "5", cwd=world.root)
    assert logs.out.returncode == 0, logs.out.stderr
    for alias in HOSTS:
        assert any(
            line.startswith(f"{alias}: ") and re.search(r" app v\S+ up$", line)
            for line in (logs.out.stdout + logs.out.stderr).splitlines()
        ), logs.out.stdout + logs.out.stderr
    for r in (inside, new, logs):
        assert not [v for v in world.values() if v in r.out.stdout + r.out.stderr]


# --- a secret changes: the second deploy -----------------------------------------------------------------


def test_second_deploy_after_a_secret_changed(
    lab: deploy_lab.Lab, deploy_broker: DeployBroker, world: World, second: Run
) -> None:
    rotated = world.runs["status-rotated"]
    assert rotated.out.returncode == 1, rotated.out.stderr  # drift: APP_SECRET rotated since v1
    before = json.loads(rotated.out.stdout)["hosts"]
    assert {h["host"] for h in before} == set(HOSTS)
    for h in before:
        assert h["drift"] is True
        assert [(r["name"], r["deployed_version"], r["current_version"]) for r in h["rotated"]] == [
            ("APP_SECRET", 1, 2)
        ]
        # What runs (inspected over ssh) is v1 with the old env: drift, and the rotated key named.
        assert (h["state"], h["states"], h["inspected"]) == ("drift", ["drift", "rotated"], True)
        assert h["running"]["version"] == "v1" and h["running"]["container"] == f"{SERVICE}-web-v1"
        assert h["running"]["env_fingerprint"] == h["last"]["env_fingerprint"]
        assert h["running"]["env_fingerprint"] != h["expected_env_fingerprint"]

    ok(second)
    for alias in HOSTS:
        container = only_container(lab, alias, "v2")  # v1 stopped and removed
        assert health_file(lab, alias, container["Id"]) == deploy_lab.health_line(
            "v2", world.rotated_app_secret, world.build_token
        )
        env_file = lab.hosts[alias].remote_dir / SERVICE / "web.env"
        assert env_file.read_text().count(world.rotated_app_secret) == 1
        # web2's were loosened before this deploy: it made them private again.
        assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
        assert stat.S_IMODE(env_file.parent.stat().st_mode) == 0o700

    deploy = latest(deploy_broker)
    assert (deploy["version"], deploy["status"]) == ("v2", "succeeded")
    served = {k["name"]: k["version"] for k in deploy["keys"]}
    assert served["APP_SECRET"] == 2


def test_after_the_second_deploy_the_ledger_has_both_hosts_and_status_shows_no_drift(
    deploy_broker: DeployBroker, world: World, second: Run
) -> None:
    deploy = latest(deploy_broker)
    assert {h["host"]: h["outcome"] for h in deploy["hosts"]} == dict.fromkeys(HOSTS, "deployed")
    current = world.runs["status-current"]
    assert current.out.returncode == 0, current.out.stdout + current.out.stderr
    after = json.loads(current.out.stdout)["hosts"]
    assert {h["host"] for h in after} == set(HOSTS)
    for h in after:
        assert h["drift"] is False and h["rotated"] == [] and h["state"] == "current"
        assert h["last"]["version"] == "v2"
        assert h["last"]["env_fingerprint"] == h["expected_env_fingerprint"]
        running_now = h["running"]
        assert (running_now["version"], running_now["status"]) == ("v2", "running")
        assert running_now["env_fingerprint"] == h["expected_env_fingerprint"]
        assert running_now["image"].endswith(":v2") and running_now["deploy_id"] == deploy["id"]
    # The status went to each host over ssh and ran only read-only docker commands there.
    on_hosts = [c for c in current.calls if c.where in HOSTS]
    assert {c.where for c in on_hosts} == set(HOSTS)
    assert {c.argv[0] for c in on_hosts} <= {"version", "ps", "inspect", "image"}


def test_deploy_status_names_a_host_of_the_manifest_never_deployed_to(
    lab: deploy_lab.Lab, deploy_broker: DeployBroker, world: World, second: Run, tmp_path: Path
) -> None:
    (tmp_path / "strongroom.yml").write_text(manifest(lab, service=SERVICE, hosts=[*HOSTS, "web9"]))
    status = run(lab, deploy_broker, "deploy", "status", "-e", ENV, "--json", cwd=tmp_path)
    assert status.out.returncode == 1, status.out.stdout + status.out.stderr
    hosts = {h["host"]: h for h in json.loads(status.out.stdout)["hosts"]}
    assert set(hosts) == {*HOSTS, "web9"}
    assert hosts["web9"]["last"] is None and hosts["web9"]["drift"] is True
    table = run(lab, deploy_broker, "deploy", "status", "-e", ENV, "--ledger-only", cwd=tmp_path)
    assert table.out.returncode == 1
    assert any(line.startswith("web9") and "never deployed" in line for line in table.out.stdout.splitlines())
    assert not table.calls  # --ledger-only: no ssh, no docker
    # Without it, the hosts deployed to are inspected; web9, never deployed, is not tried.
    assert status.calls and not [c for c in status.calls if "web9" in c.argv]


def test_deploy_status_says_missing_for_a_host_whose_container_was_removed(
    lab: deploy_lab.Lab, world: World, missing: Run
) -> None:
    assert missing.out.returncode == 1, missing.out.stdout + missing.out.stderr
    hosts = {h["host"]: h for h in json.loads(missing.out.stdout)["hosts"]}
    assert (hosts["web1"]["state"], hosts["web1"]["running"]["version"]) == ("current", "v2")
    assert (hosts["web2"]["states"], hosts["web2"]["running"]) == (["missing"], None)
    assert hosts["web2"]["last"]["version"] == "v2"  # the ledger still says v2 runs there


# --- rollback --------------------------------------------------------------------------------------------


def test_rollback_starts_v1_again_with_todays_secrets_without_building(
    lab: deploy_lab.Lab, deploy_broker: DeployBroker, world: World, rolled_back: Run
) -> None:
    ok(rolled_back)
    assert "v1" in rolled_back.out.stderr
    for alias in HOSTS:
        container = only_container(lab, alias, "v1")
        assert health_file(lab, alias, container["Id"]) == deploy_lab.health_line(
            "v1", world.rotated_app_secret, world.build_token
        )
    assert not [c for c in rolled_back.calls if c.program == "docker" and {"build", "push"} & set(c.argv)]
    deploy = latest(deploy_broker)
    assert (deploy["kind"], deploy["version"], deploy["status"]) == ("rollback", "v1", "succeeded")


# --- a version that never becomes healthy ----------------------------------------------------------------


def test_a_version_that_never_becomes_healthy_fails_and_the_old_one_keeps_serving(
    lab: deploy_lab.Lab, deploy_broker: DeployBroker, world: World, broken: Run
) -> None:
    assert broken.out.returncode != 0
    said = broken.out.stdout + broken.out.stderr
    for alias in HOSTS:
        assert f"{alias} (web): failed" in said or f"{alias}: deploy of role web failed" in said, said
        only_container(lab, alias, "v1")  # still running and healthy; the broken one is gone
    assert "unhealthy" in said or "not healthy" in said, said
    deploy = latest(deploy_broker)
    assert (deploy["version"], deploy["status"]) == ("broken", "failed")


def test_the_hosts_the_broken_version_failed_on_are_in_the_ledger_with_the_reason(
    deploy_broker: DeployBroker, broken: Run
) -> None:
    deploy = latest(deploy_broker)
    assert {h["host"]: h["outcome"] for h in deploy["hosts"]} == dict.fromkeys(HOSTS, "failed")
    assert all("unhealthy" in h["error"] for h in deploy["hosts"])


# --- G40 last: it needs every step above to have run ------------------------------------------------


def test_g40_no_value_in_any_argv_or_environment_here_or_on_the_hosts(
    deploy_broker: DeployBroker, world: World, first: TokenWatch, second: Run, rolled_back: Run, broken: Run
) -> None:
    # The values, the deploy token and the deployer's own token.
    values = [*world.values(), first.created["token"], deploy_broker.token]
    calls = [c for r in world.runs.values() for c in r.calls]
    assert {c.where for c in calls} == {"local", *HOSTS}, "the hosts' docker calls were not recorded"
    for call in calls:
        text = "\0".join([*call.argv, *(f"{k}={v}" for k, v in call.env.items())])
        for value in values:
            assert value not in text, f"a value in {call.program} {call.argv[:3]} on {call.where}"
        assert "STRONGROOM_TOKEN" not in call.env, call.argv[:3]
    logins = [c for c in calls if c.program == "docker" and "login" in c.argv]
    assert {c.where for c in logins} >= {"local", *HOSTS}
    for login in logins:
        assert "--password-stdin" in login.argv
        assert not {"-p", "--password"} & set(login.argv)
    builds = [c for c in calls if c.program == "docker" and "build" in c.argv]
    assert len(builds) == 3  # v1, v2, broken: the rollback builds nothing
    for build in builds:
        assert "--build-arg" not in " ".join(build.argv) or "BUILD_TOKEN" not in " ".join(build.argv)
        secret_args = [build.argv[i + 1] for i, a in enumerate(build.argv) if a == "--secret"]
        secret_args += [a.split("=", 1)[1] for a in build.argv if a.startswith("--secret=")]
        assert any(a.startswith("id=BUILD_TOKEN,") for a in secret_args), build.argv
    for r in world.runs.values():
        for value in values:
            assert value not in r.out.stdout + r.out.stderr


def test_no_value_in_any_server_log(
    lab: deploy_lab.Lab, deploy_broker: DeployBroker, world: World, broken: Run
) -> None:
    logs = [
        deploy_broker.process.log,
        lab.build.root / "engine.log",
        lab.registry.root / "registry.log",
        *(h.engine.root / "engine.log" for h in lab.hosts.values()),
        *(h.ssh.root / "sshd.log" for h in lab.hosts.values()),
    ]
    for log in logs:
        text = log.read_bytes()
        assert text, log  # each one did log something
        for value in world.values():
            assert value.encode() not in text, log
