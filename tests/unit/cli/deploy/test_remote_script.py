"""The remote scripts as text: valid POSIX sh, every value quoted and validated, no secret in them."""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from cli.plans import remote

SHELLS = [shell for shell in ("sh", "dash", "bash") if shutil.which(shell)]


def step(**extra: object) -> remote.DeployScript:
    values: dict[str, object] = {
        "service": "shop",
        "role": "web",
        "version": "abc123",
        "image": "127.0.0.1:5000/acme/shop:abc123",
        "deploy_id": "d-42",
        "env_fingerprint": "hmac-sha256:AbCdEf0123456789",
        "registry": "127.0.0.1:5000",
        "registry_username": "deployer",
        "options": {"network": "host", "memory": "256m"},
        "cmd": "bin/server --port 8000",
        "health": remote.health_from_plan({"path": "/up", "port": 8000, "interval": 2, "timeout": 30}),
    }
    values.update(extra)
    return remote.DeployScript(**values)  # type: ignore[arg-type]


NO_REGISTRY: dict[str, object] = {
    "registry": None,
    "registry_username": None,
    "health": None,
    "pull": "missing",
}


def all_scripts() -> dict[str, str]:
    return {
        "deploy": remote.deploy(step()),
        "deploy-no-registry": remote.deploy(
            step(registry=None, registry_username=None, health=None, pull="missing")
        ),
        "deploy-stop-first": remote.deploy(step(options={"publish": ["80:8000"]})),
        "preflight": remote.preflight(),
        "status": remote.status("shop"),
        "status-role": remote.status("shop", "web"),
        "logs": remote.logs("shop", "web", tail=10, since="10m"),
        "exec": remote.exec_running("shop", "web", ["bin/rails", "console"], interactive=True),
        "exec-new": remote.exec_new("shop", "web", ["bin/rails", "db:migrate"], options={"network": "host"}),
        "exec-new-entrypoint": remote.exec_new("shop", "web", ["-c", "env"], entrypoint="/bin/sh"),
        "stop": remote.stop("shop", "web", stop_timeout=5),
        "start": remote.start("shop"),
        "remove": remote.remove("shop", "web"),
        "remove-all": remote.remove("shop"),
    }


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize("name", list(all_scripts()))
def test_scripts_parse(shell: str, name: str) -> None:
    text = all_scripts()[name]
    checked = subprocess.run([shell, "-n"], input=text.encode(), capture_output=True, check=False)
    assert checked.returncode == 0, checked.stderr.decode()


def header_values(text: str, names: list[str]) -> dict[str, str]:
    """Run only the assignments at the top of a script and read the variables back."""
    header = text.split("\numask 077", 1)[0]
    probe = header + "\n" + "".join(f"printf '%s\\0' \"${name}\"\n" for name in names)
    out = subprocess.run(["sh", "-c", probe], capture_output=True, check=True).stdout
    return dict(zip(names, out.decode().split("\0")[:-1], strict=True))


def test_values_reach_the_script_intact() -> None:
    text = remote.deploy(step())
    found = header_values(
        text, ["service", "role", "image", "repo", "name", "registry", "registry_user", "login"]
    )
    assert found == {
        "service": "shop",
        "role": "web",
        "image": "127.0.0.1:5000/acme/shop:abc123",
        "repo": "127.0.0.1:5000/acme/shop",
        "name": "shop-web-abc123",
        "registry": "127.0.0.1:5000",
        "registry_user": "deployer",
        "login": "1",
    }


def words_after(text: str, start: str, end: str) -> list[str]:
    """The words a shell reads between two markers of the docker run line."""
    run_line = text[text.index("out=$(docker run -d") :].split("2>&1)", maxsplit=1)[0]
    words = run_line.split(start, 1)[1].split(end, 1)[0] if end else run_line.split(start, 1)[1]
    out = subprocess.run(
        ["sh", "-c", f"set -- {words}; printf '%s\\0' \"$@\""], capture_output=True, check=True
    )
    return out.stdout.decode().split("\0")[:-1]


