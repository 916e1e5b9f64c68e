"""The cached CLI session: where it lives, how it is written (0600, atomically) and when to renew it.

Expiry is tracked in local terms only: `obtained_at` is the local wall time taken just *before* the request
that returned the token, and `expires_in` is the lifetime the broker granted. The broker's absolute
`expires_at` is never compared with the local clock, so a client whose clock is hours off still renews on
time; taking the time before the request makes the local estimate err on the early side.
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

FORMAT_VERSION = 1


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

    @classmethod
    def from_token(cls, *, url: str, token: Token, obtained_at: float) -> Credential:
        """The credential for a token just issued by the broker at `url`."""
        return cls(
            url=url,
            token=token.token,
            accessor=token.info.accessor,
            principal=token.info.principal,
            obtained_at=obtained_at,
            expires_in=token.info.expires_in,
            max_expires_in=token.info.max_expires_in,
        )

    def renewed(self, info: TokenInfo, *, obtained_at: float) -> Credential:
        """This credential after a renewal that answered `info`."""
        return Credential(
            url=self.url,
            token=self.token,
            accessor=info.accessor,
            principal=info.principal,
            obtained_at=obtained_at,
            expires_in=info.expires_in,
            max_expires_in=info.max_expires_in,
        )

    @property
    def expires_at(self) -> float:
        """Local wall time at which the token expires."""
        return self.obtained_at + self.expires_in

    def needs_renewal(self, now: float) -> bool:
        """Whether more than two thirds of the lifetime has passed and renewing could extend it."""
        if self.max_expires_in is not None and self.expires_in >= self.max_expires_in:
            return False  # already granted up to the hard limit: a renewal cannot extend it
        elapsed = now - self.obtained_at
        if elapsed < 0:
            return True  # the local clock went backwards, so the token's age is unknown: renew to be safe
        return 3 * elapsed > 2 * self.expires_in

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


def cache_path(environ: Mapping[str, str]) -> Path:
    """`$XDG_CONFIG_HOME/strongroom/credentials.json`, or under `~/.config` when that is unset or relative."""
    base = environ.get("XDG_CONFIG_HOME", "")
    # The XDG spec says relative paths are invalid and must be ignored.
    root = Path(base) if base and os.path.isabs(base) else Path.home() / ".config"
    return root / "strongroom" / "credentials.json"


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
    """Write the credential atomically: a 0600 temporary file in the same directory, fsync, then rename."""
    directory = path.parent
    payload = json.dumps(credential.to_json(), indent=2).encode("utf-8")
    temporary = directory / f".{path.name}.{os.urandom(8).hex()}.tmp"
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        # mkdir's mode is filtered by the umask and ignored for a directory that already exists.
        os.chmod(directory, 0o700)
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(payload)
                file.flush()
                os.fsync(file.fileno())
            # Replacing (not rewriting) also gets rid of a pre-existing file's looser mode.
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
        _fsync_directory(directory)
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


def _fsync_directory(directory: Path) -> None:
    # Makes the rename itself durable; not every platform lets a directory be opened, hence best effort.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
