"""`kamal`: config/deploy.yml, config/deploy.<env>.yml and .kamal/secrets files that hold no value.

What Kamal 2 (2.3 or later) does with each piece, and so what this renderer refuses:
- `config/deploy*.yml` go through ERB, then a YAML loader. They are written by a YAML serializer, every
  string that could be read as something else double-quoted, non-ASCII escaped (what a reviewer sees is
  what Kamal reads), no anchors, no tags; any `<%` is refused (ERB would run it). Only scalars with an
  exact YAML form are written (identifiers plain, other text double-quoted, integers, booleans); anything
  else is refused. The tests read every file back with PyYAML and Ruby's Psych.
- Secrets appear only by name (`env.secret`, `builder.secrets`, `registry.password: [NAME]`).
- `.kamal/secrets.<env>` is read with Ruby dotenv plus Kamal's inline command substitution. dotenv 3.2.x
  (Kamal 2.12's lock file) runs a command, then variable substitution over its output; 3.1.x the other
  way round. Three lines find out which: STRONGROOM_DOTENV_ORDER=3.2, then
  `STRONGROOM_DOTENV=$(printf '\\044{STRONGROOM_DOTENV_ORDER}')` (printf prints `${...}`, which 3.2
  expands at once and 3.1 only where STRONGROOM_DOTENV is used), then STRONGROOM_DOTENV_ORDER=3.1.
  Then one command, `STRONGROOM_SECRETS=$(strongroom kamal fetch --dotenv ${STRONGROOM_DOTENV} -p P -e
  ENV KEY...)`, prints the JSON object `kamal secrets extract` reads (shell-escaped, as `kamal secrets
  fetch` prints it; for 3.2 each `$` escaped so the substitution after `extract` restores it), and one
  `KEY=$(kamal secrets extract KEY ${STRONGROOM_SECRETS})` line per key. Names are `[A-Z_][A-Z0-9_]*`,
  not one of those three; no value ever appears in the file.
- Kamal hands secret env values to docker through an env file it escapes with Ruby's String#dump, and clear
  values, build arguments and the registry password through a remote shell in double quotes. Values those
  steps would change are refused: for env files a backslash or an ASCII control character (newline, tab,
  NUL...), for the shell an ASCII control character, `#{`, `#$`, `#@`, `${...}` (Kamal leaves it for the
  shell to expand) or a blank value. A trailing line break survives Kamal's chomp of `extract`'s output:
  the fetch writes one more of it.
  The alternative named for such a value is a target that carries it (asked of the env-file and k8s
  renderers themselves: a multi-line PEM goes to k8s, not env-file), or a file mount.
- `.kamal/secrets-common` is written with comments only, so values kept there before the switch are gone.
- What Kamal 2.12's configuration loader would refuse (no builder arch, no registry, SSL on several servers
  without a certificate of one's own...) is listed by `config_problems`, which the compiler applies before
  rendering; this renderer alone writes whatever configuration it is given.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from broker.domain.manifest import EnvSection, ManifestBody, deep_merge
from broker.renderers import checks, yamltext
from broker.renderers.base import Entry, RenderedFile, RenderError, RenderOptions
from broker.renderers.envfile import LINE_MAX_BYTES

TARGET = "kamal"
HOLDER = "STRONGROOM_SECRETS"
DOTENV_PROBE = "STRONGROOM_DOTENV"
_DOTENV_ORDER = "STRONGROOM_DOTENV_ORDER"
RESERVED = frozenset({HOLDER, DOTENV_PROBE, _DOTENV_ORDER})
KAMAL_KEY = re.compile(r"[A-Z_][A-Z0-9_]*")
_SLUG = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
_ASCII_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SHELL_EXPANDED = re.compile(r"\$\{[^}]*\}")  # Kamal::Utils leaves ${...} unescaped for the shell
_RUBY_INTERPOLATION = re.compile(r"#[{$@]")  # String#dump escapes '#' before these
# Where a value Kamal would change can go instead (each tried on the very value before it is named).
_CARRIERS = ("env-file", "k8s")

Scope = tuple[str, ...]


class ClearValue(NamedTuple):
    """A resolved clear value; sensitive when a reference pulled in a sensitive stored value."""

    value: str
    sensitive: bool = False

    def __repr__(self) -> str:
        return f"ClearValue(value=[REDACTED], sensitive={self.sensitive})"


@dataclass(frozen=True)
class KamalPlan:
    """The manifest views and their clear values, as the compiler hands them to the renderer."""

    # `clear`: the environment's resolved values by scope (("global",), ("role", r), ("tag", t),
    # ("accessory", a)), each scope's own names only. `base_clear`: the base manifest's values without a
    # reference (the same in every environment), which is all config/deploy.yml may contain.

    project: str | None
    body: ManifestBody
    clear: Mapping[Scope, Mapping[str, ClearValue]]
    base: ManifestBody | None = None
    base_clear: Mapping[Scope, Mapping[str, str]] = field(default_factory=dict)


# --- value rules (each returns why Kamal would change the value, or None) ----------------------------


def env_file_problem(value: str, name: str = "") -> str | None:
    """Why Kamal's env file (String#dump, Kamal >= 2.3) would change `value` on its way to docker, or docker refuse it."""
    if _ASCII_CONTROL.search(value):
        return "value has a control character (newline, tab, NUL...), which Kamal's env file escapes"
    if "\\" in value:
        return "value has a backslash, which Kamal's env file doubles"
    # Past the two rules above Kamal's escaping leaves the bytes as they are, so the line docker's
    # --env-file scanner reads is NAME=value, and it stops the container's start on a longer one.
    if len(name.encode()) + 1 + len(value.encode("utf-8", "surrogatepass")) > LINE_MAX_BYTES:
        return (
            f"NAME=value is longer than {LINE_MAX_BYTES} bytes, which docker's --env-file reader refuses "
            "(token too long) when Kamal starts the container"
        )
    return None


