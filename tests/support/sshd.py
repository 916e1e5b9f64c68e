"""A throwaway SSH "host" for tests: a real OpenSSH sshd on a loopback address, key-only, throwaway keys.

Started the way ../shared/lab/e2e-pipeline.sh does: `/usr/sbin/sshd -D -e -f CONFIG` with a throwaway
ed25519 host key, `AuthorizedKeysFile` holding one throwaway client key, no PAM, no passwords. Its sessions
get `SetEnv DOCKER_HOST=… DOCKER_CONFIG=… STRONGROOM_REMOTE_DIR=…`, so each fake host has its own Docker
engine, docker client config and Strongroom remote directory although they all run on this machine as
root. Stopped by the PID it was started with (TERM, then KILL); its directory is then removed.

Needs root and /usr/sbin/sshd (openssh-server) and ssh/ssh-keygen (openssh-client).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support.ports import free_port

SSHD = "/usr/sbin/sshd"
SSH = "/usr/bin/ssh"
SSH_KEYGEN = "/usr/bin/ssh-keygen"
# ssh as the deploy tests use it: never prompt, never accept an unknown host key.
STRICT = (SSH, "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes")


def missing() -> str | None:
    """Why a throwaway sshd cannot start here (with the install hint), or None if it can."""
    if os.geteuid() != 0:
        return "the throwaway sshd needs root (it logs in as root on 127.0.0.1)"
    if not os.access(SSHD, os.X_OK):
        return "sshd is not installed (apt-get install openssh-server)"
    if not (os.access(SSH, os.X_OK) and os.access(SSH_KEYGEN, os.X_OK)):
        return "ssh and ssh-keygen are not installed (apt-get install openssh-client)"
    return None


def keygen(path: Path, comment: str) -> Path:
    """A fresh passwordless ed25519 key pair at path (private, 0600) and path.pub."""
    subprocess.run(
        [SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        capture_output=True,
    )
    return path


def fingerprint(public_key: Path) -> str:
    """`SHA256:…` of a public key, as `ssh-keygen -lf` prints it (the manifest's host_keys format)."""
    out = subprocess.run([SSH_KEYGEN, "-lf", str(public_key)], check=True, capture_output=True, text=True)
    return out.stdout.split()[1]


@dataclass
class SshHost:
    """A running sshd whose sessions talk to one Docker engine and one remote directory."""

    root: Path
    address: str
    port: int
    pid: int
    host_key: Path
    client_key: Path
    remote_dir: Path
    docker_host: str
    docker_config: Path
    alias: str

    @property
    def own_config(self) -> Path:
        """An ssh config of its own (Host `alias`) with a known_hosts holding its key."""
        return self.root / "ssh_config"

    @property
    def host_public_key(self) -> str:
        """`ssh-ed25519 AAAA…` of the host key."""
        return " ".join(self.host_key.with_suffix(".pub").read_text().split()[:2])

    @property
    def fingerprint(self) -> str:
        """The host key's `SHA256:…` fingerprint."""
        return fingerprint(self.host_key.with_suffix(".pub"))

    def known_hosts_line(self) -> str:
        """The known_hosts line OpenSSH looks up for this address and port (`[127.0.0.1]:PORT key`)."""
        return f"[{self.address}]:{self.port} {self.host_public_key}\n"

    def config_block(self, alias: str, known_hosts: Path) -> str:
        """An ssh_config `Host` block making `alias` reach this sshd as root with the throwaway key."""
        return config_block(alias, self.address, self.port, self.client_key, known_hosts)

    def ssh(
        self, *remote: str, input: bytes | None = None, timeout: float = 30
    ) -> subprocess.CompletedProcess[bytes]:
        """Run a remote command through its own ssh config, strictly checking the host key."""
        return subprocess.run(
            [*STRICT, "-F", str(self.own_config), self.alias, *remote],
            input=input,
            capture_output=True,
            timeout=timeout,
            check=False,
        )


def config_block(alias: str, address: str, port: int, client_key: Path, known_hosts: Path) -> str:
    """An ssh_config `Host` block for an alias on address:port (used for aliases nothing listens on too)."""
    return (
        f"Host {alias}\n"
        f"  HostName {address}\n"
        f"  Port {port}\n"
        "  User root\n"
        f"  IdentityFile {client_key}\n"
        "  IdentitiesOnly yes\n"
        f"  UserKnownHostsFile {known_hosts}\n"
        "  GlobalKnownHostsFile /dev/null\n"
        "  LogLevel ERROR\n"
        # Long: a loaded machine's sshd can take seconds to send its banner; a refusal is immediate.
        "  ConnectTimeout 60\n"
    )


def _banner(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=1) as s:
            return s.recv(8).startswith(b"SSH-")
    except OSError:
        return False


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                # the fields after the parenthesised command name: state, ppid, ...
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
    return found


@contextlib.contextmanager
def ssh_host(
    *,
    docker_host: str,
    client_key: Path | None = None,
    alias: str = "lab",
    path: str | None = None,
    address: str = "127.0.0.1",
    port: int | None = None,
    start_timeout: float = 120,
) -> Iterator[SshHost]:
    """Start a throwaway sshd whose sessions use docker_host; yield it; stop it by PID and delete its dir.

    It also writes `ssh_config` (Host alias) and `known_hosts` in its directory, for use on its own. `path`
    replaces the PATH its sessions get (e.g. to put recording shims first). `address` is a loopback
    address (127.0.0.0/8) and `port` defaults to a free one.
    """
    reason = missing()
    if reason:
        raise RuntimeError(reason)
    root = Path(tempfile.mkdtemp(prefix="sr-sshd-", dir="/tmp"))
    root.chmod(0o700)
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation directory
    host_key = keygen(root / "host_ed25519", f"strongroom-test-host-{alias}")
    if client_key is None:
        client_key = keygen(root / "client_ed25519", "strongroom-test-deployer")
    authorized = root / "authorized_keys"
    authorized.write_text(client_key.with_suffix(".pub").read_text())
    authorized.chmod(0o600)
    remote_dir = root / "remote"
    docker_config = root / "docker-config"
    docker_config.mkdir(mode=0o700)
    if not address.startswith("127."):
        raise ValueError(f"{address}: the test sshd listens on loopback addresses only")
    port = port or free_port()
    config = root / "sshd_config"
    config.write_text(
        f"Port {port}\n"
        f"ListenAddress {address}\n"
        f"HostKey {host_key}\n"
        f"PidFile {root / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {authorized}\n"
        "PubkeyAuthentication yes\n"
        "PasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\n"
        "PermitRootLogin prohibit-password\n"
        "UsePAM no\n"
        "StrictModes no\n"
        # Parallel deploys open several multiplexed sessions and connections per host at once.
        "MaxSessions 32\n"
        "MaxStartups 64:30:128\n"
        "Subsystem sftp internal-sftp\n"
        f"SetEnv DOCKER_HOST={docker_host} DOCKER_CONFIG={docker_config} STRONGROOM_REMOTE_DIR={remote_dir}"
        + (f" PATH={path}" if path else "")
        + "\n"
    )
    host_public = " ".join(host_key.with_suffix(".pub").read_text().split()[:2])
    (root / "known_hosts").write_text(f"[{address}]:{port} {host_public}\n")
    (root / "ssh_config").write_text(config_block(alias, address, port, client_key, root / "known_hosts"))
    checked = subprocess.run([SSHD, "-t", "-f", str(config)], capture_output=True, text=True, check=False)
    if checked.returncode != 0:
        raise RuntimeError(f"sshd -t refused its config: {checked.stderr.strip()}")
    log = open(root / "sshd.log", "wb")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen(
        [SSHD, "-D", "-e", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
    )
    host = SshHost(
        root=root,
        address=address,
        port=port,
        pid=proc.pid,
        host_key=host_key,
        client_key=client_key,
        remote_dir=remote_dir,
        docker_host=docker_host,
        docker_config=docker_config,
        alias=alias,
    )
    try:
        deadline = time.monotonic() + start_timeout
        while not _banner(address, port):
            if proc.poll() is not None:
                raise RuntimeError(
                    f"sshd exited ({proc.returncode}): {(root / 'sshd.log').read_text()[-2000:]}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(f"sshd not listening after {start_timeout}s")
            time.sleep(0.05)
        yield host
    finally:
        # Sessions still open (a client's ControlPersist master) are sshd's children: end them by PID too.
        for child in _children(proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGTERM)
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()
        shutil.rmtree(root, ignore_errors=True)
