"""`strongroom.yml`: the models of a deployment manifest, which names secrets but never holds a value.

Every model forbids unknown keys, as Kamal's validator does, and every rule fails with a sentence that the
compiler prefixes with the path of the offending value (`roles/web/hosts/0: must be a host name or
address`). Scalars arrive as the text the user wrote (see broker.compiler.yamlsource); typed fields such as
ports and flags are converted here, clear values stay text.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    model_validator,
)

# --- problems ---------------------------------------------------------------------------------------

ManifestPath = tuple[str | int, ...]


@dataclass(frozen=True)
class Problem:
    """One thing wrong (or worth a warning) in a manifest, at a path such as roles/web/hosts/0."""

    path: ManifestPath
    message: str
    line: int | None = None
    level: Literal["error", "warning"] = "error"

    @property
    def where(self) -> str:
        """The path as `a/b/0`, or `strongroom.yml` for the whole document."""
        return "/".join(str(p) for p in self.path) or "strongroom.yml"

    def text(self) -> str:
        """`path: message (line N)`."""
        at = f" (line {self.line})" if self.line else ""
        return f"{self.where}: {self.message}{at}"


# --- scalar rules ------------------------------------------------------------------------------------

_VAR = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SLUG = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
_ROLE = re.compile(r"[a-z][a-z0-9_-]{0,62}")
_TAG = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}")
_SERVICE = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
_USER = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
_FINGERPRINT = re.compile(r"SHA256:[A-Za-z0-9+/]{43}=?")
_IMAGE = re.compile(
    r"(?:[a-z0-9.-]+(?::[0-9]{1,5})?/)?"  # registry host
    r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"  # repository
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[0-9a-f]{64})?"
)
_OPTION = re.compile(r"[a-z][a-z0-9-]{0,63}")
_REGISTRY = re.compile(r"[A-Za-z0-9.-]+(?::[0-9]{1,5})?(?:/[A-Za-z0-9._-]+)*")
VAR_MAX_BYTES = 256
PLACEHOLDER_DOMAIN = "invalid"
CLEAR_MAX_BYTES = 64 * 1024
TEXT_MAX = 4096


def _printable(value: str, what: str) -> str:
    if not value or len(value) > TEXT_MAX or not value.isprintable():
        raise ValueError(
            f"must be {what}: non-empty printable text on one line, at most {TEXT_MAX} characters"
        )
    return value


def check_var(value: str) -> str:
    """A variable name as the broker stores it: [A-Za-z_][A-Za-z0-9_]*, at most 256 bytes."""
    if not _VAR.fullmatch(value) or len(value.encode()) > VAR_MAX_BYTES:
        raise ValueError("must be a variable name: [A-Za-z_][A-Za-z0-9_]*, at most 256 bytes")
    return value


def check_slug(value: str) -> str:
    """A project or environment slug."""
    if not _SLUG.fullmatch(value):
        raise ValueError(
            "must be lower-case letters, digits and '-', starting with a letter or digit, at most 64"
        )
    return value


def check_host(value: str) -> str:
    """A host name (RFC 1123) or an IPv4/IPv6 address, without a port or user."""
    try:
        ipaddress.ip_address(value)
        return value
    except ValueError:
        pass
    labels = value.split(".")
    if len(value) > 253 or not all(_LABEL.fullmatch(label) for label in labels) or labels[-1].isdigit():
        raise ValueError("must be a host name or address")
    if labels[-1].lower() == PLACEHOLDER_DOMAIN:
        # RFC 6761: .invalid never resolves. `strongroom import` writes such names where ERB hid a host.
        raise ValueError(
            "is a placeholder (.invalid never resolves; strongroom import writes one where deploy.yml "
            "computed the host with ERB): write the real host name or address"
        )
    return value


def _pattern(regex: re.Pattern[str], rule: str) -> AfterValidator:
    def check(value: str) -> str:
        if not regex.fullmatch(value):
            raise ValueError(rule)
        return value

    return AfterValidator(check)


def _volume(value: str) -> str:
    _printable(value, "a volume")
    parts = value.split(":")
    if len(parts) not in (2, 3) or not all(parts[:2]) or not parts[1].startswith("/") or " " in value:
        raise ValueError("must be a volume: host-path-or-name:/container/path[:options]")
    return value


def _path(value: str) -> str:
    if not value.startswith("/") or not value.isprintable() or " " in value or len(value) > TEXT_MAX:
        raise ValueError("must be an absolute URL path such as /up")
    return value


def _unique(items: list[str]) -> list[str]:
    seen: set[str] = set()
    for item in items:
        if item in seen:
            raise ValueError(f"lists {item} twice")
        seen.add(item)
    return items


Var = Annotated[str, AfterValidator(check_var)]
Slug = Annotated[str, AfterValidator(check_slug)]
Host = Annotated[str, AfterValidator(check_host)]
RoleName = Annotated[
    str,
    _pattern(_ROLE, "must be a role name: lower-case letters, digits, '_' and '-', starting with a letter"),
]
TagName = Annotated[str, _pattern(_TAG, "must be a tag: letters, digits, '_' and '-', at most 63")]
ServiceName = Annotated[
    str, _pattern(_SERVICE, "must be a service name: lower-case letters, digits, '_' and '-', at most 63")
]
Image = Annotated[
    str, _pattern(_IMAGE, "must be an image reference such as ghcr.io/acme/app or acme/app:1.2")
]
Text = Annotated[str, AfterValidator(lambda v: _printable(v, "text"))]
Volume = Annotated[str, AfterValidator(_volume)]
UrlPath = Annotated[str, AfterValidator(_path)]
Port = Annotated[int, Field(ge=1, le=65535)]
Seconds = Annotated[int, Field(ge=1, le=3600)]


def _whole(value: float) -> float:
    # A whole number stays an int, so `interval: 1` renders as 1, not 1.0 (Kamal's validator wants an integer).
    return int(value) if float(value).is_integer() else value


# A health probe interval: whole seconds, or a fraction of one (from 0.1 s) for `strongroom deploy`.
Interval = Annotated[float, Field(ge=0.1, le=3600), AfterValidator(_whole)]
Fingerprint = Annotated[
    str,
    _pattern(_FINGERPRINT, "must be an SSH host key fingerprint as ssh-keygen -lf prints it (SHA256:...)"),
]
OptionName = Annotated[str, _pattern(_OPTION, "must be a docker option name such as memory or cpus")]
RegistryServer = Annotated[
    str, _pattern(_REGISTRY, "must be a registry host such as ghcr.io or registry.example.com:5000")
]
UserName = Annotated[str, _pattern(_USER, "must be a Unix user name")]
SecretNames = Annotated[list[Var], AfterValidator(_unique)]
ClearValue = Annotated[str, Field(max_length=CLEAR_MAX_BYTES)]


class Model(BaseModel):
    """Base of manifest models: unknown keys are errors and instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