def shell_problem(value: str) -> str | None:
    """Why Kamal's double-quoted shell argument (Kamal::Utils.escape_shell_value) would change `value`."""
    if not value.strip():
        return "value is blank, which Kamal passes as a name without a value"
    if _ASCII_CONTROL.search(value):
        return "value has a control character (newline, tab, NUL...), which Kamal's shell quoting escapes"
    if _RUBY_INTERPOLATION.search(value):
        return "value has '#' before '{', '$' or '@', which Kamal's shell quoting turns into '\\#'"
    if _SHELL_EXPANDED.search(value):
        return "value has ${...}, which Kamal leaves for the remote shell to expand"
    return None


def build_secret_problem(value: str) -> str | None:
    """Why a build secret (passed through the environment of `docker build`) would not arrive intact."""
    if "\x00" in value:
        return "value has a NUL character, which an environment variable cannot carry"
    return None


# --- YAML ---------------------------------------------------------------------------------------------

# Identifiers plain and every other string double-quoted, as yaml.dump with a SafeDumper writes them;
# non-ASCII and invisible characters as escapes; never a block (Kamal's files stay one line per value).
_STYLE = yamltext.Style(plain_values=True, literal_blocks=False, allow_unicode=False)


def dump(data: Mapping[str, Any]) -> str:
    """YAML text for a deploy file (what yaml.dump with a SafeDumper writes, identifiers plain, other strings quoted)."""
    return yamltext.dump(dict(data), style=_STYLE)


# --- manifest -> Kamal configuration ---------------------------------------------------------------------

ClearLookup = Callable[[Scope, str], ClearValue | None]


def _env(section: EnvSection, scope: Scope, clear: ClearLookup) -> dict[str, Any]:
    out: dict[str, Any] = {}
    values = {}
    for name in section.clear:
        got = clear(scope, name)
        if got is not None:
            values[name] = got.value
    if values:
        out["clear"] = values
    if section.secret:
        out["secret"] = list(section.secret)
    return out


