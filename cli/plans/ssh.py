"""Argv for the system OpenSSH client: one multiplexed master per host, commands over it, its exit.

Pure: every function returns an argv list and runs nothing. Every connection is made with
`BatchMode=yes` (never a prompt) and `StrictHostKeyChecking=yes` (an unknown or changed host key is a
refusal, never a question and never an automatic addition); `cli.deploy.hostkeys` checks the key before
the first connection and, for fingerprints pinned in the manifest, hands over a private known_hosts file
that holds exactly the accepted key.

The master runs the first command itself (`ControlMaster=yes` with `ControlPersist`): connecting and the
preflight are one round trip, and every later command rides the master (`ControlMaster=no`: use it, never
become one). `%C` in the ControlPath is OpenSSH's hash of local host, remote host, port and user, so two
hosts never share a socket and the path stays short (unix sockets take at most 104-108 bytes).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

DEFAULT_SSH = "ssh"
DEFAULT_KEYSCAN = "ssh-keyscan"
DEFAULT_KEYGEN = "ssh-keygen"
# Seconds the master outlives its last session: long enough for one deploy step, short enough that a
# CLI killed before `close()` leaves no connection behind for long.
DEFAULT_PERSIST_SECONDS = 900
DEFAULT_CONNECT_TIMEOUT = 10

# A host as the manifest names it: a DNS name, an ssh_config alias, an IPv4 or IPv6 address. Never
# starting with "-" (ssh would read it as an option: `-oProxyCommand=…`), no spaces or shell syntax.
_HOST = re.compile(r"^[A-Za-z0-9_:][A-Za-z0-9_.:%-]{0,252}$")
# A login name: POSIX portable user names (and the `$` of some machine accounts).
_USER = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}\$?$")


class PlanError(ValueError):
    """A value from the plan that cannot go into an ssh command line; the message names the field."""


def check_host(host: str) -> str:
    """`host` if ssh can take it as a destination, else PlanError naming it."""
    if not isinstance(host, str) or not _HOST.fullmatch(host):
        raise PlanError(f"ssh host {host!r}: not a host name, address or ssh_config alias")
    return host


def check_user(user: str | None) -> str | None:
    """`user` if it is a plausible login name (or None), else PlanError naming it."""
    if user is not None and (not isinstance(user, str) or not _USER.fullmatch(user)):
        raise PlanError(f"ssh.user {user!r}: not a login name")
    return user


def check_port(port: int | None) -> int | None:
    """`port` if it is a TCP port (or None), else PlanError naming it."""
    if port is not None and (isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536):
        raise PlanError(f"ssh.port {port!r}: not a TCP port (1-65535)")
    return port


@dataclass(frozen=True)
class Target:
    """Everything the ssh command lines for one host depend on."""

    host: str
    control_dir: str
    user: str | None = None
    port: int | None = None
    config: str | None = None
    binary: str = DEFAULT_SSH
    # Set when the host key was accepted from pinned fingerprints: a known_hosts holding exactly that key,
    # looked up under `host_key_alias` (OpenSSH looks an alias up without the port).
    known_hosts: str | None = None
    host_key_alias: str | None = None
    connect_timeout: int = DEFAULT_CONNECT_TIMEOUT

    def __post_init__(self) -> None:
        check_host(self.host)
        check_user(self.user)
        check_port(self.port)
        if (self.known_hosts is None) != (self.host_key_alias is None):
            raise PlanError("a pinned known_hosts file and its host key alias go together")


def binaries(environ: Mapping[str, str]) -> tuple[str, str, str]:
    """The ssh, ssh-keyscan and ssh-keygen programs: STRONGROOM_SSH, _SSH_KEYSCAN, _SSH_KEYGEN or PATH's."""
    return (
        environ.get("STRONGROOM_SSH") or DEFAULT_SSH,
        environ.get("STRONGROOM_SSH_KEYSCAN") or DEFAULT_KEYSCAN,
        environ.get("STRONGROOM_SSH_KEYGEN") or DEFAULT_KEYGEN,
    )


def config_file(environ: Mapping[str, str]) -> str | None:
    """The ssh config file to pass as -F (STRONGROOM_SSH_CONFIG), or None for ssh's own defaults."""
    return environ.get("STRONGROOM_SSH_CONFIG") or None


