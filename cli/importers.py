"""Reading an existing setup without running any of it: `.env` files, docker env-files, a Kamal project.

Nothing here executes, expands or evaluates anything. A value that its consumer would compute (a `$(...)`
command, a `$VAR` expansion, an ERB tag in deploy.yml) is never guessed: it is listed as needing a value,
with the reason, and the user provides it. Pure functions over text; the command does the I/O.
"""

from __future__ import annotations

import re
import unicodedata
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
    # A line `strongroom compile --target kamal` wrote: its value is fetched from the broker, never imported.
    written_by_compile: bool = False


@dataclass(frozen=True)
class Skipped:
    """A line of an input file that import cannot bring: where it is and why, never what it holds."""

    source: str
    line: int
    reason: str

    def text(self) -> str:
        """`file:line: reason`."""
        return f"{self.source}:{self.line}: {self.reason}"


# --- dotenv (Ruby dotenv 3.x's line grammar, which Kamal's .kamal/secrets uses too) --------------------------

# bkeepers/dotenv 3.x Parser::LINE in Python's regex dialect, ASCII classes as in Ruby (`\w` and `\s` are
# ASCII there), with one difference: a name alone on a line (`NAME`, which 3.x reads as empty) is listed as
# not brought rather than imported empty.
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
    re.VERBOSE | re.MULTILINE | re.ASCII,
)
_COMMAND = re.compile(r"\$\(")
# Escaped or not: dotenv's escaping rules differ between libraries, so any expansion is left to the user.
_VARIABLE = re.compile(r"\$[A-Za-z0-9_{]")
BOM = "\ufeff"
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _dotenv_value(raw: str, *, legacy_linebreaks: bool) -> tuple[str | None, str | None]:
    value = raw.strip()
    quote = value[0] if len(value) >= 2 and value[0] in "'\"" and value[-1] == value[0] else None
    if quote == "'":
        return value[1:-1], None
    if quote == '"':
        value = value[1:-1]
        # dotenv 3.x (Kamal 2.12 has 3.2.0) keeps `\n` and `\r` in double quotes as a backslash and a letter;
        # before 3.0, and with DOTENV_LINEBREAK_MODE=legacy set earlier in the file, they are line breaks.
        if legacy_linebreaks:
            value = value.replace("\\n", "\n").replace("\\r", "\r")
        else:
            value = value.replace("\\n", "\\\\n").replace("\\r", "\\\\r")
    if _COMMAND.search(value):
        return None, "computed by a shell command $(...), which import never runs"
    if _VARIABLE.search(value):
        return None, "expands another variable ($NAME), which import never guesses"
    # dotenv drops a backslash before any character but `$` (and keeps `\$` as `$` after substitution).
    return re.sub(r"\\(.)", r"\1", value, flags=re.DOTALL), None


def _code_point(char: str) -> str:
    name = unicodedata.name(char, "").lower()
    return f"U+{ord(char):04X}" + (f" {name}" if name else "")


def why_unreadable(line: str) -> str:
    """Why a non-comment line is not a variable (describes characters of the name part, never the value)."""
    if BOM in line:
        return f"has a byte order mark ({_code_point(BOM)}) inside the file, which hides the name"
    for char in line:
        if char in _BIDI:
            return (
                f"has a bidirectional control character ({_code_point(char)}), which makes the line "
                "show differently from what it holds"
            )
    for char in line:
        if unicodedata.category(char) == "Cf" or (not char.isprintable() and char not in "\t"):
            return f"has an invisible character ({_code_point(char)}) where a name is expected"
    stripped = line.strip()
    equals = re.search(r"=|:\s", stripped)
    if equals is None:
        if re.fullmatch(r"export\s+[A-Za-z_][A-Za-z0-9_]*", stripped, re.ASCII):
            return "is `export NAME` without a value"
        return "has no '=': a variable line is NAME=value"
    name = stripped[: equals.start()].strip()
    name = re.sub(r"^export\s+", "", name, flags=re.ASCII)
    if not name:
        return "has no name before '='"
    if name[0].isdigit():
        return "the name starts with a digit, which a variable name cannot"
    for char in name:
        if char.isspace():
            return "the name has a space in it"
        if not (char.isascii() and (char.isalnum() or char == "_")):
            shown = repr(char) if char.isascii() else _code_point(char)
            return f"the name has {shown}, which a variable name cannot hold"
    return "is not a NAME=value line"


def _name_problem(name: str) -> str | None:
    # What dotenv's `[\w.]+` takes and a variable name cannot be: a leading digit, or a '.'.
    return None if NAME.fullmatch(name) else why_unreadable(f"{name}=")


