"""The cached CLI session: where it lives, how it is written (0600, atomically) and when to renew it.

Expiry is tracked in local terms only: the clocks are read just *before* the request that returned the
token, and `expires_in` is the lifetime the broker granted. The broker's absolute `expires_at` is never
compared with the local clock, so a client whose clock is hours off still renews on time; reading the clocks
before the request makes the local estimate of the token's age err on the old side.

The age is the elapsed time on the boot clock (CLOCK_BOOTTIME: monotonic, and it counts suspend) when the
machine has not rebooted since, else on the wall clock. A wall clock that jumps back therefore cannot make
an expired token look fresh, and after a reboot with a wall clock behind the cached time the age is unknown:
the token is then renewed (which tells) rather than trusted.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from cli.client import Principal, Token, TokenInfo
from cli.errors import CliError
from cli.files import write_private

FORMAT_VERSION = 1
DEFAULT_PROFILE = "default"


@dataclass(frozen=True, slots=True)
class Instant:
    """A moment by the local clocks: wall time, and (on Linux) the boot id with CLOCK_BOOTTIME seconds."""

    wall: float
    boot_id: str | None = None
    boot: float | None = None


@dataclass(frozen=True, slots=True)
class Credential:
    """A token cached by `strongroom login`, with what is needed to know when to renew it."""

    url: str
    token: str = field(repr=False)
    accessor: str
    principal: Principal
    obtained_at: float
    expires_in: int
    # Seconds from obtained_at to the broker's hard limit (from its own timestamps); None if unknown.
    max_expires_in: int | None
    # The boot clock when obtained (see the module docstring); None where there is none.
    boot_id: str | None = None
    obtained_boot: float | None = None
    # The client ID it was issued for, so that `strongroom login` can log in again without being told.
    client_id: str | None = None

    @classmethod
    def from_token(
        cls, *, url: str, token: Token, obtained: Instant | float, client_id: str | None = None
    ) -> Credential:
        """The credential for a token just issued by the broker at `url`, the clocks read at `obtained`."""
        at = obtained if isinstance(obtained, Instant) else Instant(obtained)
        return cls(
            url=url,
            token=token.token,
            accessor=token.info.accessor,
            principal=token.info.principal,
            obtained_at=at.wall,
            expires_in=token.info.expires_in,
            max_expires_in=token.info.max_expires_in,
            boot_id=at.boot_id,
            obtained_boot=at.boot,
            client_id=client_id,
        )

    def renewed(self, info: TokenInfo, *, obtained: Instant | float) -> Credential:
        """This credential after a renewal that answered `info`, the clocks read at `obtained`."""
        token = Token(token=self.token, info=info)
        return Credential.from_token(url=self.url, token=token, obtained=obtained, client_id=self.client_id)

    @property
    def expires_at(self) -> float:
        """Local wall time at which the token expires."""
        return self.obtained_at + self.expires_in

    def age(self, now: Instant | float) -> float | None:
        """Seconds since the token was obtained, by the boot clock if possible; None when it cannot be known."""
        at = now if isinstance(now, Instant) else Instant(now)
        if (
            at.boot_id is not None
            and at.boot_id == self.boot_id
            and at.boot is not None
            and self.obtained_boot is not None
        ):
            return max(0.0, at.boot - self.obtained_boot)
        elapsed = at.wall - self.obtained_at
        return elapsed if elapsed >= 0 else None

    def expired(self, now: Instant | float) -> bool:
        """Whether the broker's own lifetime has certainly run out (an unknown age is not "certainly")."""
        age = self.age(now)
        return age is not None and age >= self.expires_in

    def needs_renewal(self, now: Instant | float) -> bool:
        """Whether two thirds of the lifetime have passed (or its age is unknown) and renewing could extend it."""
        if self.max_expires_in is not None and self.expires_in >= self.max_expires_in:
            return False  # already granted up to the hard limit: a renewal cannot extend it
        age = self.age(now)
        if age is None:
            return True  # the local clock went backwards, so the token's age is unknown: renew to be safe
        return 3 * age >= 2 * self.expires_in

    def to_json(self) -> dict[str, object]:
        """The credential as stored in the cache file."""
        return {
            "format": FORMAT_VERSION,
            "url": self.url,
            "token": self.token,
            "accessor": self.accessor,
            "principal": asdict(self.principal),
            "obtained_at": self.obtained_at,
            "expires_in": self.expires_in,
            "max_expires_in": self.max_expires_in,
            "boot_id": self.boot_id,
            "obtained_boot": self.obtained_boot,
            "client_id": self.client_id,
        }

    @classmethod
    def from_json(cls, data: object) -> Credential:
        """Parse the cache file's content; raise ValueError if it is not a credential of this format."""
        if not isinstance(data, dict) or data.get("format") != FORMAT_VERSION:
            raise ValueError("not a credential")
        principal = data["principal"]
        if not isinstance(principal, dict):
            raise ValueError("principal")
        max_expires_in = data.get("max_expires_in")
        boot_id, obtained_boot = data.get("boot_id"), data.get("obtained_boot")
        client_id = data.get("client_id")
        return cls(
            url=_text(data["url"]),
            token=_text(data["token"]),
            accessor=_text(data["accessor"]),
            principal=Principal(
                id=_text(principal["id"]), type=_text(principal["type"]), name=_text(principal["name"])
            ),
            obtained_at=_number(data["obtained_at"]),
            expires_in=_integer(data["expires_in"]),
            max_expires_in=None if max_expires_in is None else _integer(max_expires_in),
            boot_id=None if boot_id is None else _text(boot_id),
            obtained_boot=None if obtained_boot is None else _number(obtained_boot),
            client_id=None if client_id is None else _text(client_id),
        )


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError("not a string")
    return value