# --- sections ----------------------------------------------------------------------------------------


class EnvSection(Model):
    """Variables for containers: clear values (may reference broker variables) and secret names."""

    clear: dict[Var, ClearValue] = Field(default_factory=dict)
    secret: SecretNames = Field(default_factory=list)

    @model_validator(mode="after")
    def _disjoint(self) -> EnvSection:
        both = sorted(set(self.clear) & set(self.secret))
        if both:
            raise ValueError(f"{', '.join(both)} is both clear and secret; keep one")
        return self


class GlobalEnv(EnvSection):
    """The app's variables, with extra variables for hosts carrying a tag."""

    tags: dict[TagName, EnvSection] = Field(default_factory=dict)


def _host_entry(value: Any) -> Any:
    # A bare string is a host without tags; Kamal's `- host: [tag]` shorthand is accepted as well.
    if isinstance(value, str):
        return {"host": value}
    if isinstance(value, dict) and len(value) == 1 and "host" not in value:
        ((host, tags),) = value.items()
        return {"host": host, "tags": tags if isinstance(tags, list) else [tags]}
    return value


class HostEntry(Model):
    """A server and the tags that select extra variables for it."""

    host: Host
    tags: list[TagName] = Field(default_factory=list)


class Role(Model):
    """A group of servers running the same container command."""

    hosts: list[Annotated[HostEntry, BeforeValidator(_host_entry)]] = Field(min_length=1)
    cmd: Text | None = None
    env: EnvSection = Field(default_factory=EnvSection)
    proxy: bool | None = None
    options: dict[OptionName, Text] = Field(default_factory=dict)