def _identity(config: str | None, user: str | None, port: int | None) -> list[str]:
    argv: list[str] = []
    if config:
        argv += ["-F", config]
    if user:
        argv += ["-l", user]
    if port:
        argv += ["-p", str(port)]
    return argv


def base(target: Target) -> list[str]:
    """The options every connection to `target` carries (without the destination)."""
    argv = [target.binary, *_identity(target.config, target.user, target.port)]
    argv += ["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes"]
    if target.known_hosts is not None and target.host_key_alias is not None:
        argv += [
            "-o",
            f"UserKnownHostsFile={target.known_hosts}",
            "-o",
            "GlobalKnownHostsFile=none",
            "-o",
            f"HostKeyAlias={target.host_key_alias}",
            # CheckHostIP would look the address up in the user's files, which the pin replaces.
            "-o",
            "CheckHostIP=no",
            # Nor may any other source of keys vouch for the host: an ssh config's KnownHostsCommand, or
            # SSHFP records in DNS.
            "-o",
            "KnownHostsCommand=none",
            "-o",
            "VerifyHostKeyDNS=no",
        ]
    argv += [
        "-o",
        f"ConnectTimeout={target.connect_timeout}",
        "-o",
        f"ControlPath={target.control_dir}/%C",
        # No forwarding of the agent, X11 or ports to a host we only deploy to, whatever ssh_config says.
        "-o",
        "ForwardAgent=no",
        "-o",
        "ForwardX11=no",
        "-o",
        "ClearAllForwardings=yes",
        # Our command runs, not one from ssh_config, and nothing runs locally on connecting.
        "-o",
        "RemoteCommand=none",
        "-o",
        "PermitLocalCommand=no",
        "-o",
        "LogLevel=ERROR",
        "-T",
    ]
    return argv


def master(target: Target, command: str, *, persist_seconds: int = DEFAULT_PERSIST_SECONDS) -> list[str]:
    """Open the master connection and run `command` over it; the master stays for `persist_seconds`."""
    return [
        *base(target),
        "-o",
        "ControlMaster=yes",
        "-o",
        f"ControlPersist={int(persist_seconds)}",
        "--",
        target.host,
        command,
    ]


def command(target: Target, command: str) -> list[str]:
    """Run `command` on the host over the master connection (a new connection only if the master is gone)."""
    return [*base(target), "-o", "ControlMaster=no", "--", target.host, command]


def exit_master(target: Target) -> list[str]:
    """Ask the master connection to end."""
    return [*base(target), "-O", "exit", "--", target.host]


def resolve(
    binary: str, host: str, *, config: str | None, user: str | None = None, port: int | None = None
) -> list[str]:
    """`ssh -G`: print the configuration ssh would use for `host` (real host name, port, known_hosts files)."""
    return [binary, *_identity(config, check_user(user), check_port(port)), "-G", "--", check_host(host)]


def keyscan(binary: str, hostname: str, port: int, *, timeout: int = DEFAULT_CONNECT_TIMEOUT) -> list[str]:
    """`ssh-keyscan`: fetch the host keys `hostname:port` presents (it reads no ssh_config)."""
    check_port(port)
    if hostname.startswith("-") or not hostname or any(ch.isspace() for ch in hostname):
        raise PlanError(f"host name {hostname!r} from ssh -G: not usable")
    return [binary, "-T", str(int(timeout)), "-p", str(port), "--", hostname]


def known_hosts_lookup(binary: str, name: str, known_hosts: str) -> list[str]:
    """`ssh-keygen -F`: the lines of one known_hosts file that match `name` (hashed lines included)."""
    return [binary, "-F", name, "-f", known_hosts]


def lookup_name(hostname: str, port: int, host_key_alias: str | None = None) -> str:
    """The name OpenSSH looks a host up by in known_hosts: the alias as is, else `host` or `[host]:port`."""
    if host_key_alias:
        return host_key_alias
    return hostname if port == 22 else f"[{hostname}]:{port}"


def quote_command(argv: Sequence[str]) -> str:
    """A remote command line from argv words, each shell-quoted (the remote shell splits it again)."""
    import shlex

    return " ".join(shlex.quote(word) for word in argv)
