"""Host key policy against a real OpenSSH sshd on 127.0.0.1 (throwaway keys): unknown, changed, pinned, hashed.

The parsing tests need nothing; the others start one sshd (tests/support/sshd.py) and skip without one
(fail under CI=true). ssh, ssh-keyscan and ssh-keygen are the real OpenSSH programs, run through
cli.deploy.process like in a deploy.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli.deploy import hostkeys, process
from cli.deploy.hostkeys import HostKeyRefused, HostUnreachable, Policy
from cli.deploy.remote import RemoteHost
from cli.errors import CliError
from cli.plans import ssh as ssh_plans
from tests.conftest import need
from tests.support import sshd
from tests.support.ports import closed_port


def test_fingerprint_matches_ssh_keygen(tmp_path: Path) -> None:
    if sshd.missing():
        need(str(sshd.missing()))
    key = sshd.keygen(tmp_path / "k", "test")
    blob = key.with_suffix(".pub").read_text().split()[1]
    assert hostkeys.fingerprint(blob) == sshd.fingerprint(key.with_suffix(".pub"))


def test_parse_keys_skips_comments_and_sorts_markers() -> None:
    blob = "AAAAC3NzaC1lZDI1NTE5AAAAIF+gmW6NmPgFr1wQGw6zidezLFz0R7M/x9xroch4skJb"
    text = (
        "# Host [h]:2 found: line 1\n"
        f"|1|abc=|def= ssh-ed25519 {blob}\n"
        f"@revoked h ssh-ed25519 {blob}\n"
        f"@cert-authority *.example ssh-ed25519 {blob}\n"
        "h ssh-ed25519 not-base64!\n"
        "garbage\n"
    )
    found = hostkeys.parse_keys(text)
    assert [key.blob for key in found.keys] == [blob]
    assert [key.blob for key in found.revoked] == [blob]
    assert found.cert_authority
    assert found.keys[0].describe().startswith("ED25519 SHA256:")


def test_parse_resolved() -> None:
    text = (
        "user deploy\nhostname 10.0.0.7\nport 2222\nhostkeyalias none\n"
        "userknownhostsfile ~/.ssh/known_hosts /k2\nglobalknownhostsfile /etc/ssh/ssh_known_hosts\n"
    )
    resolved = hostkeys.parse_resolved("web1", text)
    assert (resolved.hostname, resolved.port, resolved.user, resolved.host_key_alias) == (
        "10.0.0.7",
        2222,
        "deploy",
        None,
    )
    assert resolved.known_hosts_files[1:] == ("/k2", "/etc/ssh/ssh_known_hosts")
    assert not resolved.known_hosts_files[0].startswith("~")
    assert resolved.lookup_name == "[10.0.0.7]:2222"
    assert not resolved.proxied
    assert hostkeys.parse_resolved("web1", "hostname x\nproxyjump bastion\n").proxied


def test_pinned_fingerprints_are_validated() -> None:
    with pytest.raises(CliError, match=r"ssh\.host_keys\.web1"):
        hostkeys.check_fingerprint("MD5:aa:bb", "ssh.host_keys.web1")


@pytest.fixture(scope="module")
def host() -> Iterator[sshd.SshHost]:
    reason = sshd.missing()
    if reason:
        need(reason)
    # Host key checks never reach docker: the sessions' DOCKER_HOST can point nowhere.
    with sshd.ssh_host(docker_host="unix:///nonexistent/docker.sock", alias="lab") as running:
        yield running


@pytest.fixture
def short() -> Iterator[Path]:
    """A private directory with a short path: ssh refuses a ControlPath of 108 bytes or more."""
    path = Path(tempfile.mkdtemp(prefix="sr-t-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def recorded() -> Iterator[list[process.Invocation]]:
    calls: list[process.Invocation] = []
    process.set_recorder(calls.append)
    yield calls
    process.set_recorder(None)


def write_config(tmp_path: Path, host: sshd.SshHost, known_hosts: Path, alias: str = "lab") -> Path:
    config = tmp_path / "ssh_config"
    config.write_text(host.config_block(alias, known_hosts))
    return config


def policy(config: Path) -> Policy:
    # A long scan timeout: a loaded machine's sshd can take seconds to answer, and a refusal is immediate.
    return Policy(process.run, environ={"STRONGROOM_SSH_CONFIG": str(config)}, timeout=60)


def other_key_line(tmp_path: Path, name: str) -> tuple[str, str]:
    """A known_hosts line for 127.0.0.1 with a different (throwaway) key, and that key's fingerprint."""
    key = sshd.keygen(tmp_path / name, "impostor")
    public = " ".join(key.with_suffix(".pub").read_text().split()[:2])
    return public, sshd.fingerprint(key.with_suffix(".pub"))