def test_option_values_and_command_words_are_quoted() -> None:
    hostile = "$(touch /tmp/strongroom-pwned);`id`;'\"\\ *"
    text = remote.deploy(
        step(options={"label": hostile, "network": "host"}, cmd=["echo", hostile], health=None)
    )
    assert words_after(text, '"$image"', "") == ["echo", hostile]
    assert words_after(text, '--env-file "$sr_env"', '"$image"') == ["--label", hostile, "--network", "host"]


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"service": "shop;id"}, "service"),
        ({"role": "-web"}, "role"),
        ({"version": "v1 v2"}, "version"),
        ({"image": "Shop:latest"}, "image"),
        ({"image": "shop:$(id)"}, "image"),
        ({"deploy_id": "a b"}, "deploy id"),
        ({"env_fingerprint": "x"}, "env_fingerprint"),
        ({"registry": "reg;id"}, "registry.server"),
        ({"registry_username": "a b"}, "registry.username"),
        ({"registry_username": None}, "registry.username"),
        ({"retain_images": 0}, "retain_images"),
        ({"options": {"env": "A=b"}}, "options.env"),
        ({"options": {"e": "A=b"}}, "options.e"),
        ({"options": {"name": "x"}}, "options.name"),
        ({"options": {"health-cmd": "x"}}, "options.health-cmd"),
        ({"options": {"label": "strongroom.version=x"}}, "options.label"),
        ({"options": {"-x": "1"}}, "options.-x"),
        ({"cmd": "echo 'unterminated"}, "cmd"),
    ],
)
def test_bad_values_are_refused_naming_the_field(extra: dict[str, object], field: str) -> None:
    with pytest.raises(remote.ScriptError, match=f"^(roles\\.web\\.)?{field.replace('.', '[.]')}"):
        remote.deploy(step(**extra))


def test_run_options() -> None:
    assert remote.run_options(
        {"network": "host", "publish": ["80:80", "443:443"], "init": True, "cpus": 1.5}
    ) == [
        "--network",
        "host",
        "--publish",
        "80:80",
        "--publish",
        "443:443",
        "--init",
        "--cpus",
        "1.5",
    ]
    assert remote.run_options({"init": False, "memory": None}) == []
    with pytest.raises(remote.ScriptError, match=r"options\.tty"):
        remote.run_options({"tty": True})


def test_health_from_plan() -> None:
    assert remote.health_from_plan(None) is None
    http = remote.health_from_plan({"path": "/up", "port": 3000, "interval": 2, "timeout": 40})
    assert http is not None
    assert (
        http.cmd
        == "wget -q -O /dev/null http://127.0.0.1:3000/up || curl -fsS -o /dev/null http://127.0.0.1:3000/up"
    )
    assert http.timeout == 40
    assert http.options()[:4] == ["--health-cmd", http.cmd, "--health-interval", "2s"]
    cmd = remote.health_from_plan({"cmd": "pg_isready", "interval": None, "timeout": None})
    assert cmd is not None and cmd.cmd == "pg_isready" and cmd.interval == remote.DEFAULT_HEALTH_INTERVAL
    with pytest.raises(remote.ScriptError, match=r"healthcheck\.path"):
        remote.health_from_plan({"path": "up now", "port": 80})
    with pytest.raises(remote.ScriptError, match=r"healthcheck\.interval"):
        remote.health_from_plan({"path": "/up", "interval": 0})
    with pytest.raises(remote.ScriptError, match=r"healthcheck\.interval 0\.05: .* from 0\.1"):
        remote.health_from_plan({"path": "/up", "interval": 0.05})