class Certificate(Model):
    """kamal-proxy's TLS from a certificate of your own instead of Let's Encrypt: two secret NAMES, PEM values."""

    certificate_pem: Var
    private_key_pem: Var

    @model_validator(mode="after")
    def _two_secrets(self) -> Certificate:
        if self.certificate_pem == self.private_key_pem:
            raise ValueError("certificate_pem and private_key_pem must name two different secrets")
        return self


_FLAG: TypeAdapter[bool] = TypeAdapter(bool)


def _ssl(value: Any) -> Any:
    # `ssl: true|false` (Let's Encrypt or none) or, as in Kamal, a mapping naming the certificate's secrets.
    # Deciding here keeps a mistake reported at proxy/ssl or proxy/ssl/<key>, not once per union member.
    if isinstance(value, dict):
        return Certificate.model_validate(value)
    try:
        return _FLAG.validate_python(value)
    except ValidationError:
        raise ValueError(
            "must be true, false, or certificate_pem and private_key_pem (the names of two secrets)"
        ) from None


class Proxy(Model):
    """kamal-proxy in front of the primary role: public host name, TLS, the port the app listens on."""

    host: Host | None = None
    ssl: Annotated[bool | Certificate, BeforeValidator(_ssl)] = False
    app_port: Port | None = None
    response_timeout: Seconds | None = None

    @model_validator(mode="after")
    def _ssl_needs_host(self) -> Proxy:
        if self.ssl is not False and self.host is None:
            raise ValueError("ssl needs a host (the name the certificate is issued for)")
        return self

    @property
    def certificate(self) -> Certificate | None:
        """The custom certificate's secret names, when ssl names them."""
        return self.ssl if isinstance(self.ssl, Certificate) else None


class Healthcheck(Model):
    """How to tell that a new container is ready before it takes traffic."""

    path: UrlPath = "/up"
    interval: Interval = 1
    timeout: Seconds = 5
    # For `strongroom deploy` only (kamal-proxy checks path on the proxy's app_port): left out of dumps so
    # the Kamal target is unchanged.
    port: Port | None = Field(default=None, exclude=True)
    cmd: Text | None = Field(default=None, exclude=True)


class DeploySettings(Model):
    """How `strongroom deploy` treats old images and containers on each host."""

    retain_images: int = Field(default=5, ge=1, le=100)
    stop_timeout: Seconds = 10
    # Kamal's readiness_delay: without a health check, a new container must stay up this long to count.
    readiness_delay: int = Field(default=7, ge=0, le=600)


class Registry(Model):
    """Where images are pushed; the password is the name of a secret, never a value."""

    server: RegistryServer | None = None
    username: Text
    password: Var


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


class Builder(Model):
    """Image builds: build secrets by name (never in a layer), plain build arguments (no secrets)."""

    # No default: Kamal refuses a configuration without it, and guessing amd64 would build for the wrong
    # machines on arm64 hosts. The kamal target refuses its absence (broker.renderers.kamal).
    arch: (
        Annotated[list[Literal["amd64", "arm64"]], BeforeValidator(_as_list), Field(min_length=1)] | None
    ) = None
    secrets: SecretNames = Field(default_factory=list)
    args: dict[Var, Text] = Field(default_factory=dict)
    dockerfile: Text | None = None
    context: Text | None = None
    target: Text | None = None