def test_unknown_host_is_refused_before_anything_runs(
    host: sshd.SshHost, tmp_path: Path, recorded: list[process.Invocation]
) -> None:
    known = tmp_path / "known_hosts"
    known.write_text("")
    with pytest.raises(HostKeyRefused) as caught:
        policy(write_config(tmp_path, host, known)).check("lab", pinned=None, workdir=tmp_path)
    assert caught.value.known == []
    assert caught.value.presented == [f"ED25519 {host.fingerprint}"]
    assert host.fingerprint in caught.value.message and "unknown" in caught.value.message
    # Only ssh -G and ssh-keyscan ran: no ssh session was opened on the host.
    programs = [Path(call.argv[0]).name for call in recorded]
    assert "ssh-keyscan" in programs
    assert all(call.argv[0] != "ssh" or "-G" in call.argv for call in recorded)


def test_changed_key_shows_both_fingerprints(host: sshd.SshHost, tmp_path: Path) -> None:
    public, old_fingerprint = other_key_line(tmp_path, "old")
    known = tmp_path / "known_hosts"
    known.write_text(f"[{host.address}]:{host.port} {public}\n")
    with pytest.raises(HostKeyRefused) as caught:
        policy(write_config(tmp_path, host, known)).check("lab", pinned=None, workdir=tmp_path, scan=True)
    assert caught.value.known == [f"ED25519 {old_fingerprint}"]
    assert caught.value.presented == [f"ED25519 {host.fingerprint}"]
    assert old_fingerprint in caught.value.message and host.fingerprint in caught.value.message
    assert "CHANGED" in caught.value.message


PLAN = {"service": "shop", "ssh": {"user": None, "port": None, "host_keys": {}}, "roles": []}


def test_a_changed_key_stops_the_first_connection_showing_both_fingerprints(
    host: sshd.SshHost, tmp_path: Path, recorded: list[process.Invocation]
) -> None:
    """Without a scan: ssh's strict check refuses at the master, RemoteHost shows known and presented."""
    public, old_fingerprint = other_key_line(tmp_path, "old")
    known = tmp_path / "known_hosts"
    known.write_text(f"[{host.address}]:{host.port} {public}\n")
    config = write_config(tmp_path, host, known)
    remote = RemoteHost("lab", PLAN, environ={"STRONGROOM_SSH_CONFIG": str(config)})
    with remote, pytest.raises(HostKeyRefused) as caught:
        remote.connect()
    assert caught.value.known == [f"ED25519 {old_fingerprint}"]
    assert caught.value.presented == [f"ED25519 {host.fingerprint}"]
    assert "CHANGED" in caught.value.message and old_fingerprint in caught.value.message
    assert host.fingerprint in caught.value.message
    assert remote.round_trips == 1  # the refused master: no key scan, no session
    assert not any(Path(call.argv[0]).name == "ssh-keyscan" for call in recorded)


