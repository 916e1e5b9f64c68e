"""RemoteHost against a real sshd + real dockerd + real registry: deploy, replace, refuse unhealthy, status, app.

Every local program runs through cli.deploy.process (its recorder sees argv, environment and stdin); the
lab's shims record every docker call on the host too. A poller reads every process's command line
(what `ps` shows) while the deploy runs. No secret may show in any of them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli.deploy import process
from cli.deploy.redact import Redactor
from cli.deploy.remote import DeployFailed, DeployResult, DeployStep, HostKeyRefused, RemoteHost
from tests.integration.deploy_remote.conftest import RemoteLab, canary
from tests.support import deploy_lab


@pytest.fixture
def recorded() -> Iterator[list[process.Invocation]]:
    calls: list[process.Invocation] = []
    process.set_recorder(calls.append)
    yield calls
    process.set_recorder(None)


class CommandLines:
    """Polls /proc/*/cmdline (what ps shows) in a thread, keeping every distinct command line seen."""

    def __init__(self) -> None:
        self.seen: set[bytes] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.is_set():
            for entry in os.scandir("/proc"):
                if entry.name.isdigit():
                    try:
                        with open(f"/proc/{entry.name}/cmdline", "rb") as fh:
                            self.seen.add(fh.read())
                    except OSError:
                        continue

    def __enter__(self) -> CommandLines:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()


def env_file(app_secret: str) -> bytes:
    return f"APP_SECRET={app_secret}\nAPP_MODE=e2e\n".encode()


def step(lab: RemoteLab, version: str, app_secret: str, deploy_id: str = "d-1") -> DeployStep:
    return DeployStep(
        role="web",
        version=version,
        image=lab.tags[version],
        env_file=env_file(app_secret),
        env_fingerprint="hmac-sha256:" + hashlib.sha256(app_secret.encode()).hexdigest()[:32],
        deploy_id=deploy_id,
        registry_password=lab.lab.registry.password,
    )


def containers(lab: RemoteLab, service: str) -> list[dict[str, str]]:
    return lab.lab.containers("web1", service)


def running(lab: RemoteLab, service: str) -> list[str]:
    return [c["Names"] for c in containers(lab, service) if c["State"] == "running"]


def health_file(lab: RemoteLab, container: str) -> str:
    return lab.host.docker("exec", container, "cat", "/tmp/health").stdout.decode()


def deploy_once(lab: RemoteLab, service: str, version: str, app_secret: str, **plan: object) -> DeployResult:
    with RemoteHost(
        "web1", lab.plan(service, **plan), environ=lab.environ(), redactor=Redactor([app_secret])
    ) as host:
        host.connect()
        return host.deploy(step(lab, version, app_secret))


# For a version that must fail: the deploy waits out the whole timeout (docker's start period), so a short
# one only shortens the wait for the expected failure; healthy deploys keep the plan's 20 s. The interval is
# long: docker runs its first check one interval after the start and says "unhealthy" only after three
# failed ones, so the deploy's poll at its 2 s deadline sees "starting" and reports "no health check passed"
# however late load makes that poll (with a 1 s interval, a poll 3 s late saw "unhealthy" instead).
NEVER_HEALTHY = {"path": None, "port": None, "cmd": deploy_lab.HEALTH_CMD, "interval": 60, "timeout": 2}


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_first_deploy_then_a_new_version_replaces_it(remote_lab: RemoteLab) -> None:
    first, second = canary("APP"), canary("APP")
    service = "replace"
    with RemoteHost("web1", remote_lab.plan(service), environ=remote_lab.environ()) as host:
        preflight = host.connect()
        # The host is in known_hosts: looked up locally, no key scan; the master runs the preflight.
        assert preflight.docker and host.round_trips == 1
        result = host.deploy(step(remote_lab, "v1", first))
        assert host.round_trips == 2
    assert host.round_trips == 3  # + the master's exit
    assert result.outcome == "deployed" and result.name == "replace-web-v1" and result.container
    assert list(result.timings) == ["env", "login", "pull", "run", "healthy", "done"]
    assert sorted(result.timings.values()) == list(result.timings.values())
    print("phase timings (s since the script started):", result.timings)
    assert result.image_digest and result.image_digest.startswith(f"{remote_lab.lab.image}@sha256:")
    assert running(remote_lab, service) == ["replace-web-v1"]
    assert f"app_secret_sha256={sha(first)}" in health_file(remote_lab, "replace-web-v1")

    # The env file: 0600 in a 0700 directory under the host's STRONGROOM_REMOTE_DIR, and nothing else left.
    directory = remote_lab.host.remote_dir / service
    assert directory.stat().st_mode & 0o777 == 0o700
    assert (directory / "web.env").stat().st_mode & 0o777 == 0o600
    assert (directory / "web.env").read_bytes() == env_file(first)
    assert sorted(p.name for p in directory.iterdir()) == ["web.env"]

    labels = remote_lab.host.docker(
        "inspect", "-f", "{{json .Config.Labels}}", "replace-web-v1"
    ).stdout.decode()
    for expected in (
        '"strongroom.service":"replace"',
        '"strongroom.version":"v1"',
        '"strongroom.deploy":"d-1"',
    ):
        assert expected in labels
    # No registry credential is left in the host's docker config.
    config = remote_lab.host.ssh.docker_config / "config.json"
    assert not config.exists() or remote_lab.lab.registry.server not in config.read_text()

    result = deploy_once(remote_lab, service, "v2", second)
    assert result.replaced and running(remote_lab, service) == ["replace-web-v2"]
    assert [c["Names"] for c in containers(remote_lab, service)] == ["replace-web-v2"]
    assert f"app_secret_sha256={sha(second)}" in health_file(remote_lab, "replace-web-v2")
    assert (directory / "web.env").read_bytes() == env_file(second)


def test_an_unhealthy_version_is_removed_and_the_old_keeps_running(remote_lab: RemoteLab) -> None:
    good, bad = canary("APP"), canary("APP")
    service = "unhealthy"
    deploy_once(remote_lab, service, "v1", good)
    started = time.monotonic()
    with pytest.raises(DeployFailed) as caught:
        deploy_once(
            remote_lab,
            service,
            "broken",
            bad,
            healthcheck=NEVER_HEALTHY,
        )
    assert time.monotonic() - started < 60
    failure = caught.value
    assert failure.step == "health"
    # The start period lasts the whole timeout: no check passed in it.
    assert "unhealthy: no health check passed within 2s" in failure.reason, failure.reason
    assert failure.result is not None and failure.result.outcome == "failed"
    assert running(remote_lab, service) == ["unhealthy-web-v1"]
    assert [c["Names"] for c in containers(remote_lab, service)] == ["unhealthy-web-v1"]
    assert f"app_secret_sha256={sha(good)}" in health_file(remote_lab, "unhealthy-web-v1")
    # The deployed env file is still the old one; the new one is gone.
    directory = remote_lab.host.remote_dir / service
    assert (directory / "web.env").read_bytes() == env_file(good)
    assert sorted(p.name for p in directory.iterdir()) == ["web.env"]


def test_redeploying_the_same_version_with_a_new_secret(remote_lab: RemoteLab) -> None:
    first, second = canary("APP"), canary("APP")
    service = "same"
    deploy_once(remote_lab, service, "v1", first)
    result = deploy_once(remote_lab, service, "v1", second)
    assert len(result.replaced) == 1
    assert [c["Names"] for c in containers(remote_lab, service)] == ["same-web-v1"]
    assert f"app_secret_sha256={sha(second)}" in health_file(remote_lab, "same-web-v1")


def test_no_secret_in_any_argv_environment_or_ps(
    remote_lab: RemoteLab, recorded: list[process.Invocation]
) -> None:
    app_secret = canary("APP")
    password = remote_lab.lab.registry.password
    service = "argv"
    remote_lab.lab.forget_calls()
    with CommandLines() as lines:
        deploy_once(remote_lab, service, "v1", app_secret)
    assert recorded, "the recorder saw nothing"
    for call in recorded:
        for needle in (app_secret, password):
            assert all(needle not in word for word in call.argv), call.argv[:3]
            assert all(needle not in value for value in call.env.values())
    # The values went on ssh's stdin, and only there.
    stdins = [call.stdin for call in recorded if call.stdin]
    assert any(app_secret.encode() in data and password.encode() in data for data in stdins)
    # Every docker call on the host (recorded by its shim) and every local ssh call: argv and environment.
    calls = remote_lab.lab.calls()
    assert any(call.where == "web1" and call.argv[:1] == ("login",) for call in calls)
    assert any(call.where == "web1" and "--password-stdin" in call.argv for call in calls)
    for call in calls:
        for needle in (app_secret, password):
            assert all(needle not in word for word in call.argv), (call.where, call.argv[:3])
            assert all(needle not in value for value in call.env.values())
    assert lines.seen
    for cmdline in lines.seen:
        assert app_secret.encode() not in cmdline and password.encode() not in cmdline


def test_status_and_app_actions(remote_lab: RemoteLab) -> None:
    app_secret = canary("APP")
    service = "appactions"
    plan = remote_lab.plan(service)
    deploy_once(remote_lab, service, "v2", app_secret)
    with RemoteHost("web1", plan, environ=remote_lab.environ(), redactor=Redactor([app_secret])) as host:
        host.connect()
        found = host.status()
        assert [(c.name, c.status, c.role, c.version) for c in found] == [
            ("appactions-web-v2", "running", "web", "v2")
        ]
        assert found[0].env_fingerprint == "hmac-sha256:" + sha(app_secret)[:32]
        assert found[0].health == "healthy"
        assert any(d.startswith(remote_lab.lab.image + "@sha256:") for d in found[0].repo_digests)

        logs = host.app("logs", "web")
        assert "app v2 up" in logs.stdout + logs.stderr

        # exec --new: a fresh container with the deployed env file sees the secret (its digest, not the value).
        new = host.app(
            "exec", "web", argv=["-c", 'printf %s "$APP_SECRET" | sha256sum'], new=True, entrypoint="/bin/sh"
        )
        assert sha(app_secret) in new.stdout, new.stderr
        inside = host.app("exec", "web", argv=["cat", "/tmp/health"])
        assert f"app_secret_sha256={sha(app_secret)}" in inside.stdout
        # The redactor masks the value if a command prints it.
        shown = host.app("exec", "web", argv=["sh", "-c", 'printf %s "$APP_SECRET"'])
        assert app_secret not in shown.stdout and "[REDACTED]" in shown.stdout

        assert host.app("stop", "web").returncode == 0
        assert running(remote_lab, service) == []
        assert host.app("start", "web").returncode == 0
        assert running(remote_lab, service) == ["appactions-web-v2"]
        assert host.app("remove", "web").returncode == 0
        assert containers(remote_lab, service) == []
        assert not (remote_lab.host.remote_dir / service / "web.env").exists()


def test_old_images_beyond_retain_images_are_pruned(remote_lab: RemoteLab) -> None:
    service = "prune"
    # Images other tests' containers still use cannot be removed: start from a host without containers.
    ids = remote_lab.host.docker("ps", "-aq").stdout.decode().split()
    if ids:
        remote_lab.host.docker("rm", "-f", *ids)
    deploy_once(remote_lab, service, "v1", canary("APP"), retain_images=1)
    result = deploy_once(remote_lab, service, "v2", canary("APP"), retain_images=1)
    assert result.pruned >= 1
    tags = (
        remote_lab.host.docker("image", "ls", "--format", "{{.Tag}}", remote_lab.lab.image)
        .stdout.decode()
        .split()
    )
    assert "remote-v2" in tags and "remote-v1" not in tags


def test_pinned_host_key_deploys_and_a_wrong_pin_runs_nothing(remote_lab: RemoteLab, tmp_path: Path) -> None:
    fingerprint = remote_lab.host.ssh.fingerprint
    # An ssh config whose known_hosts is empty: only the pin can make the host acceptable.
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    # A KnownHostsCommand in the config is another source of keys: with a pin, ssh must not even run it.
    ran = tmp_path / "known-hosts-command-ran"
    config = tmp_path / "ssh_config"
    config.write_text(
        remote_lab.host.ssh.config_block("web1", empty) + f"\n    KnownHostsCommand /usr/bin/touch {ran}\n"
    )
    environ = {**remote_lab.environ(), "STRONGROOM_SSH_CONFIG": str(config)}
    plan = remote_lab.plan("pinned", ssh={"user": None, "port": None, "host_keys": {"web1": [fingerprint]}})
    with RemoteHost("web1", plan, environ=environ) as host:
        host.connect()
        assert host.accepted is not None and host.accepted.how == "pinned"
        result = host.deploy(step(remote_lab, "v1", canary("APP")))
    assert result.outcome == "deployed"
    assert not ran.exists()

    remote_lab.lab.forget_calls()
    wrong = "SHA256:" + "A" * 43
    plan = remote_lab.plan("pinned2", ssh={"user": None, "port": None, "host_keys": {"web1": [wrong]}})
    with RemoteHost("web1", plan, environ=environ) as host, pytest.raises(HostKeyRefused) as caught:
        host.connect()
    assert wrong in caught.value.message and fingerprint in caught.value.message
    assert host.round_trips == 1  # the key scan only: no session was opened
    assert [c for c in remote_lab.lab.calls() if c.where == "web1"] == []


def test_one_deploy_of_a_role_at_a_time_per_host(remote_lab: RemoteLab) -> None:
    service = "locked"
    deploy_once(remote_lab, service, "v1", canary("APP"))
    lock = remote_lab.host.remote_dir / service / ".deploy-web.lock"
    assert not lock.exists()  # released after a deploy
    lock.mkdir()  # another deploy holds it
    try:
        with pytest.raises(DeployFailed) as caught:
            deploy_once(remote_lab, service, "v2", canary("APP"))
        assert caught.value.step == "prepare" and "another deploy" in caught.value.reason
        assert running(remote_lab, service) == ["locked-web-v1"]
        assert lock.is_dir()  # the refused deploy leaves the other one's lock alone
    finally:
        lock.rmdir()
    # A stale lock (older than 90 minutes) is taken over.
    lock.mkdir()
    old = time.time() - 2 * 3600
    os.utime(lock, (old, old))
    assert deploy_once(remote_lab, service, "v2", canary("APP")).outcome == "deployed"
    assert not lock.exists()


def test_stop_first_role_restarts_the_old_container_when_the_new_one_fails(remote_lab: RemoteLab) -> None:
    """A role publishing ports is deployed stop-first (with host networking docker ignores the ports)."""
    service = "stopfirst"
    roles = [
        {
            "name": "web",
            "cmd": None,
            "options": {"network": "host", "publish": "18099:18099"},
            "hosts": [{"host": "web1", "tags": []}],
        }
    ]
    first = deploy_once(remote_lab, service, "v1", canary("APP"), roles=roles)
    assert first.strategy == "stop-first"
    with pytest.raises(DeployFailed) as caught:
        deploy_once(remote_lab, service, "broken", canary("APP"), roles=roles, healthcheck=NEVER_HEALTHY)
    assert caught.value.step == "health"
    # The old container was stopped for the new one, then started again when the new one failed.
    assert running(remote_lab, service) == ["stopfirst-web-v1"]
    assert [c["Names"] for c in containers(remote_lab, service)] == ["stopfirst-web-v1"]
    second = deploy_once(remote_lab, service, "v2", canary("APP"), roles=roles)
    assert second.replaced == [first.container]
    assert running(remote_lab, service) == ["stopfirst-web-v2"]


def failing_check(script: str) -> dict[str, object]:
    """A plan health check that runs `script` in the container and always fails (its output is the reason).

    docker's per-check timeout is the interval; a check cut off by it leaves "Health check exceeded timeout"
    instead of the output, which a 1 s interval did on a loaded machine: 3 s, and time for two checks.
    """
    return {"path": None, "port": None, "cmd": f"{script}; exit 1", "interval": 3, "timeout": 8}


def test_a_secret_with_a_tab_in_the_reason_is_masked(remote_lab: RemoteLab) -> None:
    """R3: the host escapes the TAB (it used to drop it, and the value without it escaped the redactor)."""
    secret = canary("TAB\tAPP")
    with pytest.raises(DeployFailed) as caught:
        deploy_once(
            remote_lab, "tabbed", "v1", secret, healthcheck=failing_check('printf "%s\\n" "$APP_SECRET"')
        )
    failure = caught.value
    assert failure.step == "health" and "last check: [REDACTED]" in failure.reason, failure.reason
    for shown in (failure.reason, failure.message):
        assert secret not in shown and secret.replace("\t", "") not in shown
        assert secret.split("\t")[1] not in shown


def test_a_long_reason_is_masked_before_it_is_cut(remote_lab: RemoteLab) -> None:
    """R2: the host sends the whole last line; cut at 500 there, a value straddling the cut leaked in part."""
    from cli.deploy.remote import REASON_LIMIT

    secret = canary("LONG")
    check = failing_check('printf "%0480d%s\\n" 0 "$APP_SECRET"')
    with pytest.raises(DeployFailed) as caught:
        deploy_once(remote_lab, "longline", "v1", secret, healthcheck=check)
    reason = caught.value.reason
    assert "0" * 480 + "[REDACTED]" in reason, reason[-80:]
    assert secret[:8] not in reason and secret[:8] not in caught.value.message
    assert len(reason) <= REASON_LIMIT

    # Longer than the local limit: masked first, then cut (the ellipsis says so).
    check = failing_check('printf "%02000d%s\\n" 0 "$APP_SECRET"')
    with pytest.raises(DeployFailed) as caught:
        deploy_once(remote_lab, "longline", "v1", secret, healthcheck=check)
    reason = caught.value.reason
    assert len(reason) == REASON_LIMIT and reason.endswith("\u2026") and secret[:8] not in reason


def test_the_hosts_own_registry_credential_survives_and_none_is_left(remote_lab: RemoteLab) -> None:
    """R6: login and pull use a throwaway DOCKER_CONFIG; the host's config (same registry!) is untouched."""
    config = remote_lab.host.ssh.docker_config / "config.json"
    before = config.read_bytes() if config.exists() else None
    server = remote_lab.lab.registry.server
    # As docker writes it (tabs), for a user "operator" with a password of their own.
    theirs = json.dumps({"auths": {server: {"auth": "b3BlcmF0b3I6dGhlaXItb3duLXBhc3N3b3Jk"}}}, indent="\t")
    config.write_text(theirs)
    try:
        result = deploy_once(remote_lab, "owncreds", "v1", canary("APP"))
        assert result.outcome == "deployed"
        assert config.read_text() == theirs
        # The throwaway config is gone with the deploy: nothing but the env file in the service directory.
        directory = remote_lab.host.remote_dir / "owncreds"
        assert sorted(p.name for p in directory.iterdir()) == ["web.env"]
        # A failed pull leaves nothing either.
        missing = dataclasses.replace(
            step(remote_lab, "v1", canary("APP")), image=remote_lab.lab.image + "-missing:v1"
        )
        with RemoteHost("web1", remote_lab.plan("owncreds"), environ=remote_lab.environ()) as host:
            host.connect()
            with pytest.raises(DeployFailed) as caught:
                host.deploy(missing)
        assert caught.value.step == "pull", caught.value
        assert config.read_text() == theirs
        assert sorted(p.name for p in directory.iterdir()) == ["web.env"]
    finally:
        if before is None:
            config.unlink()
        else:
            config.write_bytes(before)


@pytest.fixture(scope="module")
def bare_image(remote_lab: RemoteLab, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The app v1 without any HEALTHCHECK, pushed: a container with no health check at all."""
    context = tmp_path_factory.mktemp("bare")
    (context / "Dockerfile").write_text(f"FROM {remote_lab.tags['v1']}\nHEALTHCHECK NONE\n")
    image = f"{remote_lab.lab.image}:remote-bare"
    remote_lab.lab.build_docker("build", "--network", "host", "-t", image, str(context))
    remote_lab.lab.build_docker("push", image)
    return image


def test_without_any_health_check_the_container_must_stay_up_for_the_readiness_delay(
    remote_lab: RemoteLab, bare_image: str
) -> None:
    """R8: no plan check and no image check is not "healthy" at the first poll (Kamal's readiness_delay)."""
    service = "bare"
    bare = dataclasses.replace(step(remote_lab, "v1", canary("APP")), image=bare_image)
    plan = remote_lab.plan(service, healthcheck=None, readiness_delay=3)
    with RemoteHost("web1", plan, environ=remote_lab.environ()) as host:
        host.connect()
        result = host.deploy(bare)
    assert result.outcome == "deployed"
    assert result.timings["healthy"] - result.timings["run"] >= 3, result.timings
    assert running(remote_lab, service) == ["bare-web-v1"]

    # One that exits after a second never counts as up: it is not restarted before it is up, so the reason
    # carries its own exit code (restarted, docker would report 0, and its "restarting" state is brief).
    # A long delay: the exit ends the wait at once, and a late-starting `sleep 1` on a loaded host cannot
    # outlast it (with 3 s, a container still running at the delay's end would count as up).
    crashing = remote_lab.plan(
        service,
        healthcheck=None,
        readiness_delay=60,
        roles=[
            {
                "name": "web",
                "cmd": ["-c", "sleep 1; exit 3"],
                "options": {"network": "host", "entrypoint": "/bin/sh"},
                "hosts": [{"host": "web1", "tags": []}],
            }
        ],
    )
    with RemoteHost("web1", crashing, environ=remote_lab.environ()) as host:
        host.connect()
        with pytest.raises(DeployFailed) as caught:
            host.deploy(dataclasses.replace(bare, version="v2"))
    assert caught.value.step == "health" and "code 3" in caught.value.reason, caught.value.reason
    assert running(remote_lab, service) == ["bare-web-v1"]


def test_an_app_slower_to_boot_than_three_checks_is_not_unhealthy(remote_lab: RemoteLab) -> None:
    """R8: checks fail for 6 s (3 retries at 1 s would say unhealthy); the start period is the timeout."""
    roles = [
        {
            "name": "web",
            "cmd": ["-c", "sleep 6; touch /tmp/ready; while :; do sleep 3600 & wait $!; done"],
            "options": {"network": "host", "entrypoint": "/bin/sh"},
            "hosts": [{"host": "web1", "tags": []}],
        }
    ]
    check = {"path": None, "port": None, "cmd": "test -e /tmp/ready", "interval": 1, "timeout": 30}
    result = deploy_once(remote_lab, "slowboot", "v1", canary("APP"), roles=roles, healthcheck=check)
    assert result.outcome == "deployed"
    assert result.timings["healthy"] - result.timings["run"] >= 5, result.timings
    assert running(remote_lab, "slowboot") == ["slowboot-web-v1"]


def test_a_container_that_exits_before_the_first_poll_is_reported_with_its_own_exit_code(
    remote_lab: RemoteLab, bare_image: str
) -> None:
    """R8: it exits at once with 3 and, were it restarted, would run forever; the deploy names code 3.

    With a restart policy from the start, docker restarted it within a fraction of a second and then said
    "running, exit code 0, restarted once": the reason read "code 0" whenever the first poll came after the
    restart, which on a loaded host it does. Without a policy until the container is up, the exit is final.
    """
    service = "quickexit"
    roles = [
        {
            "name": "web",
            # A restart finds /tmp/ran (the container's filesystem survives it) and stays up.
            "cmd": ["-c", "[ -e /tmp/ran ] && exec sleep 3600; touch /tmp/ran; exit 3"],
            "options": {"network": "host", "entrypoint": "/bin/sh"},
            "hosts": [{"host": "web1", "tags": []}],
        }
    ]
    # A long delay: the exit ends the wait at once; a container slow to start on a loaded host cannot still
    # be running when the delay ends (2 s was short enough to count a late starter as up).
    plan = remote_lab.plan(service, healthcheck=None, readiness_delay=60, roles=roles)
    bare = dataclasses.replace(step(remote_lab, "v1", canary("APP")), image=bare_image)
    with RemoteHost("web1", plan, environ=remote_lab.environ()) as host:
        host.connect()
        with pytest.raises(DeployFailed) as caught:
            host.deploy(bare)
    assert caught.value.step == "health", caught.value
    assert "exited with code 3" in caught.value.reason, caught.value.reason
    assert containers(remote_lab, service) == []


def test_the_roles_restart_policy_is_set_once_the_container_is_up(remote_lab: RemoteLab) -> None:
    """The container runs without a policy while it proves itself, then has the role's (default unless-stopped)."""
    result = deploy_once(remote_lab, "policy", "v1", canary("APP"))
    assert result.outcome == "deployed"
    policy = "{{.HostConfig.RestartPolicy.Name}} {{.HostConfig.RestartPolicy.MaximumRetryCount}}"
    shown = remote_lab.host.docker("inspect", "-f", policy, "policy-web-v1").stdout.decode().split()
    assert shown == ["unless-stopped", "0"]
    roles = [
        {
            "name": "web",
            "cmd": None,
            "options": {"network": "host", "restart": "on-failure:4"},
            "hosts": [{"host": "web1", "tags": []}],
        }
    ]
    deploy_once(remote_lab, "policy", "v2", canary("APP"), roles=roles)
    shown = remote_lab.host.docker("inspect", "-f", policy, "policy-web-v2").stdout.decode().split()
    assert shown == ["on-failure", "4"]
