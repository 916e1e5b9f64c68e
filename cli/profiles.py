"""Profiles: several brokers and identities in one config file, `$XDG_CONFIG_HOME/strongroom/config.toml`.

The file (TOML; every key is optional, unknown keys are errors)::

    default_profile = "work"            # when neither --profile nor STRONGROOM_PROFILE is given

    [profiles.work]
    url = "https://strongroom.example.com"
    client_id = "alice-laptop"          # lets `strongroom login` go without --url and --client-id
    project = "microblog"               # the default for -p/--project
    ca_file = "/etc/ssl/private-ca.pem" # trust only this CA for the broker's TLS
    insecure = false                    # allow plain http to a host other than loopback

    [profiles.ci]
    url = "https://strongroom.internal:8750"

Without the file the one profile is `default`. `STRONGROOM_CONFIG` names another file. `strongroom login`
appends a table for a profile that has none (the rest of the file, comments included, is left as it was);
`strongroom profiles use NAME` rewrites only the `default_profile` line. Tokens are never in this file: each
profile's session is cached in its own 0600 file next to it (see cli/credentials.py).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cli.credentials import DEFAULT_PROFILE, config_dir
from cli.errors import CliError
from cli.files import write_private

CONFIG_ENVVAR = "STRONGROOM_CONFIG"
PROFILE_ENVVAR = "STRONGROOM_PROFILE"
NAME_RULE = "must be lower-case letters, digits, '-' and '_', starting with a letter or digit, at most 64"
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_KEYS: dict[str, type] = {"url": str, "client_id": str, "project": str, "ca_file": str, "insecure": bool}
_DEFAULT_LINE = re.compile(r"^[ \t]*default_profile[ \t]*=.*$", re.MULTILINE)
_TABLE_LINE = re.compile(r"^[ \t]*\[", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class Profile:
    """One profile's settings; None where the file says nothing."""

    name: str
    url: str | None = None
    client_id: str | None = None
    project: str | None = None
    ca_file: str | None = None
    insecure: bool = False


@dataclass(frozen=True, slots=True)
class Config:
    """The parsed config file."""

    path: Path
    exists: bool
    # Whether the file lives in Strongroom's own config directory (kept 0700), not one named by STRONGROOM_CONFIG.
    private_dir: bool = True
    default_profile: str | None = None
    profiles: dict[str, Profile] = field(default_factory=dict)

    def profile(self, name: str) -> Profile:
        """The named profile, or an empty one (a profile may exist only as a cached session)."""
        return self.profiles.get(name) or Profile(name=name)


def is_profile_name(name: str) -> bool:
    """Whether `name` is a valid profile name (it becomes part of a file name)."""
    return _NAME.fullmatch(name) is not None


def config_path(environ: Mapping[str, str]) -> Path:
    """`STRONGROOM_CONFIG` if set, else `config.toml` in the config directory."""
    given = environ.get(CONFIG_ENVVAR, "")
    return Path(given) if given else config_dir(environ) / "config.toml"


def load(environ: Mapping[str, str]) -> Config:
    """The config file's profiles; an absent file is an empty config, a broken one a one-sentence error."""
    path = config_path(environ)
    private_dir = not environ.get(CONFIG_ENVVAR)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return Config(path=path, exists=False, private_dir=private_dir)
    except OSError as exc:
        raise CliError(f"cannot read the config file {path}: {(exc.strerror or 'error').lower()}") from None
    import tomllib  # only when there is a file: it costs start-up time

    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise CliError(f"the config file {path} is not valid TOML: {exc}") from None
    return _parse(path, data, private_dir=private_dir)


def _parse(path: Path, data: dict[str, Any], *, private_dir: bool) -> Config:
    def wrong(where: str, problem: str) -> CliError:
        return CliError(f"the config file {path}: {where}: {problem}")

    unknown = sorted(set(data) - {"default_profile", "profiles"})
    if unknown:
        raise wrong(unknown[0], "unknown key (known: default_profile, profiles)")
    default = data.get("default_profile")
    if default is not None and (not isinstance(default, str) or not is_profile_name(default)):
        raise wrong("default_profile", NAME_RULE)
    tables = data.get("profiles", {})
    if not isinstance(tables, dict):
        raise wrong("profiles", "must be a table of profiles, e.g. [profiles.work]")
    profiles: dict[str, Profile] = {}
    for name, table in tables.items():
        where = f"profiles.{name}"
        if not is_profile_name(name):
            raise wrong(where, f"the profile name {NAME_RULE}")
        if not isinstance(table, dict):
            raise wrong(where, "must be a table")
        for key, value in table.items():
            expected = _KEYS.get(key)
            if expected is None:
                raise wrong(f"{where}.{key}", f"unknown key (known: {', '.join(_KEYS)})")
            if not isinstance(value, expected):
                raise wrong(
                    f"{where}.{key}", f"must be {'true or false' if expected is bool else 'a string'}"
                )
        profiles[name] = Profile(name=name, **table)
    return Config(path=path, exists=True, private_dir=private_dir, default_profile=default, profiles=profiles)


def selected(given: str | None, config: Config) -> str:
    """The profile to use: --profile / STRONGROOM_PROFILE, else the file's default_profile, else `default`."""
    name = given or config.default_profile or DEFAULT_PROFILE
    if not is_profile_name(name):
        raise CliError(f"the profile name {name!r} {NAME_RULE}", exit_code=2)
    return name


def _toml_string(value: str) -> str:
    escaped = []
    for ch in value:
        if ch in '"\\':
            escaped.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            escaped.append(f"\\u{ord(ch):04X}")
        else:
            escaped.append(ch)
    return '"' + "".join(escaped) + '"'


def _write(config: Config, text: str) -> None:
    try:
        write_private(config.path, text.encode("utf-8"), private_dir=config.private_dir)
    except OSError as exc:
        raise CliError(
            f"cannot write the config file {config.path}: {(exc.strerror or 'error').lower()}"
        ) from None


def _current_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ""
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "unreadable"
        raise CliError(f"cannot read the config file {path}: {reason.lower()}") from None


def add_profile(config: Config, profile: Profile) -> None:
    """Append a table for a profile the file does not have yet, leaving the rest of the file untouched."""
    if profile.name in config.profiles:
        return
    lines = [f"[profiles.{profile.name}]"]
    for key in _KEYS:
        value = getattr(profile, key)
        if isinstance(value, bool):
            if value:
                lines.append(f"{key} = true")
        elif value is not None:
            lines.append(f"{key} = {_toml_string(value)}")
    text = _current_text(config.path)
    if text and not text.endswith("\n"):
        text += "\n"
    _write(config, text + ("\n" if text else "") + "\n".join(lines) + "\n")


def set_default(config: Config, name: str) -> None:
    """Make `name` the default profile by rewriting (or adding) only the `default_profile` line."""
    text = _current_text(config.path)
    line = f"default_profile = {_toml_string(name)}"
    first_table = _TABLE_LINE.search(text)
    head_end = first_table.start() if first_table else len(text)
    match = _DEFAULT_LINE.search(text, 0, head_end)
    if match:
        text = text[: match.start()] + line + text[match.end() :]
    else:
        text = line + "\n" + ("\n" if text and not text.startswith("\n") else "") + text
    _write(config, text)