def _config(body: ManifestBody, clear: ClearLookup) -> dict[str, Any]:
    config: dict[str, Any] = {"service": body.service}
    if body.image is not None:
        config["image"] = body.image
    servers: dict[str, Any] = {}
    for name, role in body.roles.items():
        spec: dict[str, Any] = {
            "hosts": [h.host if not h.tags else {h.host: list(h.tags)} for h in role.hosts]
        }
        if role.cmd is not None:
            spec["cmd"] = role.cmd
        env = _env(role.env, ("role", name), clear)
        if env:
            spec["env"] = env
        if role.proxy is not None:
            spec["proxy"] = role.proxy
        if role.options:
            spec["options"] = dict(role.options)
        servers[name] = spec
    if servers:
        config["servers"] = servers
    proxy: dict[str, Any] = {}
    if body.proxy is not None:
        proxy.update(body.proxy.model_dump(exclude_none=True))
    if body.healthcheck is not None:
        proxy["healthcheck"] = body.healthcheck.model_dump()
        # Kamal takes whole seconds: a sub-second probe (for `strongroom deploy`) is checked every second.
        proxy["healthcheck"]["interval"] = math.ceil(body.healthcheck.interval)
    if proxy:
        config["proxy"] = proxy
    if body.registry is not None:
        registry: dict[str, Any] = {}
        if body.registry.server is not None:
            registry["server"] = body.registry.server
        registry["username"] = body.registry.username
        registry["password"] = [body.registry.password]
        config["registry"] = registry
    if body.builder is not None:
        b = body.builder
        builder: dict[str, Any] = {}
        if b.arch is not None:
            builder["arch"] = b.arch[0] if len(b.arch) == 1 else list(b.arch)
        if b.secrets:
            builder["secrets"] = list(b.secrets)
        if b.args:
            builder["args"] = dict(b.args)
        for key in ("dockerfile", "context", "target"):
            if getattr(b, key) is not None:
                builder[key] = getattr(b, key)
        config["builder"] = builder
    env = _env(body.env, ("global",), clear)
    tags = {tag: _env(section, ("tag", tag), clear) for tag, section in body.env.tags.items()}
    tags = {tag: spec for tag, spec in tags.items() if spec}
    if tags:
        env["tags"] = tags
    if env:
        config["env"] = env
    if body.volumes:
        config["volumes"] = list(body.volumes)
    accessories: dict[str, Any] = {}
    for name, acc in body.accessories.items():
        spec = {"image": acc.image}
        for key in ("host", "hosts", "roles", "port", "cmd"):
            if getattr(acc, key) is not None:
                spec[key] = getattr(acc, key)
        env = _env(acc.env, ("accessory", name), clear)
        if env:
            spec["env"] = env
        for key in ("volumes", "directories"):
            if getattr(acc, key):
                spec[key] = list(getattr(acc, key))
        if acc.options:
            spec["options"] = dict(acc.options)
        accessories[name] = spec
    if accessories:
        config["accessories"] = accessories
    config["ssh"] = {"user": body.ssh.user, "port": body.ssh.port}
    return config


# --- Kamal's own configuration rules ------------------------------------------------------------------------
#
# What Kamal 2.12's loader (Kamal::Configuration and its validators) refuses that a manifest could still say:
# the model already forbids the rest (unknown keys, a role without hosts, ssl without a host, an accessory
# on zero or several placements or on an undefined role, a service name Kamal would refuse). Each refusal
# quotes Kamal's own message so that a user who met it in `kamal deploy` recognises it.

KAMAL_VERSION = "2.12"
PRIMARY_ROLE = "web"  # Kamal's primary_role default; the manifest has no setting for it
_RESTART = re.compile(r"no|always|unless-stopped|on-failure(?::[0-9]+)?")
_PEM_CERTIFICATE = "-----BEGIN CERTIFICATE-----"
_PEM_PRIVATE_KEY = re.compile(r"-----BEGIN (?:RSA |EC )?PRIVATE KEY-----")


def proxied_roles(body: ManifestBody) -> list[str]:
    """The roles Kamal runs kamal-proxy for: web unless `proxy: false`, any other only with `proxy: true`."""
    return [
        name
        for name, role in body.roles.items()
        if (role.proxy is not False if name == PRIMARY_ROLE else role.proxy is True)
    ]


def _refusal(key: str, reason: str, kamal_says: str, alternative: str) -> RenderError:
    return RenderError(
        key=key,
        target=TARGET,
        reason=f"{reason}, and Kamal {KAMAL_VERSION} refuses to load that (`{kamal_says}`)",
        alternative=alternative,
    )


