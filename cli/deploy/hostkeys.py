"""Host key policy: a deploy talks only to hosts whose key it already trusts, and says why when it refuses.

Before the first connection the host's keys are fetched with `ssh-keyscan` (on the real host name and port
that `ssh -G` resolves an alias to) and judged:

- pinned fingerprints (`ssh.host_keys` in the manifest, `SHA256:…`): accepted only if a presented key has
  one of them; the connection then uses a private known_hosts file holding exactly that key, so ssh's own
  strict check can accept nothing else;
- otherwise the known_hosts files ssh would read (`userknownhostsfile` and `globalknownhostsfile` of `ssh
  -G`, so an ssh config's choice counts), looked up with `ssh-keygen -F`, which matches hashed lines too: a
  host with no key there is unknown (scanned, to show what it presents, and refused); for a host with
  known keys ssh's own strict check at the first connection decides, and a refusal there (the key
  changed) shows the known fingerprints found here next to the one ssh saw presented. `scan=True`
  compares before connecting instead, at the cost of one more connection.

A host reached through ProxyJump/ProxyCommand cannot be scanned directly: its known_hosts check is left to
ssh itself (always `StrictHostKeyChecking=yes`), and pinning is refused for it rather than weakened.
Whatever the verdict here, ssh checks again when it connects; this check exists to refuse early and clearly.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cli.deploy.process import Completed
from cli.errors import CliError
from cli.files import write_private
from cli.plans import ssh as ssh_plans

Run = Callable[[Sequence[str]], Completed]

PINNED_ALIAS = "strongroom-pinned"
_FINGERPRINT = re.compile(r"^SHA256:[A-Za-z0-9+/]{43}$")
_KEY_TYPE = re.compile(r"^(?:ssh-[a-z0-9-]+|ecdsa-sha2-[a-z0-9-]+|sk-[a-z0-9@.-]+|rsa-sha2-[0-9]+)$")
_LABELS = {
    "ssh-ed25519": "ED25519",
    "ssh-rsa": "RSA",
    "ssh-dss": "DSA",
    "sk-ssh-ed25519@openssh.com": "ED25519-SK",
    "sk-ecdsa-sha2-nistp256@openssh.com": "ECDSA-SK",
}


class HostKeyRefused(CliError):
    """The host's key is unknown, changed, revoked or not the pinned one: nothing was run on it."""

    def __init__(self, host: str, message: str, *, known: Sequence[str], presented: Sequence[str]) -> None:
        super().__init__(f"{host}: {message}")
        self.host = host
        self.known = list(known)
        self.presented = list(presented)


class HostUnreachable(CliError):
    """The host did not answer (no route, refused, timed out, or ssh could not log in)."""

    def __init__(self, host: str, detail: str) -> None:
        super().__init__(f"{host}: unreachable: {detail}")
        self.host = host
        self.detail = detail


def fingerprint(blob_b64: str) -> str:
    """OpenSSH's `SHA256:…` fingerprint of a base64 public key blob (unpadded base64 of its SHA-256)."""
    blob = base64.b64decode(blob_b64, validate=True)
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def check_fingerprint(value: str, field_name: str) -> str:
    """`value` if it is a `SHA256:` fingerprint as ssh-keygen -l prints it, else CliError naming the field."""
    if not isinstance(value, str) or not _FINGERPRINT.fullmatch(value.strip()):
        raise CliError(
            f"{field_name}: {value!r} is not a SHA256 host key fingerprint (ssh-keygen -lf KEY.pub)"
        )
    return value.strip()


@dataclass(frozen=True)
class HostKey:
    """One public host key: its type (`ssh-ed25519`) and base64 blob."""

    type: str
    blob: str

    @property
    def fingerprint(self) -> str:
        """`SHA256:…`."""
        return fingerprint(self.blob)

    def describe(self) -> str:
        """`ED25519 SHA256:…`, as ssh names a key to a person."""
        label = _LABELS.get(self.type) or ("ECDSA" if self.type.startswith("ecdsa-") else self.type.upper())
        return f"{label} {self.fingerprint}"


@dataclass(frozen=True)
class KnownLines:
    """What known_hosts says about one host: its keys, revoked keys, whether a CA vouches for it."""

    keys: list[HostKey] = field(default_factory=list)
    revoked: list[HostKey] = field(default_factory=list)
    cert_authority: bool = False