def test_a_sub_second_health_interval_reaches_docker_and_the_script_polls_as_often() -> None:
    """Issue 17: docker probes every 0.25 s (Go durations take fractions), and the script looks as often."""
    fast = remote.health_from_plan({"cmd": "test -e /tmp/ready", "interval": 0.25, "timeout": 30})
    assert fast is not None and fast.interval == 0.25
    options = fast.options()
    assert options[options.index("--health-interval") + 1] == "0.25s"
    # One probe may take 5 s whatever the interval (docker's probe timeout is in whole seconds).
    assert options[options.index("--health-timeout") + 1] == "5s"
    assert fast.poll == "0.25"
    slow = remote.health_from_plan({"cmd": "true", "interval": 5, "timeout": 30})
    assert slow is not None and slow.poll == "0.5" and "--health-interval" in slow.options()
    text = remote.deploy(step(health=fast))
    assert "poll=0.25\n" in text and 'sleep "$poll"' in text


def test_health_options_reach_docker_run() -> None:
    text = remote.deploy(step())
    assert "--health-cmd 'wget -q -O /dev/null http://127.0.0.1:8000/up" in text
    assert "wait_seconds=30" in text
    assert f"wait_seconds={remote.DEFAULT_HEALTH_TIMEOUT}" in remote.deploy(step(health=None))
    assert "--health-cmd" not in remote.deploy(step(health=None))


def test_strategy() -> None:
    assert step().strategy == "start-first"
    assert step(options={"publish": "80:80"}).strategy == "stop-first"
    assert "strategy=stop-first" in remote.deploy(step(options={"publish": "80:80"}))


def test_the_password_and_env_file_go_on_stdin_only() -> None:
    secret = "CANARY-pw-0123456789"
    env = b"DATABASE_URL=postgres://u:CANARY-env-9876@db/app\n"
    script = step()
    text = remote.deploy(script)
    data = remote.stdin_for(script, env, secret)
    assert data == secret.encode() + b"\n" + env
    assert "CANARY" not in text
    # The password is read with `IFS= read -r` and piped by the builtin printf into --password-stdin.
    assert "IFS= read -r sr_pw" in text
    assert 'printf \'%s\\n\' "$sr_pw" | DOCKER_CONFIG="$sr_dc" docker login' in text
    logins = [line for line in text.splitlines() if "docker login" in line and "DOCKER_CONFIG" in line]
    assert len(logins) == 1 and "--password-stdin" in logins[0]
    assert " -p " not in logins[0] and "--password " not in logins[0]
    # Without a registry there is no password line.
    plain = step(registry=None, registry_username=None)
    assert remote.stdin_for(plain, env, None) == env
    with pytest.raises(remote.ScriptError, match="registry_password"):
        remote.stdin_for(script, env, None)
    with pytest.raises(remote.ScriptError, match="registry_password"):
        remote.stdin_for(script, env, "two\nlines")


def test_env_file_is_written_private_and_atomically() -> None:
    text = remote.deploy(step())
    assert text.index("umask 077") < text.index("cat >")
    assert '( set -C; cat > "$sr_tmp" )' in text
    assert 'chmod 700 "$sr_dir"' in text and 'chmod 600 "$sr_tmp"' in text
    assert 'mv -f "$sr_tmp" "$sr_dir/$role.env.next"' in text
    assert 'sr_base="${STRONGROOM_REMOTE_DIR:-$HOME/.strongroom}"' in text


def test_one_deploy_per_role_and_host_at_a_time() -> None:
    text = remote.deploy(step())
    assert text.index('mkdir "$sr_lock"') < text.index("IFS= read -r sr_pw")
    assert text.rstrip().splitlines()[-3] == 'rmdir "$sr_lock" 2>/dev/null'


def test_labels_and_result_line() -> None:
    text = remote.deploy(step())
    for label in ("service", "role", "version", "env-fingerprint", "deploy"):
        assert f'--label "strongroom.{label}=' in text
    assert "STRONGROOM-RESULT" in text