def config_problems(body: ManifestBody) -> list[RenderError]:
    """Every rule of Kamal 2.12's configuration loader that this manifest breaks, each naming its path."""
    found: list[RenderError] = []
    if body.builder is None or body.builder.arch is None:
        found.append(
            _refusal(
                "builder/arch",
                "is not set",
                "builder: Builder arch not set",
                "add arch: amd64, arm64 or [amd64, arm64] under builder",
            )
        )
    if body.registry is None:
        found.append(
            _refusal(
                "registry",
                "is not set",
                # What Kamal meets first: its registry section validates before the required-keys check.
                "registry/username: is required",
                "add registry with username and password, the name of the secret holding it",
            )
        )
    local_registry = body.registry is not None and (body.registry.server or "").startswith("localhost:")
    if body.image is None and not local_registry:
        found.append(
            _refusal(
                "image",
                "is not set",
                "Missing required configuration for image",
                "add image, such as ghcr.io/acme/app",
            )
        )
    if not body.roles and not body.accessories:
        found.append(
            _refusal(
                "roles",
                "names no server, nor is there an accessory",
                "No servers or accessories specified",
                "add a role web with its hosts",
            )
        )
    elif body.roles and PRIMARY_ROLE not in body.roles:
        found.append(
            _refusal(
                f"roles/{PRIMARY_ROLE}",
                "is not defined, while Kamal takes web as the primary role",
                f"The primary_role {PRIMARY_ROLE} isn't defined",
                "name the main role web",
            )
        )
    found += _ssl_problems(body)
    for where, options in [
        *((f"roles/{name}", role.options) for name, role in body.roles.items()),
        *((f"accessories/{name}", acc.options) for name, acc in body.accessories.items()),
    ]:
        restart = options.get("restart")
        if restart is not None and not _RESTART.fullmatch(restart):
            found.append(
                _refusal(
                    f"{where}/options/restart",
                    "is not a restart policy Kamal knows",
                    "should be no, always, unless-stopped, on-failure, or on-failure:N",
                    "use no, always, unless-stopped, on-failure or on-failure:N",
                )
            )
    return found


def _ssl_problems(body: ManifestBody) -> list[RenderError]:
    # Kamal merges the root proxy section into every role that runs the proxy, so each of them gets its
    # ssl and its host; Let's Encrypt works for one server per role, and one role per host name.
    proxy = body.proxy
    if proxy is None or proxy.ssl is False:
        return []
    found: list[RenderError] = []
    roles = proxied_roles(body)
    if proxy.certificate is None:
        for name in roles:
            count = len({h.host for h in body.roles[name].hosts})
            if count > 1:
                found.append(
                    _refusal(
                        f"roles/{name}/hosts",
                        f"lists {count} servers while proxy/ssl is true (Let's Encrypt works on one server)",
                        "SSL is only supported on a single server unless you provide custom certificates, "
                        f"found {count} servers for role {name}",
                        "keep one host, give your own certificate as proxy/ssl: {certificate_pem: NAME, "
                        "private_key_pem: NAME}, or set proxy/ssl to false and end TLS at a load balancer",
                    )
                )
    for name in roles[1:]:
        found.append(
            _refusal(
                f"roles/{name}/proxy",
                f"runs kamal-proxy with SSL for the same host as roles/{roles[0]}",
                f"Different roles can't share the same host for SSL: {proxy.host}",
                "run the proxy on one role only, or set proxy/ssl to false",
            )
        )
    return found


def certificate_problems(body: ManifestBody, values: Mapping[str, str]) -> list[RenderError]:
    """Why the secrets proxy/ssl names would not give kamal-proxy a PEM certificate and key (never a value)."""
    certificate = body.proxy.certificate if body.proxy is not None else None
    if certificate is None:
        return []
    found: list[RenderError] = []
    checks_ = (
        ("certificate_pem", certificate.certificate_pem, "a PEM certificate", _PEM_CERTIFICATE),
        ("private_key_pem", certificate.private_key_pem, "an unencrypted PEM private key", None),
    )
    for key, name, what, marker in checks_:
        value = values.get(name)
        if value is None:
            continue  # reported by the compiler as missing
        head = value.lstrip()
        good = head.startswith(marker) if marker else bool(_PEM_PRIVATE_KEY.match(head))
        if not good:
            found.append(
                RenderError(
                    key=f"proxy/ssl/{key}",
                    target=TARGET,
                    reason=f"the secret {name} does not hold {what}, which kamal-proxy needs",
                    alternative=f"store the PEM text in {name}",
                )
            )
    return found