def parse_dotenv(text: str, source: str, *, kamal: bool = False) -> tuple[list[Found], list[Skipped]]:
    """Variables of a dotenv file as Ruby dotenv (and so Kamal) reads it, and every line it cannot bring.

    With `kamal`, lines `strongroom compile --target kamal` writes into .kamal/secrets* are marked as such.
    """
    # The kamal renderer alone knows the lines it writes (a pure module, allowed here by the import contract).
    from broker.renderers.kamal import written_by_compile

    # Ruby dotenv opens files as "rb:bom|utf-8": a byte order mark at the very start is not part of the text.
    text = text.removeprefix(BOM).replace("\r\n", "\n").replace("\r", "\n")
    found: list[Found] = []
    skipped: list[Skipped] = []

    def gap(start: int, end: int) -> None:
        first = text.count("\n", 0, start) + 1
        for offset, line in enumerate(text[start:end].split("\n")):
            if line.strip() and not line.lstrip().startswith("#"):
                skipped.append(Skipped(source, first + offset, why_unreadable(line)))

    position = 0
    legacy = False
    for match in _LINE.finditer(text):
        gap(position, match.start())
        position = match.end()
        name, raw = match.group(1), match.group(2) or ""
        problem = _name_problem(name)
        if problem is not None:
            skipped.append(Skipped(source, text.count("\n", 0, match.start(1)) + 1, problem))
            continue
        if kamal and written_by_compile(name, raw):
            found.append(Found(name, None, source, None, written_by_compile=True))
            continue
        value, reason = _dotenv_value(raw, legacy_linebreaks=legacy)
        if name == "DOTENV_LINEBREAK_MODE":
            legacy = value == "legacy"
        found.append(Found(name, value, source, reason))
    gap(position, len(text))
    return found, skipped


# --- docker --env-file (docker/cli pkg/kvfile) -------------------------------------------------------------

_GO_SPACE = " \t\n\v\f\r\x85\xa0"


def parse_env_file(text: str, source: str) -> tuple[list[Found], list[Skipped]]:
    """Variables of a docker env-file (values literal), and the lines whose name cannot be stored."""
    found: list[Found] = []
    skipped: list[Skipped] = []
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.removesuffix("\r").lstrip(_GO_SPACE)
        if not line or line.startswith("#"):
            continue
        name, equals, value = line.partition("=")
        name = name.lstrip(_GO_SPACE)
        if not NAME.fullmatch(name):
            skipped.append(Skipped(source, number, why_unreadable(line)))
        elif not equals:
            found.append(Found(name, None, source, "is taken from the caller's environment (no '=')"))
        else:
            found.append(Found(name, value, source))
    return found, skipped


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
    # What strongroom.yml needs before `check` accepts it: placeholders to replace, required keys to add.
    to_fill: list[str] = field(default_factory=list)
    # Things done that the user should know of (a plain-string registry password read as a secret's name).
    notes: list[str] = field(default_factory=list)


