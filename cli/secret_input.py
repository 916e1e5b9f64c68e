"""Reading secrets from the user: a file, a pipe or a hidden prompt, never the command line.

A secret value is kept byte-exact: nothing is stripped from a file or a pipe (a trailing newline may be part
of a PEM key), and stdin is read as bytes so no newline translation happens. Only the Enter that ends a
hidden prompt is not part of the value (getpass drops it). Client secrets are different: the broker
generates them and they never end with a newline, so one trailing newline, as `echo` or an editor adds, is
dropped.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import BinaryIO

import click

from cli.errors import CliError

VALUE_MAX_BYTES = 64 * 1024
CLIENT_SECRET_MAX_BYTES = 8 * 1024


def stdin_is_terminal() -> bool:
    """Whether stdin is an interactive terminal; the seam tests replace to reach the prompt path."""
    return sys.stdin is not None and sys.stdin.isatty()


def _read_limited(stream: BinaryIO, limit: int, what: str) -> bytes:
    data = stream.read(limit + 1)
    if len(data) > limit:
        raise CliError(f"{what} is larger than {limit // 1024} KiB, the broker's limit")
    return data


def _read_source(path: Path | None, limit: int, what: str) -> bytes | None:
    if path is not None:
        try:
            with path.open("rb") as file:
                return _read_limited(file, limit, what)
        except OSError as exc:
            raise CliError(f"cannot read {path}: {(exc.strerror or 'error').lower()}") from None
    if not stdin_is_terminal():
        return _read_limited(sys.stdin.buffer, limit, what)
    return None


def _decode(data: bytes, what: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise CliError(f"{what} is not UTF-8 text") from None


def read_secret_value(*, name: str, from_file: Path | None) -> str:
    """The value for secret `name`: from `from_file`, else piped stdin, else a confirmed hidden prompt."""
    what = f"the value for {name}"
    data = _read_source(from_file, VALUE_MAX_BYTES, what)
    if data is None:
        value: str = click.prompt(f"Value for {name}", hide_input=True, confirmation_prompt=True)
        data = value.encode("utf-8", errors="surrogateescape")
        if len(data) > VALUE_MAX_BYTES:
            raise CliError(f"{what} is larger than {VALUE_MAX_BYTES // 1024} KiB, the broker's limit")
    value = _decode(data, what)
    if not value:
        # Most often an unset shell variable piped in; storing "" would break the consumer later and silently.
        raise CliError(f"{what} is empty; refusing to store an empty secret")
    return value


def read_client_secret(*, secret_file: Path | None) -> str:
    """The client secret for login: from `secret_file`, else piped stdin, else a hidden prompt."""
    what = "the client secret"
    data = _read_source(secret_file, CLIENT_SECRET_MAX_BYTES, what)
    if data is None:
        secret: str = click.prompt("Client secret", hide_input=True)
        return secret
    secret = _decode(data, what)
    secret = secret.removesuffix("\n").removesuffix("\r")
    if not secret:
        raise CliError(f"{what} is empty")
    return secret