def test_status_prints_chosen_fields_not_the_environment() -> None:
    text = remote.status("shop", "web")
    assert "{{json .Config.Env}}" not in text and "{{json .}}" not in text
    assert "STRONGROOM-CONTAINER" in text
    assert "label=strongroom.role=$role" in text


def test_image_refs() -> None:
    assert remote.repository("127.0.0.1:5000/acme/shop:abc") == "127.0.0.1:5000/acme/shop"
    assert remote.repository("shop") == "shop"
    assert remote.repository("ghcr.io/acme/shop@sha256:" + "a" * 64) == "ghcr.io/acme/shop"
    assert remote.check_image("localhost:5000/lab/app:v1")


def test_remote_host_helpers() -> None:
    from cli.deploy.remote import DeployStep, image_ref, parse_line

    assert image_ref({"image": "127.0.0.1:5000/acme/shop"}, "v1") == "127.0.0.1:5000/acme/shop:v1"
    assert image_ref({"image": "acme/shop:pinned"}, "v1") == "acme/shop:pinned"
    with pytest.raises(remote.ScriptError, match="version"):
        image_ref({"image": "acme/shop"}, "v 1")
    text = (
        'noise\nSTRONGROOM-RESULT {"outcome":"deployed"}\nSTRONGROOM-RESULT {broken\nSTRONGROOM-RESULTX {}\n'
    )
    assert parse_line("STRONGROOM-RESULT", text) == [{"outcome": "deployed"}]
    secret = "CANARY-in-env-file"
    made = DeployStep("web", "v1", "shop:v1", f"K={secret}\n".encode(), "", "d", registry_password=secret)
    assert secret not in repr(made) and secret not in str(made)


def test_remote_host_refuses_bad_plan_values_before_running_anything() -> None:
    from cli.deploy.remote import DeployStep, RemoteHost
    from cli.plans.ssh import PlanError

    calls: list[list[str]] = []

    def run(argv: list[str], **_: object) -> object:
        calls.append(argv)
        raise AssertionError("nothing may run")

    plan = {"service": "shop", "ssh": {"user": None, "port": None, "host_keys": {}}, "roles": []}
    with pytest.raises(PlanError, match="ssh host"):
        RemoteHost("-oProxyCommand=id", plan, run=run)  # type: ignore[arg-type]
    with pytest.raises(remote.ScriptError, match="service"):
        RemoteHost("web1", {**plan, "service": "shop;id"}, run=run)  # type: ignore[arg-type]
    host = RemoteHost("web1", plan, run=run)  # type: ignore[arg-type]
    from cli.errors import CliError

    with pytest.raises(CliError, match="not connected"):
        host.deploy(DeployStep("web", "v1", "shop:v1", b"", "", "d"))
    assert calls == []


JSTR_TEXTS = [
    "plain",
    "",
    "tab\there",
    "two\nlines",
    "trailing newline\n\n",
    "\nleading",
    'quote " and backslash \\ and \\n literally',
    "every control: " + "".join(chr(i) for i in range(1, 32)) + "\x7f",
    "non-ASCII: caf\u00e9 \u2603",
    "%s %d %% printf-like",
    "x" * 70000,
]


@pytest.mark.parametrize("shell", SHELLS)
def test_jstr_is_json_the_local_side_parses_back_to_the_exact_text(shell: str) -> None:
    """R3: control characters are escaped, not dropped, so the redactor sees the value as it was."""
    prelude = remote.preflight().split("\nsr_base=", 1)[0].split("umask 077", 1)[1]
    for text in JSTR_TEXTS:
        probe = "umask 077" + prelude + '\njstr "$SR_TEXT"\n'
        out = subprocess.run(
            [shell, "-c", probe],
            env={"SR_TEXT": text, "PATH": "/usr/bin:/bin"},
            capture_output=True,
            check=True,
        ).stdout.decode()
        assert json.loads(out) == text, (shell, text[:40])
        assert "\n" not in out and "\t" not in out  # one line, as the result line must be
        # The same escapes json.dumps uses, so a value's JSON form (which the redactor knows) is in the line.
        assert out == json.dumps(text, ensure_ascii=False), (shell, text[:40])


