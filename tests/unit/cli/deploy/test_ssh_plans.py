"""The ssh argv builders: strict host key checking always, one master, the destination never read as an option."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest

from cli.plans import ssh

ROOT = Path(__file__).resolve().parents[4]


def target(**extra: object) -> ssh.Target:
    return ssh.Target(host="web1", control_dir="/tmp/sr-ssh-x", **extra)  # type: ignore[arg-type]


def options(argv: list[str]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for flag, value in itertools.pairwise(argv):
        if flag == "-o":
            key, _, val = value.partition("=")
            found.setdefault(key, []).append(val)
    return found


def all_argvs(t: ssh.Target) -> list[list[str]]:
    return [ssh.master(t, "true"), ssh.command(t, "true"), ssh.exit_master(t)]


@pytest.mark.parametrize(
    "t",
    [
        target(),
        target(user="deploy", port=2222, config="/etc/strongroom/ssh_config"),
        target(known_hosts="/tmp/sr-ssh-x/known_hosts", host_key_alias="strongroom-pinned"),
    ],
)
def test_every_connection_is_batch_and_strict(t: ssh.Target) -> None:
    for argv in all_argvs(t):
        found = options(argv)
        assert found["BatchMode"] == ["yes"]
        assert found["StrictHostKeyChecking"] == ["yes"]
        assert found["ControlPath"] == ["/tmp/sr-ssh-x/%C"]
        # The destination follows `--`, so no host name is ever parsed as an option.
        assert argv[argv.index("--") + 1] == "web1"


def test_master_runs_its_command_and_persists() -> None:
    argv = ssh.master(target(), "echo preflight", persist_seconds=120)
    found = options(argv)
    assert found["ControlMaster"] == ["yes"]
    assert found["ControlPersist"] == ["120"]
    assert argv[-2:] == ["web1", "echo preflight"]


def test_commands_ride_the_master_and_never_become_one() -> None:
    argv = ssh.command(target(), "docker ps")
    assert options(argv)["ControlMaster"] == ["no"]
    assert argv[-2:] == ["web1", "docker ps"]


def test_exit_asks_the_master_to_end() -> None:
    argv = ssh.exit_master(target())
    assert argv[argv.index("-O") + 1] == "exit"
    assert argv[-1] == "web1"


def test_user_port_and_config_come_first() -> None:
    argv = ssh.command(target(user="deploy", port=2222, config="/cfg"), "true")
    assert argv[:7] == ["ssh", "-F", "/cfg", "-l", "deploy", "-p", "2222"]


def test_pinned_key_replaces_every_known_hosts_file() -> None:
    argv = ssh.command(target(known_hosts="/d/known_hosts", host_key_alias="strongroom-pinned"), "true")
    found = options(argv)
    assert found["UserKnownHostsFile"] == ["/d/known_hosts"]
    assert found["GlobalKnownHostsFile"] == ["none"]
    assert found["HostKeyAlias"] == ["strongroom-pinned"]
    # No other source of keys: neither an ssh config's KnownHostsCommand nor SSHFP records in DNS.
    assert found["KnownHostsCommand"] == ["none"]
    assert found["VerifyHostKeyDNS"] == ["no"]
    assert "UserKnownHostsFile" not in options(ssh.command(target(), "true"))


def test_pinned_file_and_alias_go_together() -> None:
    with pytest.raises(ssh.PlanError):
        target(known_hosts="/d/known_hosts")


def test_no_forwarding_whatever_the_config_says() -> None:
    found = options(ssh.command(target(), "true"))
    assert found["ForwardAgent"] == ["no"]
    assert found["ClearAllForwardings"] == ["yes"]
    assert found["RemoteCommand"] == ["none"] and found["PermitLocalCommand"] == ["no"]


@pytest.mark.parametrize("host", ["-oProxyCommand=touch /tmp/x", "web 1", "web;id", "", "a$(id)", "-p"])
def test_hosts_that_are_not_hosts_are_refused(host: str) -> None:
    with pytest.raises(ssh.PlanError, match="ssh host"):
        ssh.Target(host=host, control_dir="/d")
    with pytest.raises(ssh.PlanError):
        ssh.resolve("ssh", host, config=None)


@pytest.mark.parametrize("host", ["web1", "web-1.example.com", "10.0.0.7", "::1", "fe80::1%eth0", "my_alias"])
def test_real_hosts_pass(host: str) -> None:
    assert ssh.check_host(host) == host


@pytest.mark.parametrize(
    ("field", "value"), [("user", "-oX"), ("user", "a b"), ("port", 0), ("port", 70000), ("port", True)]
)
def test_bad_user_or_port_names_the_field(field: str, value: object) -> None:
    with pytest.raises(ssh.PlanError, match=f"ssh.{field}"):
        target(**{field: value})


def test_binaries_and_config_from_the_environment() -> None:
    assert ssh.binaries({}) == ("ssh", "ssh-keyscan", "ssh-keygen")
    assert ssh.binaries(
        {
            "STRONGROOM_SSH": "/opt/ssh",
            "STRONGROOM_SSH_KEYSCAN": "/opt/scan",
            "STRONGROOM_SSH_KEYGEN": "/opt/gen",
        }
    ) == ("/opt/ssh", "/opt/scan", "/opt/gen")
    assert ssh.binaries({"STRONGROOM_SSH": "/opt/ssh"}) == ("/opt/ssh", "ssh-keyscan", "ssh-keygen")
    assert ssh.config_file({"STRONGROOM_SSH_CONFIG": "/c"}) == "/c"
    assert ssh.config_file({}) is None


def test_resolve_keyscan_and_lookup() -> None:
    assert ssh.resolve("ssh", "web1", config="/c", port=2222) == [
        "ssh",
        "-F",
        "/c",
        "-p",
        "2222",
        "-G",
        "--",
        "web1",
    ]
    assert ssh.keyscan("ssh-keyscan", "127.0.0.1", 2222, timeout=5) == [
        "ssh-keyscan",
        "-T",
        "5",
        "-p",
        "2222",
        "--",
        "127.0.0.1",
    ]
    assert ssh.known_hosts_lookup("ssh-keygen", "[h]:2", "/k") == ["ssh-keygen", "-F", "[h]:2", "-f", "/k"]
    assert ssh.lookup_name("h", 22) == "h"
    assert ssh.lookup_name("h", 2222) == "[h]:2222"
    assert ssh.lookup_name("h", 2222, "alias") == "alias"
    with pytest.raises(ssh.PlanError):
        ssh.keyscan("ssh-keyscan", "-oX", 22)


def test_quote_command_keeps_words_whole() -> None:
    assert ssh.quote_command(["sh", "-c", "echo 'a b'; $HOME"]) == "sh -c 'echo '\"'\"'a b'\"'\"'; $HOME'"


def test_no_code_path_weakens_host_key_checking() -> None:
    """Static: nothing under cli/ (or its scripts) accepts new or changed keys or turns checking off."""
    weak = re.compile(
        r"StrictHostKeyChecking\s*=?\s*(?:no|off|accept-new|ask)|AutoAdd|UserKnownHostsFile\s*=\s*/dev/null",
        re.IGNORECASE,
    )
    offenders = []
    for path in sorted((ROOT / "cli").rglob("*.py")):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if weak.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert offenders == []
    # And the one place the option is written says yes.
    text = (ROOT / "cli" / "plans" / "ssh.py").read_text(encoding="utf-8")
    assert re.findall(r'"StrictHostKeyChecking=(\w+)"', text) == ["yes"]