def parse_keys(text: str) -> KnownLines:
    """The keys in known_hosts-style lines (ssh-keyscan or ssh-keygen -F output); comments skipped."""
    keys: list[HostKey] = []
    revoked: list[HostKey] = []
    cert_authority = False
    for line in text.splitlines():
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        marker = words.pop(0) if words[0].startswith("@") else None
        if len(words) < 3 or not _KEY_TYPE.fullmatch(words[1]):
            continue
        try:
            key = HostKey(words[1], words[2])
            key.fingerprint  # noqa: B018 (a blob that is not base64 is no key)
        except (binascii.Error, ValueError):
            continue
        if marker == "@revoked":
            revoked.append(key)
        elif marker == "@cert-authority":
            cert_authority = True
        elif marker is None:
            keys.append(key)
    return KnownLines(keys, revoked, cert_authority)


@dataclass(frozen=True)
class Resolved:
    """What `ssh -G` says about a host: where it really is and which known_hosts files apply."""

    host: str
    hostname: str
    port: int
    user: str | None
    host_key_alias: str | None
    known_hosts_files: tuple[str, ...]
    proxied: bool

    @property
    def lookup_name(self) -> str:
        """The name ssh looks the host up by in known_hosts."""
        return ssh_plans.lookup_name(self.hostname, self.port, self.host_key_alias)


def parse_resolved(host: str, text: str) -> Resolved:
    """The fields this policy needs from `ssh -G HOST` output (`keyword value` lines)."""
    options: dict[str, str] = {}
    for line in text.splitlines():
        keyword, _, value = line.strip().partition(" ")
        if keyword and keyword.lower() not in options:
            options[keyword.lower()] = value.strip()
    try:
        port = int(options.get("port", "22"))
    except ValueError:
        port = 22
    files: list[str] = []
    for option in ("userknownhostsfile", "globalknownhostsfile"):
        for name in options.get(option, "").split():
            if name.lower() != "none":
                files.append(os.path.expanduser(name))
    proxied = any(options.get(option, "none").lower() != "none" for option in ("proxyjump", "proxycommand"))
    return Resolved(
        host=host,
        hostname=options.get("hostname") or host,
        port=port,
        user=options.get("user") or None,
        host_key_alias=options.get("hostkeyalias") if options.get("hostkeyalias", "none") != "none" else None,
        known_hosts_files=tuple(files),
        proxied=proxied,
    )


@dataclass(frozen=True)
class Accepted:
    """A host whose key this policy accepts, and how the connection must check it."""

    resolved: Resolved
    how: str  # "pinned" | "known_hosts" | "ssh" (left to ssh's own strict check: proxied or CA-signed hosts)
    keys: tuple[HostKey, ...] = ()
    known_hosts: str | None = None  # the private file for a pinned key
    host_key_alias: str | None = None
    where: str = ""  # the known_hosts name and files the keys came from
    round_trips: int = 0  # connections made to the host (the key scan)


def _describe(keys: Sequence[HostKey]) -> list[str]:
    return [key.describe() for key in keys]


def _joined(items: Sequence[str]) -> str:
    return ", ".join(items) if items else "none"


def changed_key(host: str, known: Sequence[str], where: str, presented: Sequence[str]) -> HostKeyRefused:
    """The refusal for a host whose key differs from the known one, showing both fingerprints."""
    return HostKeyRefused(
        host,
        f"host key CHANGED: known {_joined(known)} ({where}), presented {_joined(presented)}. This may be "
        "an attack, or the host was reinstalled: check the new fingerprint out of band before updating "
        "known_hosts; nothing was run on the host",
        known=known,
        presented=presented,
    )