# A host that never resolves (RFC 6761) and that the manifest refuses with a sentence saying what to do.
PLACEHOLDER_SUFFIX = ".fill-in.invalid"
# `password: KAMAL_REGISTRY_PASSWORD`: the name of a secret, as written before Kamal 2's `password: [NAME]`.
_SECRET_NAME = re.compile(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+")


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

    def placeholder(self, path: str, what: str) -> str:
        """A host for strongroom.yml where ERB hid a required one, and the line saying what to write there."""
        host = re.sub(r"[^a-z0-9]+", "-", path.lower()).strip("-")[:40] + PLACEHOLDER_SUFFIX
        self.into.to_fill.append(
            f"{self.source}: {path}: {what} is computed by ERB, which import never runs; "
            f"replace the placeholder {host} in strongroom.yml with the real {what}"
        )
        return host

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
        for key in [k for k in raw if k not in ("clear", "secret", "tags")]:  # the file's order, every run
            self.skip(f"{path}/{key}", "has no manifest equivalent")
        return out

    def hosts(self, raw: Any, path: str) -> list[Any]:
        if isinstance(raw, str) and _has_erb(raw):
            # The whole list comes from ERB (`hosts: <%= ENV.fetch("WEB_HOSTS").split(",") %>`).
            return [self.placeholder(path, "hosts")]
        out: list[Any] = []
        for i, host in enumerate(raw if isinstance(raw, list) else [raw]):
            if isinstance(host, Mapping) and len(host) == 1 and not _has_erb(host):
                ((name, tags),) = host.items()
                out.append(
                    {
                        "host": str(name),
                        "tags": [str(t) for t in (tags if isinstance(tags, list) else [tags])],
                    }
                )
            elif isinstance(host, str) and not _has_erb(host):
                out.append(host)
            elif _has_erb(host):
                out.append(self.placeholder(f"{path}/{i}", "host"))
            else:
                self.skip(f"{path}/{i}", "is not a host name")
        return out

    def role(self, raw: Any, path: str) -> dict[str, Any]:
        if isinstance(raw, list) or (isinstance(raw, str) and _has_erb(raw)):
            return {"hosts": self.hosts(raw, f"{path}/hosts")}
        if not isinstance(raw, Mapping):
            self.skip(path, "is not a list of hosts or a mapping")
            return {}
        out: dict[str, Any] = {"hosts": self.hosts(raw.get("hosts") or [], f"{path}/hosts")}
        for key, value in raw.items():
            if key == "hosts":
                continue
            if _has_erb(value) and key != "env":
                self.skip(f"{path}/{key}", "is computed by ERB; set it by hand")
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
            # Sections are mapped key by key, so one ERB value does not cost the whole section.
            sections = ("env", "servers", "accessories", "proxy", "registry", "builder", "ssh")
            if _has_erb(value) and (key not in sections or not isinstance(value, Mapping | list)):
                self.skip(str(key), "is computed by ERB; set it by hand")
                continue
            handler = getattr(self, f"_{key}", None)
            if handler is None:
                self.skip(str(key), "has no manifest equivalent")
                continue
            handler(value, out)
        return out

    def finish(self, body: dict[str, Any], *, base: bool) -> None:
        """Say what a Kamal 2.12 deploy needs that deploy.yml did not give (only the base file must)."""
        if base and "arch" not in body.get("builder", {}):
            self.into.to_fill.append(
                f"{self.source}: builder/arch: is not set, and Kamal 2.12 refuses a configuration without "
                "it; add arch: amd64 (or arm64, or [amd64, arm64]) under builder in strongroom.yml"
            )

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
            if key in ("host", "hosts") and _has_erb(item):
                proxy["host"] = self.placeholder(f"proxy/{key}", "public host name")
            elif _has_erb(item):
                self.skip(f"proxy/{key}", "is computed by ERB; set it by hand")
            elif key in ("host", "ssl", "app_port", "response_timeout"):
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
        for key in [k for k in value if k not in ("server", "username", "password")]:  # the file's order
            self.skip(f"registry/{key}", "has no manifest equivalent")
        if _has_erb(value.get("server")):
            self.skip("registry/server", "is computed by ERB; set it by hand")
        elif "server" in value:
            registry["server"] = _text(value["server"])
        username = value.get("username")
        if _has_erb(username) or isinstance(username, list):
            self.into.to_fill.append(
                f"{self.source}: registry/username: is computed by ERB or read from a secret; write the user "
                "name itself under registry in strongroom.yml"
            )
        elif username is not None:
            registry["username"] = _text(username)
        password = value.get("password")
        if _has_erb(password):
            registry["password"] = "KAMAL_REGISTRY_PASSWORD"  # noqa: S105 (the secret's name)
            self.into.notes.append(
                f"{self.source}: registry/password: is computed by ERB; strongroom.yml names the secret "
                "KAMAL_REGISTRY_PASSWORD: store the password there"
            )
        elif isinstance(password, list) and len(password) == 1:
            registry["password"] = str(password[0])
        elif isinstance(password, str) and _SECRET_NAME.fullmatch(password):
            registry["password"] = password
            self.into.notes.append(
                f"{self.source}: registry/password: read as the name of a secret (Kamal 2 would take a plain "
                "string as the password itself; the kamal target writes it as [NAME])"
            )
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
            if _has_erb(item):
                self.skip(f"builder/{key}", "is computed by ERB; set it by hand")
            elif key == "arch":
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
                if key == "host" and _has_erb(item):
                    acc[key] = self.placeholder(where, "host")
                elif key == "hosts" and _has_erb(item):
                    acc[key] = self.hosts(item, where)
                elif _has_erb(item) and key != "env":
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
        ssh = {k: value[k] for k in ("user", "port") if k in value and not _has_erb(value[k])}
        for key in sorted(set(value) - set(ssh)):
            why = (
                "is computed by ERB; set it by hand" if _has_erb(value[key]) else "has no manifest equivalent"
            )
            self.skip(f"ssh/{key}", why)
        out["ssh"] = ssh
        return None


def map_deploy(
    config: Mapping[str, Any], source: str, into: KamalImport, *, base: bool = True
) -> dict[str, Any]:
    """A Kamal configuration (deploy.yml, or with base=False a destination's file) as a manifest body."""
    mapper = _Mapper(source, into)
    body = mapper.body(config)
    mapper.finish(body, base=base)
    return body


def secrets_files(names: list[str]) -> Iterator[tuple[str, str | None]]:
    """(file name, destination or None) for the `.kamal/secrets*` files Kamal reads, in its order."""
    for name in sorted(names):
        if name in ("secrets", "secrets-common"):
            yield name, None
        elif name.startswith("secrets.") and len(name) > len("secrets."):
            yield name, name.removeprefix("secrets.")