class Accessory(Model):
    """A supporting container (database, cache) on named hosts or on the hosts of some roles."""

    image: Image
    host: Host | None = None
    hosts: list[Host] | None = None
    roles: list[RoleName] | None = None
    port: Text | None = None
    cmd: Text | None = None
    env: EnvSection = Field(default_factory=EnvSection)
    volumes: list[Volume] = Field(default_factory=list)
    directories: list[Volume] = Field(default_factory=list)
    options: dict[OptionName, Text] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_placement(self) -> Accessory:
        given = [k for k in ("host", "hosts", "roles") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("needs exactly one of host, hosts or roles")
        return self


class Ssh(Model):
    """How to reach the servers, and the host keys to accept (anything else is refused)."""

    user: UserName = "root"
    port: Port = 22
    host_keys: dict[Host, Annotated[list[Fingerprint], Field(min_length=1)]] = Field(default_factory=dict)


class Lint(Model):
    """What to do when a clear value looks like a secret, and the names already reviewed as not secret."""

    secret_like: Literal["fail", "warn"] = "fail"  # noqa: S105 (a lint mode, not a password)
    allow: SecretNames = Field(default_factory=list)


class ManifestBody(Model):
    """Everything an environment can set or override."""

    service: ServiceName
    image: Image | None = None
    registry: Registry | None = None
    roles: dict[RoleName, Role] = Field(default_factory=dict)
    proxy: Proxy | None = None
    healthcheck: Healthcheck | None = None
    volumes: list[Volume] = Field(default_factory=list)
    builder: Builder | None = None
    env: GlobalEnv = Field(default_factory=GlobalEnv)
    accessories: dict[
        Annotated[str, _pattern(_ROLE, "must be an accessory name like db or redis")], Accessory
    ] = Field(default_factory=dict)
    ssh: Ssh = Field(default_factory=Ssh)
    lint: Lint = Field(default_factory=Lint)
    deploy: DeploySettings = Field(default_factory=DeploySettings)

    def secret_names(self) -> list[str]:
        """Every secret name the manifest uses, sorted: env (global, role, tag, accessory), build, registry, TLS."""
        names: set[str] = set(self.env.secret)
        for tagged in self.env.tags.values():
            names.update(tagged.secret)
        for role in self.roles.values():
            names.update(role.env.secret)
        for accessory in self.accessories.values():
            names.update(accessory.env.secret)
        if self.builder is not None:
            names.update(self.builder.secrets)
        if self.registry is not None:
            names.add(self.registry.password)
        if self.proxy is not None and self.proxy.certificate is not None:
            names.update((self.proxy.certificate.certificate_pem, self.proxy.certificate.private_key_pem))
        return sorted(names)


OVERRIDABLE = frozenset(ManifestBody.model_fields)


class ManifestDocument(Model):
    """The top level of `strongroom.yml`: the body, the project it belongs to and per-environment overrides."""

    project: Slug | None = None
    environments: dict[Slug, dict[str, Any]] = Field(default_factory=dict)


@dataclass(frozen=True)
class Manifest:
    """A validated manifest: the base body and, for each environment with overrides, its merged body."""

    project: str | None
    base: ManifestBody
    environments: Mapping[str, ManifestBody] = field(default_factory=dict)

    def for_environment(self, environment: str) -> ManifestBody:
        """The body as `environment` sees it (the base when it has no overrides)."""
        return self.environments.get(environment, self.base)


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """ActiveSupport's Hash#deep_merge, as Kamal lays a destination over deploy.yml (and a manifest's
    destination override over its body): nested mappings merge, any other value is replaced."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out