class Policy:
    """Resolves and checks one host's key with ssh -G, ssh-keyscan and ssh-keygen run through `run`."""

    def __init__(
        self,
        run: Run,
        *,
        environ: Mapping[str, str] | None = None,
        timeout: int = ssh_plans.DEFAULT_CONNECT_TIMEOUT,
    ) -> None:
        environ = os.environ if environ is None else environ
        self._run = run
        self.ssh, self.keyscan, self.keygen = ssh_plans.binaries(environ)
        self.config = ssh_plans.config_file(environ)
        self.timeout = timeout

    def resolve(self, host: str, *, user: str | None = None, port: int | None = None) -> Resolved:
        """What ssh would connect to for `host` (an alias is followed through the ssh config)."""
        argv = ssh_plans.resolve(self.ssh, host, config=self.config, user=user, port=port)
        done = self._run(argv)
        if done.returncode != 0:
            detail = (done.stderr.strip().splitlines() or ["no detail"])[-1]
            raise CliError(f"{host}: ssh cannot read its configuration for this host: {detail}")
        return parse_resolved(host, done.stdout)

    def presented(self, resolved: Resolved) -> list[HostKey]:
        """The keys the host presents now (one connection: ssh-keyscan)."""
        argv = ssh_plans.keyscan(self.keyscan, resolved.hostname, resolved.port, timeout=self.timeout)
        done = self._run(argv)
        keys = parse_keys(done.stdout).keys
        if not keys:
            lines = [
                line
                for line in done.stderr.splitlines()
                if line.strip() and not line.lstrip().startswith("#")
            ]
            detail = lines[-1].strip() if lines else "no SSH server answered"
            raise HostUnreachable(resolved.host, f"{resolved.hostname} port {resolved.port}: {detail}")
        return keys

    def known(self, resolved: Resolved) -> tuple[KnownLines, list[str]]:
        """What the applicable known_hosts files say about the host, and the files that exist."""
        keys: list[HostKey] = []
        revoked: list[HostKey] = []
        cert_authority = False
        existing: list[str] = []
        for path in resolved.known_hosts_files:
            if not os.path.isfile(path):
                continue
            existing.append(path)
            done = self._run(ssh_plans.known_hosts_lookup(self.keygen, resolved.lookup_name, path))
            if done.returncode not in (0, 1):  # 1: no line matches
                detail = (done.stderr.strip().splitlines() or ["no detail"])[-1]
                raise CliError(f"{resolved.host}: cannot read {path}: {detail}")
            lines = parse_keys(done.stdout)
            keys += lines.keys
            revoked += lines.revoked
            cert_authority = cert_authority or lines.cert_authority
        return KnownLines(keys, revoked, cert_authority), existing

    def check(
        self,
        host: str,
        *,
        pinned: Sequence[str] | None,
        workdir: Path,
        user: str | None = None,
        port: int | None = None,
        scan: bool = False,
    ) -> Accepted:
        """Accept `host`'s key or raise HostKeyRefused/HostUnreachable; nothing runs on the host here.

        A host known_hosts has keys for is not scanned unless `scan`: ssh's own strict check at the first
        connection decides (before authenticating, so nothing runs on a refused host), and the caller turns
        its refusal into `changed_key` with the known keys returned here. This saves one connection per host.
        """
        resolved = self.resolve(host, user=user, port=port)
        if pinned:
            return self._check_pinned(resolved, pinned, workdir)
        if resolved.proxied:
            return Accepted(resolved, "ssh")
        known, files = self.known(resolved)
        where = f"{resolved.lookup_name} in {_joined(files) if files else 'no known_hosts file'}"
        if (known.keys or known.cert_authority) and not scan:
            return Accepted(resolved, "known_hosts", tuple(known.keys), where=where)
        presented = self.presented(resolved)
        bad = [key for key in presented if key in known.revoked]
        if bad:
            raise HostKeyRefused(
                host,
                f"host key refused: it presented {_joined(_describe(bad))}, which known_hosts marks @revoked",
                known=[],
                presented=_describe(bad),
            )
        matched = tuple(key for key in presented if key in known.keys)
        if matched:
            return Accepted(resolved, "known_hosts", matched, where=where, round_trips=1)
        if known.cert_authority and not known.keys:
            return Accepted(resolved, "ssh", where=where, round_trips=1)
        if not known.keys:
            raise HostKeyRefused(
                host,
                f"host key unknown: no key for {where}; it presents {_joined(_describe(presented))}. "
                "Check that fingerprint out of band, then add the key to known_hosts or pin it in the "
                "manifest (ssh.host_keys); nothing was run on the host",
                known=[],
                presented=_describe(presented),
            )
        raise changed_key(host, _describe(known.keys), where, _describe(presented))

    def _check_pinned(self, resolved: Resolved, pinned: Sequence[str], workdir: Path) -> Accepted:
        host = resolved.host
        wanted = [check_fingerprint(value, f"ssh.host_keys.{host}") for value in pinned]
        if resolved.proxied:
            raise HostKeyRefused(
                host,
                "host keys are pinned for this host, but ssh reaches it through ProxyJump/ProxyCommand, "
                "where its key cannot be fetched to compare; remove the pin to use known_hosts instead",
                known=wanted,
                presented=[],
            )
        presented = self.presented(resolved)
        matched = tuple(key for key in presented if key.fingerprint in wanted)
        if not matched:
            raise HostKeyRefused(
                host,
                f"host key refused: pinned {_joined(wanted)}, presented {_joined(_describe(presented))} "
                f"({resolved.hostname} port {resolved.port}); nothing was run on the host",
                known=wanted,
                presented=_describe(presented),
            )
        path = workdir / "known_hosts"
        text = "".join(f"{PINNED_ALIAS} {key.type} {key.blob}\n" for key in matched)
        write_private(path, text.encode())
        return Accepted(
            resolved, "pinned", matched, known_hosts=str(path), host_key_alias=PINNED_ALIAS, round_trips=1
        )