def run_locally(text: str, home: Path, **env: str) -> subprocess.CompletedProcess[bytes]:
    """Run a remote script in a real sh on this machine, with a docker that cannot reach any engine."""
    environ = {"HOME": str(home), "PATH": "/usr/bin:/bin", "DOCKER_HOST": "unix:///nonexistent.sock", **env}
    return subprocess.run(
        ["sh", "-c", text], env=environ, input=b"", capture_output=True, check=False, timeout=60
    )


@pytest.mark.parametrize("which", ["preflight", "deploy"])
def test_the_default_base_directory_is_made_private(tmp_path: Path, which: str) -> None:
    """R12: a $HOME/.strongroom left at 0755 (by an older version, or by hand) becomes 0700."""
    base = tmp_path / ".strongroom"
    base.mkdir()
    base.chmod(0o755)
    text = remote.preflight() if which == "preflight" else remote.deploy(step(**NO_REGISTRY))
    done = run_locally(text, tmp_path)
    assert stat.S_IMODE(base.stat().st_mode) == 0o700, done.stdout
    if which == "deploy":  # it got as far as the service directory (and failed later, without docker)
        assert stat.S_IMODE((base / "shop").stat().st_mode) == 0o700 and b'"outcome":"failed"' in done.stdout
    # Made by the script: 0700 from the start.
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    run_locally(text, fresh)
    assert stat.S_IMODE((fresh / ".strongroom").stat().st_mode) == 0o700


def test_an_explicit_remote_dir_that_exists_is_left_as_it_is(tmp_path: Path) -> None:
    """A STRONGROOM_REMOTE_DIR the operator chose may be shared: only what the script creates is made 0700."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o755)
    run_locally(remote.deploy(step(**NO_REGISTRY)), tmp_path, STRONGROOM_REMOTE_DIR=str(shared))
    assert stat.S_IMODE(shared.stat().st_mode) == 0o755
    assert stat.S_IMODE((shared / "shop").stat().st_mode) == 0o700
    made = tmp_path / "made" / "here"
    run_locally(remote.preflight(), tmp_path, STRONGROOM_REMOTE_DIR=str(made))
    assert stat.S_IMODE(made.stat().st_mode) == 0o700


def test_login_and_pull_use_a_throwaway_docker_config() -> None:
    """R6: never the host's docker config (its credentials, its store); no logout that would delete them."""
    text = remote.deploy(step())
    assert "docker logout" not in text
    assert '| DOCKER_CONFIG="$sr_dc" docker login' in text
    assert 'out=$(DOCKER_CONFIG="$sr_dc" docker pull -q "$image" 2>&1)' in text
    assert 'sr_dc="$sr_dir/.docker-$role"' in text and 'mkdir -m 700 "$sr_dc"' in text
    # Removed right after the pull, on failure and on exit.
    assert text.index('sr_forget_login\n  [ "$pulled" = 0 ]') < text.index("mark pull")
    assert "trap 'sr_forget_login' EXIT" in text