def test_a_revoked_key_stops_the_first_connection(host: sshd.SshHost, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_text(
        host.known_hosts_line() + f"@revoked [{host.address}]:{host.port} {host.host_public_key}\n"
    )
    config = write_config(tmp_path, host, known)
    remote = RemoteHost("lab", PLAN, environ={"STRONGROOM_SSH_CONFIG": str(config)})
    with remote, pytest.raises(HostKeyRefused, match="refused the host key"):
        remote.connect()


def test_known_key_is_accepted_and_ssh_agrees(host: sshd.SshHost, tmp_path: Path, short: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_text(host.known_hosts_line())
    config = write_config(tmp_path, host, known)
    accepted = policy(config).check("lab", pinned=None, workdir=tmp_path)
    assert accepted.how == "known_hosts" and accepted.round_trips == 0  # looked up locally, not scanned
    assert [key.fingerprint for key in accepted.keys] == [host.fingerprint]
    assert (accepted.resolved.hostname, accepted.resolved.port) == (host.address, host.port)
    scanned = policy(config).check("lab", pinned=None, workdir=tmp_path, scan=True)
    assert scanned.round_trips == 1 and [key.fingerprint for key in scanned.keys] == [host.fingerprint]
    # An ssh config's own remote command, tty or forwarding does not get in the way of ours.
    config.write_text(
        config.read_text() + "  RemoteCommand echo hijacked\n  RequestTTY force\n  ForwardAgent yes\n"
    )
    target = ssh_plans.Target(host="lab", control_dir=str(short), config=str(config))
    done = process.run(ssh_plans.command(target, "echo connected"), timeout=30)
    assert done.stdout.strip() == "connected", done.stderr


def test_hashed_known_hosts_is_accepted(host: sshd.SshHost, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_text(host.known_hosts_line())
    subprocess.run([sshd.SSH_KEYGEN, "-H", "-f", str(known)], check=True, capture_output=True)
    assert known.read_text().startswith("|1|") and host.address not in known.read_text()
    for scan in (False, True):
        accepted = policy(write_config(tmp_path, host, known)).check(
            "lab", pinned=None, workdir=tmp_path, scan=scan
        )
        assert accepted.how == "known_hosts"
        assert [key.fingerprint for key in accepted.keys] == [host.fingerprint]


def test_revoked_key_is_refused(host: sshd.SshHost, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_text(
        host.known_hosts_line() + f"@revoked [{host.address}]:{host.port} {host.host_public_key}\n"
    )
    with pytest.raises(HostKeyRefused, match="revoked"):
        policy(write_config(tmp_path, host, known)).check("lab", pinned=None, workdir=tmp_path, scan=True)


def test_pinned_fingerprint_is_accepted_with_exactly_that_key(
    host: sshd.SshHost, tmp_path: Path, short: Path
) -> None:
    # The user's known_hosts is empty: the pin alone decides.
    known = tmp_path / "empty_known_hosts"
    known.write_text("")
    config = write_config(tmp_path, host, known)
    workdir = short
    accepted = policy(config).check("lab", pinned=[host.fingerprint], workdir=workdir)
    assert accepted.how == "pinned"
    assert accepted.known_hosts is not None
    pinned_file = Path(accepted.known_hosts)
    assert pinned_file.read_text() == f"{hostkeys.PINNED_ALIAS} {host.host_public_key}\n"
    assert pinned_file.stat().st_mode & 0o777 == 0o600
    target = ssh_plans.Target(
        host="lab",
        control_dir=str(workdir),
        config=str(config),
        known_hosts=accepted.known_hosts,
        host_key_alias=accepted.host_key_alias,
    )
    done = process.run(ssh_plans.command(target, "echo pinned-ok"), timeout=30)
    assert done.stdout.strip() == "pinned-ok", done.stderr


def test_pinned_mismatch_is_refused_showing_both(host: sshd.SshHost, tmp_path: Path) -> None:
    _, other = other_key_line(tmp_path, "other")
    known = tmp_path / "known_hosts"
    known.write_text(host.known_hosts_line())  # known_hosts would accept: the pin still wins
    workdir = tmp_path / "private"
    workdir.mkdir()
    with pytest.raises(HostKeyRefused) as caught:
        policy(write_config(tmp_path, host, known)).check("lab", pinned=[other], workdir=workdir)
    assert caught.value.known == [other]
    assert caught.value.presented == [f"ED25519 {host.fingerprint}"]
    assert other in caught.value.message and host.fingerprint in caught.value.message
    assert list(workdir.iterdir()) == []  # no pinned known_hosts written for a refused key


def test_ssh_itself_refuses_a_key_the_pinned_file_does_not_hold(
    host: sshd.SshHost, tmp_path: Path, short: Path
) -> None:
    """Defence in depth: even with a wrong pinned file, ssh's strict check refuses (exit 255)."""
    public, _ = other_key_line(tmp_path, "wrong")
    wrong = tmp_path / "pinned"
    wrong.write_text(f"{hostkeys.PINNED_ALIAS} {public}\n")
    known = tmp_path / "known_hosts"
    known.write_text(host.known_hosts_line())
    target = ssh_plans.Target(
        host="lab",
        control_dir=str(short),
        config=str(write_config(tmp_path, host, known)),
        known_hosts=str(wrong),
        host_key_alias=hostkeys.PINNED_ALIAS,
    )
    done = process.run(ssh_plans.command(target, "echo should-not-run"), timeout=30)
    assert done.returncode == 255
    assert "should-not-run" not in done.stdout
    assert "Host key verification failed" in done.stderr


def test_unreachable_host(tmp_path: Path) -> None:
    if sshd.missing():
        need(str(sshd.missing()))
    with closed_port() as port:  # nothing listens there
        config = tmp_path / "ssh_config"
        config.write_text(
            sshd.config_block("gone", "127.0.0.1", port, tmp_path / "none", tmp_path / "known_hosts")
        )
        with pytest.raises(HostUnreachable, match="gone: unreachable"):
            policy(config).check("gone", pinned=None, workdir=tmp_path)


def test_a_known_host_that_does_not_answer_is_unreachable(host: sshd.SshHost, tmp_path: Path) -> None:
    # Nothing listens there; known_hosts has a key for it, so no scan comes first.
    with closed_port() as port:
        known = tmp_path / "known_hosts"
        known.write_text(f"[127.0.0.1]:{port} {host.host_public_key}\n")
        config = tmp_path / "ssh_config"
        config.write_text(sshd.config_block("gone", "127.0.0.1", port, host.client_key, known))
        remote = RemoteHost("gone", PLAN, environ={"STRONGROOM_SSH_CONFIG": str(config)})
        with remote, pytest.raises(HostUnreachable, match=r"gone: unreachable: .*[Cc]onnection refused"):
            remote.connect()
    assert remote.round_trips == 1