def destination_diff(base: Mapping[str, Any], full: Mapping[str, Any]) -> dict[str, Any]:
    """The smallest mapping that Kamal's deep merge over `base` turns into `full`."""
    out: dict[str, Any] = {}
    for key, value in full.items():
        if key not in base:
            out[key] = value
        elif isinstance(value, Mapping) and isinstance(base[key], Mapping):
            sub = destination_diff(base[key], value)
            if sub:
                out[key] = sub
        elif base[key] != value:
            out[key] = value
    return out


def _strings(data: Any, path: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(data, Mapping):
        for key, value in data.items():
            yield f"{path}{key}", str(key)
            yield from _strings(value, f"{path}{key}/")
    elif isinstance(data, list):
        for i, value in enumerate(data):
            yield from _strings(value, f"{path}{i}/")
    elif isinstance(data, str):
        yield path.rstrip("/"), data


def _erb_problems(config: Mapping[str, Any]) -> Iterator[RenderError]:
    # One C-speed search over the whole configuration first; the walk naming the key runs only on a hit.
    if "<%" not in json.dumps(config, ensure_ascii=False):
        return
    for where, text in _strings(config):
        if "<%" in text:
            yield checks.refuse(
                where,
                TARGET,
                "it contains '<%', which Kamal's ERB pass over deploy.yml would run",
                "remove it",
            )


def _emit_yaml(config: Mapping[str, Any], header: str) -> bytes:
    # What Kamal reads must be exactly this data. The text is written from serializer events whose every
    # scalar is an identifier left plain (read back as that string by YAML 1.1 and 1.2 readers), a
    # double-quoted string (which carries any text exactly), an integer, a boolean or null; anything
    # else is refused above. So it is not parsed back here: the tests read it back with PyYAML and Psych.
    try:
        text = dump(config)
    except yamltext.Unwritable as exc:
        raise RenderError(
            key=exc.where or "config", target=TARGET, reason=exc.reason, alternative="change the value"
        ) from None
    if "<%" in text:  # refused before (_erb_problems); an escape can never spell it
        raise RenderError(
            key="config",
            target=TARGET,
            reason="the YAML holds '<%', which Kamal's ERB pass would run",
            alternative="report this",
        )
    return (header + text).encode()


# --- the renderer -------------------------------------------------------------------------------------------

HEADER = "# Generated by strongroom compile --target kamal from strongroom.yml; edit that file instead.\n"


@dataclass(frozen=True)
class _Rendering:
    plan: KamalPlan
    base: dict[str, Any]
    full: dict[str, Any]
    destination: dict[str, Any]


class KamalRenderer:
    """Kamal 2 deploy files and `.kamal/secrets*` that fetch values through `strongroom kamal fetch`."""

    # Built with a KamalPlan by the compiler. Without one (the target registry's default) it renders the
    # entries alone: non-sensitive ones as clear values, sensitive ones as secrets, service from the
    # options, and a fetch line without `-p` (the CLI then takes the project from STRONGROOM_PROJECT).

    name = TARGET

    def __init__(self, plan: KamalPlan | None = None) -> None:
        self._plan = plan

    def find_problems(self, entries: Sequence[Entry], *, options: RenderOptions) -> list[RenderError]:
        """Every reason this target cannot carry these entries (empty when render would succeed)."""
        found: list[RenderError] = []
        self._prepare(entries, options, found)
        return found

    def render(self, entries: Sequence[Entry], *, options: RenderOptions) -> list[RenderedFile]:
        """Render deploy.yml, deploy.<env>.yml, .kamal/secrets-common and .kamal/secrets.<env>."""
        found: list[RenderError] = []
        prepared = self._prepare(entries, options, found)
        if found or prepared is None:
            raise found[0]
        environment = options.environment
        plan = prepared.plan
        secrets = sorted(plan.body.secret_names())
        destination_header = HEADER + f"# Kamal destination {environment}: kamal deploy -d {environment}\n"
        return [
            RenderedFile(
                "config/deploy.yml", _emit_yaml(prepared.base, HEADER), holds_values=False, mode=0o644
            ),
            RenderedFile(
                f"config/deploy.{environment}.yml",
                _emit_yaml(prepared.destination, destination_header),
                holds_values=False,
                mode=0o644,
            ),
            RenderedFile(".kamal/secrets-common", _secrets_common(), holds_values=False, mode=0o644),
            RenderedFile(
                f".kamal/secrets.{environment}",
                _secrets_file(plan.project, environment, secrets),
                holds_values=False,
                mode=0o644,
            ),
        ]

    def _prepare(
        self, entries: Sequence[Entry], options: RenderOptions, found: list[RenderError]
    ) -> _Rendering | None:
        try:
            checks.check_options(options, TARGET)
            if not _SLUG.fullmatch(options.environment):
                raise RenderError(
                    key="options/environment",
                    target=TARGET,
                    reason="must be an environment slug",
                    alternative="rename it",
                )
            plan = self._plan or _plan_from_entries(entries, options)
            if plan.project is not None and not _SLUG.fullmatch(plan.project):
                raise RenderError(
                    key="project", target=TARGET, reason="must be a project slug", alternative="rename it"
                )
            values = {e.name: e for e in checks.unique_sorted(entries, TARGET)}
        except RenderError as exc:
            found.append(exc)
            return None
        found += _secret_problems(plan.body, values)
        found += _sensitive_problems(plan)

        def resolved(scope: Scope, name: str) -> ClearValue | None:
            return plan.clear.get(scope, {}).get(name)

        def literal(scope: Scope, name: str) -> ClearValue | None:
            text = plan.base_clear.get(scope, {}).get(name)
            return None if text is None else ClearValue(text)

        full = _config(plan.body, resolved)
        base = _config(plan.base, literal) if plan.base is not None else {"service": plan.body.service}
        for config in (full, base):
            for problem in [*_clear_problems(config), *_erb_problems(config)]:
                if str(problem) not in {str(p) for p in found}:
                    found.append(problem)
        destination = destination_diff(base, full)
        if deep_merge(base, destination) != full:
            found.append(
                RenderError(
                    key=f"config/deploy.{options.environment}.yml",
                    target=TARGET,
                    reason="this environment removes a setting config/deploy.yml has, which a Kamal destination cannot",
                    alternative="move the setting into each environment's overrides",
                )
            )
        return _Rendering(plan, base, full, destination)


def _secret_problems(body: ManifestBody, values: Mapping[str, Entry]) -> Iterator[RenderError]:
    in_env: set[str] = set(body.env.secret)
    for section in [*body.env.tags.values(), *(r.env for r in body.roles.values())]:
        in_env.update(section.secret)
    for accessory in body.accessories.values():
        in_env.update(accessory.env.secret)
    built = set(body.builder.secrets) if body.builder is not None else set()
    login = {body.registry.password} if body.registry is not None else set()
    for name in body.secret_names():
        if not KAMAL_KEY.fullmatch(name) or name in RESERVED:
            yield checks.refuse(
                name,
                TARGET,
                "the name must be [A-Z_][A-Z0-9_]* (and not STRONGROOM_SECRETS, STRONGROOM_DOTENV or "
                "STRONGROOM_DOTENV_ORDER) in .kamal/secrets",
                "rename the secret",
            )
            continue
        entry = values.get(name)
        if entry is None:
            yield checks.refuse(name, TARGET, "no value was read for this secret", "store it in the broker")
            continue
        rules: list[Callable[[str], str | None]] = []
        if name in in_env:
            rules.append(functools.partial(env_file_problem, name=name))
        if name in login:
            rules.append(shell_problem)
        if name in built:
            rules.append(build_secret_problem)
        for rule in rules:
            reason = rule(entry.value)
            if reason:
                yield checks.refuse(entry, TARGET, reason, checks.FILE_MOUNT, targets=_CARRIERS)
                break


def _clear_problems(config: Mapping[str, Any]) -> Iterator[RenderError]:
    for where, section in _env_sections(config):
        for name, value in section.get("clear", {}).items():
            reason = shell_problem(value)
            if reason:
                yield checks.refuse(
                    f"{where}/clear/{name}",
                    TARGET,
                    reason,
                    checks.FILE_MOUNT,
                    targets=_CARRIERS,
                    tried=Entry(name, value, False),
                )
    for name, value in config.get("builder", {}).get("args", {}).items():
        reason = shell_problem(value)
        if reason:
            yield checks.refuse(f"builder/args/{name}", TARGET, reason, "change the build argument")
    username = config.get("registry", {}).get("username")
    reason = shell_problem(username) if username is not None else None
    if reason:
        yield checks.refuse("registry/username", TARGET, reason, "change the user name")


def _sensitive_problems(plan: KamalPlan) -> Iterator[RenderError]:
    for scope, names in plan.clear.items():
        for name, value in names.items():
            if value.sensitive:
                yield checks.refuse(
                    name,
                    TARGET,
                    "this clear value is built from a sensitive secret, and clear values are written into "
                    "config/deploy.yml",
                    f"list {name} under secret{'' if scope == ('global',) else ' in the same section'} "
                    "and store the complete value in the broker",
                )


def _env_sections(config: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    if "env" in config:
        yield "env", config["env"]
        for tag, section in config["env"].get("tags", {}).items():
            yield f"env/tags/{tag}", section
    for role, spec in config.get("servers", {}).items():
        if "env" in spec:
            yield f"roles/{role}/env", spec["env"]
    for name, spec in config.get("accessories", {}).items():
        if "env" in spec:
            yield f"accessories/{name}/env", spec["env"]


def _plan_from_entries(entries: Sequence[Entry], options: RenderOptions) -> KamalPlan:
    clear = {e.name: ClearValue(e.value) for e in entries if not e.sensitive}
    secret = sorted(e.name for e in entries if e.sensitive)
    for entry in entries:
        checks.posix_name(entry, TARGET)
    try:
        body = ManifestBody.model_validate(
            {"service": options.service, "env": {"clear": dict.fromkeys(clear, ""), "secret": secret}}
        )
    except ValueError:
        raise RenderError(
            key="options/service",
            target=TARGET,
            reason="must be a Kamal service name (lower-case letters, digits, '_' and '-')",
            alternative="rename it",
        ) from None
    return KamalPlan(project=None, body=body, clear={("global",): clear})


def _extract(name: str) -> str:
    return f"$(kamal secrets extract {name} ${{{HOLDER}}})"


def written_by_compile(name: str, value: str) -> bool:
    """Whether `name=value` in .kamal/secrets* is a line this renderer writes (a reserved name or an extract)."""
    return name in RESERVED or value.strip() == _extract(name)


def _secrets_common() -> bytes:
    return (
        b"# Generated by strongroom compile --target kamal.\n"
        b"# Every secret is fetched per environment in .kamal/secrets.<environment>; this file is kept\n"
        b"# empty on purpose so that no value is stored here.\n"
    )


def _secrets_file(project: str | None, environment: str, names: Sequence[str]) -> bytes:
    lines = [
        "# Generated by strongroom compile --target kamal from strongroom.yml; edit that file instead.",
        "# No value is stored here: each deploy fetches them from the Strongroom broker with the caller's",
        "# short-lived token (strongroom login, or STRONGROOM_TOKEN in CI).",
    ]
    if names:
        project_option = f"-p {project} " if project is not None else ""
        lines += [
            "# Which dotenv reads this file: 3.2 (Kamal 2.12's) expands the ${...} printf prints at once, 3.1",
            "# only on the fetch line, after the order is set to 3.1. The fetch escapes each $ for 3.2.",
            f"{_DOTENV_ORDER}=3.2",
            f"{DOTENV_PROBE}=$(printf '\\\\044{{{_DOTENV_ORDER}}}')",
            f"{_DOTENV_ORDER}=3.1",
            f"{HOLDER}=$(strongroom kamal fetch --dotenv ${{{DOTENV_PROBE}}} {project_option}-e {environment} "
            f"{' '.join(names)})",
        ]
        lines.extend(f"{name}={_extract(name)}" for name in names)
    return ("\n".join(lines) + "\n").encode()