def _integer(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("not an integer")
    return value


def _number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("not a number")
    return float(value)


def config_dir(environ: Mapping[str, str]) -> Path:
    """`$XDG_CONFIG_HOME/strongroom`, or `~/.config/strongroom` when that is unset or relative."""
    base = environ.get("XDG_CONFIG_HOME", "")
    # The XDG spec says relative paths are invalid and must be ignored.
    root = Path(base) if base and os.path.isabs(base) else Path.home() / ".config"
    return root / "strongroom"


def cache_path(environ: Mapping[str, str], profile: str = DEFAULT_PROFILE) -> Path:
    """`credentials.json` in the config directory for the default profile, `credentials.<profile>.json` else."""
    name = "credentials.json" if profile == DEFAULT_PROFILE else f"credentials.{profile}.json"
    return config_dir(environ) / name


def load(path: Path) -> Credential | None:
    """The cached credential, or None when there is none."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CliError(f"cannot read the session cache {path}: {(exc.strerror or 'error').lower()}") from None
    with os.fdopen(fd, "rb") as file:
        if os.fstat(file.fileno()).st_mode & 0o077:
            # Written by something else, or copied around: take it back to owner-only before anything else.
            with contextlib.suppress(OSError):
                os.fchmod(file.fileno(), 0o600)
        raw = file.read()
    try:
        return Credential.from_json(json.loads(raw))
    except (ValueError, KeyError, TypeError):
        raise CliError(f"the session cache {path} is unreadable: run strongroom login") from None


def save(path: Path, credential: Credential) -> None:
    """Write the credential atomically: a 0600 temporary file in a 0700 directory, fsync, then rename."""
    payload = json.dumps(credential.to_json(), indent=2).encode("utf-8")
    try:
        write_private(path, payload, private_dir=True)
    except OSError as exc:
        raise CliError(
            f"cannot write the session cache {path}: {(exc.strerror or 'error').lower()}"
        ) from None


def delete(path: Path) -> bool:
    """Remove the cached credential; whether there was one."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise CliError(
            f"cannot delete the session cache {path}: {(exc.strerror or 'error').lower()}"
        ) from None
    return True
