"""Reading an existing setup without running any of it: `.env` files, docker env-files, a Kamal project.

Nothing here executes, expands or evaluates anything. A value that its consumer would compute (a `$(...)`
command, a `$VAR` expansion, an ERB tag in deploy.yml) is never guessed: it is listed as needing a value,
with the reason, and the user provides it. Pure functions over text; the command does the I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class Found:
    """One variable found in a file: its value, or None with the reason it needs one from the user."""

    name: str
    value: str | None = field(repr=False)
    source: str
    reason: str | None = None


# --- dotenv (Ruby dotenv's line grammar, which Kamal's .kamal/secrets uses too) ----------------------

# bkeepers/dotenv 3.x Parser::LINE, in Python's regex dialect.
_LINE = re.compile(
    r"""
    (?:^|\A)\s*
    (?:export\s+)?
    ([\w.]+)
    (?:\s*=\s*?|:\s+?)
    (
      \s*'(?:\\'|[^'])*'
      |
      \s*"(?:\\"|[^"])*"
      |
      [^\#\r\n]+
    )?
    \s*
    (?:\#.*)?
    (?:$|\Z)
    """,
    re.VERBOSE | re.MULTILINE,
)
_COMMAND = re.compile(r"\$\(")
# Escaped or not: dotenv's escaping rules differ between libraries, so any expansion is left to the user.
_VARIABLE = re.compile(r"\$[A-Za-z0-9_{]")


def _dotenv_value(raw: str) -> tuple[str | None, str | None]:
    value = raw.strip()
    quote = value[0] if len(value) >= 2 and value[0] in "'\"" and value[-1] == value[0] else None
    if quote == "'":
        return value[1:-1], None
    if quote == '"':
        value = value[1:-1].replace("\\n", "\n").replace("\\r", "\r")
    if _COMMAND.search(value):
        return None, "computed by a shell command $(...), which import never runs"
    if _VARIABLE.search(value):
        return None, "expands another variable ($NAME), which import never guesses"
    # dotenv drops a backslash before any character but `$` (and keeps `\$` as `$` after substitution).
    return re.sub(r"\\(.)", r"\1", value, flags=re.DOTALL), None


def parse_dotenv(text: str, source: str) -> list[Found]:
    """Variables of a dotenv file; quoting as Ruby dotenv (and so Kamal) reads it."""
    out: list[Found] = []
    for match in _LINE.finditer(text.replace("\r\n", "\n").replace("\r", "\n")):
        name, raw = match.group(1), match.group(2) or ""
        if not NAME.fullmatch(name):
            out.append(Found(name, None, source, "is not a variable name Strongroom can store"))
            continue
        value, reason = _dotenv_value(raw)
        out.append(Found(name, value, source, reason))
    return out


# --- docker --env-file (docker/cli pkg/kvfile) -------------------------------------------------------------

_GO_SPACE = " \t\n\v\f\r\x85\xa0"


def parse_env_file(text: str, source: str) -> list[Found]:
    """Variables of a docker env-file: values are literal; a line without `=` takes the caller's environment."""
    out: list[Found] = []
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.removesuffix("\r").lstrip(_GO_SPACE)
        if not line or line.startswith("#"):
            continue
        name, equals, value = line.partition("=")
        name = name.lstrip(_GO_SPACE)
        if not NAME.fullmatch(name):
            out.append(
                Found(name or f"line {number}", None, source, "is not a variable name Strongroom can store")
            )
        elif not equals:
            out.append(Found(name, None, source, "is taken from the caller's environment (no '=')"))
        else:
            out.append(Found(name, value, source))
    return out


# --- Kamal: config/deploy*.yml -------------------------------------------------------------------------------

_ERB = re.compile(r"<%(=|-|#)?(.*?)-?%>", re.DOTALL)
ERB_MARK = "\ue000strongroom-erb\ue000"  # a private-use character YAML accepts and no config contains


class ImportError_(ValueError):
    """The file cannot be imported as it is; the message says why and what to do."""


def strip_erb(text: str, source: str) -> str:
    """deploy.yml with every `<%= ... %>` replaced by a marker (never evaluated); control flow is refused."""

    def replace(match: re.Match[str]) -> str:
        kind = match.group(1)
        if kind == "#":
            return ""
        if kind == "=":
            return ERB_MARK
        raise ImportError_(
            f"{source} uses ERB code (<% ... %>), which import never runs; replace it with plain YAML first"
        )

    return _ERB.sub(replace, text)


@dataclass
class KamalImport:
    """A manifest built from a Kamal configuration, and what could not be brought into it."""

    manifest: dict[str, Any]
    not_brought: list[str] = field(default_factory=list)
    values: list[Found] = field(default_factory=list)


def _has_erb(value: Any) -> bool:
    if isinstance(value, str):
        return ERB_MARK in value
    if isinstance(value, Mapping):
        return any(_has_erb(k) or _has_erb(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_erb(v) for v in value)
    return False


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _clear_text(value: Any) -> str:
    # In strongroom.yml `$` starts a reference, so a literal one is written `$$`.
    return _text(value).replace("$", "$$")


class _Mapper:
    def __init__(self, source: str, into: KamalImport) -> None:
        self.source = source
        self.into = into

    def skip(self, path: str, why: str) -> None:
        self.into.not_brought.append(f"{self.source}: {path}: {why}")

    def env(self, raw: Any, path: str) -> dict[str, Any]:
        if not isinstance(raw, Mapping):
            self.skip(path, "is not a mapping")
            return {}
        if not {"clear", "secret", "tags"} & set(raw):
            raw = {"clear": raw}
        out: dict[str, Any] = {}
        clear = {}
        for name, value in (raw.get("clear") or {}).items():
            if _has_erb(value):
                self.skip(f"{path}/clear/{name}", "is computed by ERB; set it by hand")
            else:
                clear[str(name)] = _clear_text(value)
        if clear:
            out["clear"] = clear
        secret = []
        for name in raw.get("secret") or []:
            if ":" in str(name):
                self.skip(
                    f"{path}/secret/{name}", "aliases a secret (KEY:OTHER); store it under its own name"
                )
            else:
                secret.append(str(name))
        if secret:
            out["secret"] = secret
        if "tags" in raw:
            if path != "env":
                self.skip(f"{path}/tags", "tags are supported in the global env only")
            else:
                tags = {str(t): self.env(spec, f"env/tags/{t}") for t, spec in (raw["tags"] or {}).items()}
                out["tags"] = {t: spec for t, spec in tags.items() if spec}
        for key in set(raw) - {"clear", "secret", "tags"}:
            self.skip(f"{path}/{key}", "has no manifest equivalent")
        return out

    def hosts(self, raw: Any, path: str) -> list[Any]:
        out: list[Any] = []
        for i, host in enumerate(raw if isinstance(raw, list) else [raw]):
            if isinstance(host, Mapping) and len(host) == 1:
                ((name, tags),) = host.items()
                out.append(
                    {
                        "host": str(name),
                        "tags": [str(t) for t in (tags if isinstance(tags, list) else [tags])],
                    }
                )
            elif isinstance(host, str) and not _has_erb(host):
                out.append(host)
            else:
                self.skip(f"{path}/{i}", "is not a host name (or is computed by ERB)")
        return out

    def role(self, raw: Any, path: str) -> dict[str, Any]:
        if isinstance(raw, list):
            return {"hosts": self.hosts(raw, f"{path}/hosts")}
        if not isinstance(raw, Mapping):
            self.skip(path, "is not a list of hosts or a mapping")
            return {}
        out: dict[str, Any] = {"hosts": self.hosts(raw.get("hosts") or [], f"{path}/hosts")}
        for key, value in raw.items():
            if key == "hosts":
                continue
            if key == "env":
                env = self.env(value, f"{path}/env")
                if env:
                    out["env"] = env
            elif (key in ("cmd",) and isinstance(value, str)) or (key == "proxy" and isinstance(value, bool)):
                out[key] = value
            elif key == "options" and isinstance(value, Mapping):
                out[key] = {str(k): _text(v) for k, v in value.items()}
            else:
                self.skip(f"{path}/{key}", "has no manifest equivalent")
        return out

    def body(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in raw.items():
            if _has_erb(value) and key not in ("env", "servers", "accessories"):
                self.skip(str(key), "is computed by ERB; set it by hand")
                continue
            handler = getattr(self, f"_{key}", None)
            if handler is None:
                self.skip(str(key), "has no manifest equivalent")
                continue
            handler(value, out)
        return out

    def _service(self, value: Any, out: dict[str, Any]) -> None:
        out["service"] = _text(value)

    def _image(self, value: Any, out: dict[str, Any]) -> None:
        out["image"] = _text(value)

    def _servers(self, value: Any, out: dict[str, Any]) -> None:
        if isinstance(value, list):
            out["roles"] = {"web": {"hosts": self.hosts(value, "servers")}}
        elif isinstance(value, Mapping):
            out["roles"] = {str(r): self.role(spec, f"servers/{r}") for r, spec in value.items()}

    def _proxy(self, value: Any, out: dict[str, Any]) -> None:
        if not isinstance(value, Mapping):
            return self.skip("proxy", "is not a mapping")
        proxy: dict[str, Any] = {}
        for key, item in value.items():
            if key in ("host", "ssl", "app_port", "response_timeout"):
                proxy[key] = item
            elif key == "hosts" and isinstance(item, list) and item:
                proxy["host"] = item[0]
                if len(item) > 1:
                    self.skip("proxy/hosts", "only the first host is brought")
            elif key == "healthcheck" and isinstance(item, Mapping):
                out["healthcheck"] = {k: v for k, v in item.items() if k in ("path", "interval", "timeout")}
            else:
                self.skip(f"proxy/{key}", "has no manifest equivalent")
        out["proxy"] = proxy
        return None

    def _registry(self, value: Any, out: dict[str, Any]) -> None:
        if not isinstance(value, Mapping):
            return self.skip("registry", "is not a mapping")
        registry: dict[str, Any] = {}
        if "server" in value:
            registry["server"] = _text(value["server"])
        username = value.get("username")
        if isinstance(username, list):
            self.skip("registry/username", "is a secret; write the user name itself in strongroom.yml")
        elif username is not None:
            registry["username"] = _text(username)
        password = value.get("password")
        if isinstance(password, list) and len(password) == 1:
            registry["password"] = str(password[0])
        elif isinstance(password, str):
            # A literal password in deploy.yml: it moves into the broker and the manifest keeps only its name.
            registry["password"] = "KAMAL_REGISTRY_PASSWORD"  # noqa: S105 (the secret's name)
            self.into.values.append(
                Found("KAMAL_REGISTRY_PASSWORD", password, f"{self.source}: registry/password")
            )
        out["registry"] = registry
        return None

    def _builder(self, value: Any, out: dict[str, Any]) -> None:
        if not isinstance(value, Mapping):
            return self.skip("builder", "is not a mapping")
        builder: dict[str, Any] = {}
        for key, item in value.items():
            if key == "arch":
                builder["arch"] = item
            elif key == "secrets" and isinstance(item, list):
                builder["secrets"] = [str(s) for s in item]
            elif key == "args" and isinstance(item, Mapping):
                builder["args"] = {str(k): _text(v) for k, v in item.items()}
            elif key in ("dockerfile", "context", "target"):
                builder[key] = _text(item)
            else:
                self.skip(f"builder/{key}", "has no manifest equivalent")
        out["builder"] = builder
        return None

    def _env(self, value: Any, out: dict[str, Any]) -> None:
        env = self.env(value, "env")
        if env:
            out["env"] = env

    def _volumes(self, value: Any, out: dict[str, Any]) -> None:
        out["volumes"] = [_text(v) for v in value] if isinstance(value, list) else []

    def _accessories(self, value: Any, out: dict[str, Any]) -> None:
        accessories: dict[str, Any] = {}
        for name, spec in (value or {}).items():
            if not isinstance(spec, Mapping):
                self.skip(f"accessories/{name}", "is not a mapping")
                continue
            acc: dict[str, Any] = {}
            for key, item in spec.items():
                where = f"accessories/{name}/{key}"
                if _has_erb(item) and key != "env":
                    self.skip(where, "is computed by ERB; set it by hand")
                elif key in ("image", "host", "port", "cmd"):
                    acc[key] = _text(item)
                elif key in ("hosts", "roles", "volumes", "directories") and isinstance(item, list):
                    acc[key] = [_text(i) for i in item]
                elif key == "env":
                    env = self.env(item, f"accessories/{name}/env")
                    if env:
                        acc["env"] = env
                elif key == "options" and isinstance(item, Mapping):
                    acc["options"] = {str(k): _text(v) for k, v in item.items()}
                else:
                    self.skip(where, "has no manifest equivalent (copy it by hand if you need it)")
            accessories[str(name)] = acc
        out["accessories"] = accessories

    def _ssh(self, value: Any, out: dict[str, Any]) -> None:
        if not isinstance(value, Mapping):
            return self.skip("ssh", "is not a mapping")
        ssh = {k: value[k] for k in ("user", "port") if k in value}
        for key in set(value) - {"user", "port"}:
            self.skip(f"ssh/{key}", "has no manifest equivalent")
        out["ssh"] = ssh
        return None


def map_deploy(config: Mapping[str, Any], source: str, into: KamalImport) -> dict[str, Any]:
    """A Kamal configuration (one deploy*.yml, already parsed) as a manifest body."""
    return _Mapper(source, into).body(config)


def secrets_files(names: list[str]) -> Iterator[tuple[str, str | None]]:
    """(file name, destination or None) for the `.kamal/secrets*` files Kamal reads, in its order."""
    for name in sorted(names):
        if name in ("secrets", "secrets-common"):
            yield name, None
        elif name.startswith("secrets.") and len(name) > len("secrets."):
            yield name, name.removeprefix("secrets.")