def test_the_throwaway_docker_config_keeps_only_the_current_context(tmp_path: Path) -> None:
    """The host's config.json goes through the script's sed: the context survives, credentials do not."""
    text = remote.deploy(step())
    helper = text[text.index("sr_private_login() {") :].split("\n}\n", 1)[0] + "\n}\n"
    host = tmp_path / "host-docker"
    (host / "contexts" / "meta").mkdir(parents=True)
    (host / "config.json").write_text(
        '{\n  "auths": {"127.0.0.1:5000": {"auth": "b3BlcmF0b3I6c2VjcmV0"}},\n'
        '  "credsStore": "pass",\n  "currentContext": "remote-engine"\n}\n'
    )
    (tmp_path / "svc").mkdir()
    prelude = remote.preflight().split("umask 077", 1)[1].split("\nsr_base=", 1)[0]
    probe = (
        f'{prelude}\nsr_dir={tmp_path}/svc\nrole=web\n{helper}sr_private_login && cat "$sr_dc/config.json"\n'
    )
    out = subprocess.run(
        ["sh", "-c", probe],
        env={"PATH": "/usr/bin:/bin", "DOCKER_CONFIG": str(host)},
        capture_output=True,
        check=True,
    ).stdout.decode()
    assert json.loads(out) == {"currentContext": "remote-engine"}
    made = tmp_path / "svc" / ".docker-web"
    assert stat.S_IMODE(made.stat().st_mode) == 0o700
    assert (made / "contexts").resolve() == (host / "contexts").resolve()
    (host / "config.json").write_text('{"auths": {}}')
    out = subprocess.run(
        ["sh", "-c", probe],
        env={"PATH": "/usr/bin:/bin", "DOCKER_CONFIG": str(host)},
        capture_output=True,
        check=True,
    ).stdout.decode()
    assert json.loads(out) == {}


def test_health_start_period_is_the_health_timeout_and_readiness_delay_is_set() -> None:
    """R8: a slow app's failed checks during the timeout do not count; without any check it must stay up."""
    health = remote.health_from_plan({"path": "/up", "port": 8000, "interval": 1, "timeout": 45})
    assert health is not None
    words = health.options()
    assert words[words.index("--health-start-period") + 1] == "45s"
    assert words[words.index("--health-retries") + 1] == "3"
    text = remote.deploy(step(health=health))
    assert "--health-start-period 45s" in text
    found = header_values(text, ["wait_seconds", "start_period", "readiness_delay"])
    assert found == {"wait_seconds": "45", "start_period": "45", "readiness_delay": "7"}
    bare = header_values(
        remote.deploy(step(health=None, readiness_delay=300)),
        ["wait_seconds", "start_period", "readiness_delay"],
    )
    assert bare == {"wait_seconds": "310", "start_period": "0", "readiness_delay": "300"}
    with pytest.raises(remote.ScriptError, match=r"^deploy\.readiness_delay"):
        remote.deploy(step(readiness_delay=601))


def test_the_restart_policy_is_the_roles_and_set_only_once_the_container_is_up() -> None:
    """R8: `docker run --restart no`, then `docker update` to the role's policy (default unless-stopped)."""
    text = remote.deploy(step())
    assert "--restart no \\" in text and "--restart unless-stopped" not in text
    assert header_values(text, ["restart_policy"]) == {"restart_policy": "unless-stopped"}
    assert 'docker update --restart "$restart_policy" "$cid"' in text
    custom = remote.deploy(step(options={"network": "host", "restart": "on-failure:5"}))
    assert header_values(custom, ["restart_policy"]) == {"restart_policy": "on-failure:5"}
    assert "--restart on-failure:5" not in custom  # not a docker run word: it would apply at once
    for bad in ("sometimes", "always; rm -rf /", True, 3):
        with pytest.raises(remote.ScriptError, match=r"^roles\.web\.options\.restart"):
            remote.deploy(step(options={"restart": bad}))


@pytest.mark.parametrize(
    ("interval", "probe"), [(0.25, "5s"), (1, "5s"), (5, "5s"), (7.5, "8s"), (60, "30s")]
)
def test_one_probe_may_take_five_seconds_or_its_interval_whichever_is_longer(
    interval: float, probe: str
) -> None:
    """A slow but healthy check on a loaded host is not a failed one: a probe's timeout is not tied to a
    short interval (kamal-proxy's default is 5 s a check), and never over 30 s."""
    health = remote.health_from_plan({"path": "/up", "port": 3000, "interval": interval, "timeout": 60})
    assert health is not None
    options = health.options()
    assert options[options.index("--health-timeout") + 1] == probe
