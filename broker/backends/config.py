"""The backends file (STRONGROOM_BACKENDS_FILE, JSON or YAML): upstreams and what maps to them.

Only this file names upstream addresses, mounts, prefixes and credentials; nothing a client sends can
change them. Every model forbids unknown keys, and an error names the path of the bad key.
The format, with an example, is in docs/backends.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from broker.backends import guard
from broker.documents import parse_object, refusal
from broker.domain.names import check_name, check_slug
from broker.errors import Invalid

FORMAT = "strongroom-backends/1"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _path(value: str, *, allow_empty: bool = False) -> str:
    try:
        return guard.check_segments(value.strip("/"), field="path", allow_empty=allow_empty)
    except Invalid as exc:
        raise ValueError(exc.message.removeprefix("path: ")) from None


def _allow_networks(value: list[str]) -> list[str]:
    try:
        guard.networks(value, field="allow_networks")
    except Invalid as exc:
        raise ValueError(exc.message.removeprefix("allow_networks: ")) from None
    return value


# Private or loopback networks an upstream (a backend, an OIDC issuer's key set) may resolve to.
AllowNetworks = Annotated[list[str], Field(max_length=100), AfterValidator(_allow_networks)]


def _aws_region(value: str) -> str:
    if guard.REGION.fullmatch(value) is None:
        raise ValueError("must be an AWS region name such as eu-west-1")
    return value


# An AWS region's name (it becomes part of the endpoint's host name, so nothing else gets through).
AwsRegion = Annotated[str, AfterValidator(_aws_region)]


def _file_or_inline(inline: str | None, file: Path | None, what: str) -> None:
    if (inline is None) == (file is None):
        raise ValueError(f"give exactly one of {what} and {what}_file")


class VaultTokenAuth(_Model):
    """A Vault token, inline or (better) in a 0600 file."""

    method: Literal["token"]
    token: str | None = Field(default=None, repr=False)
    token_file: Path | None = None

    @model_validator(mode="after")
    def _one(self) -> VaultTokenAuth:
        _file_or_inline(self.token, self.token_file, "token")
        return self


class VaultAppRoleAuth(_Model):
    """AppRole login; the broker logs in again when its token expires."""

    method: Literal["approle"]
    role_id: str = Field(min_length=1, max_length=256)
    secret_id: str | None = Field(default=None, repr=False)
    secret_id_file: Path | None = None
    mount: str = "approle"

    @model_validator(mode="after")
    def _one(self) -> VaultAppRoleAuth:
        _file_or_inline(self.secret_id, self.secret_id_file, "secret_id")
        _path(self.mount)
        return self


class _Upstream(_Model):
    timeout: float = Field(default=5.0, gt=0, le=120, description="seconds per upstream call")
    allow_networks: AllowNetworks = Field(default_factory=list)
    max_workers: int = Field(default=8, ge=1, le=256, description="worker threads for blocking SDK calls")
    import_into: list[str] = Field(
        default_factory=list,
        max_length=1000,
        description="projects whose admins may import from this upstream",
    )


class VaultUpstream(_Upstream):
    """HashiCorp Vault (or OpenBao) KV version 2: one KV secret per Strongroom secret."""

    type: Literal["vault"]
    address: str = Field(max_length=512)
    mount: str = "secret"
    prefix: str = Field(default="", max_length=512)
    field: str = Field(default="value", min_length=1, max_length=256)
    namespace: str | None = Field(default=None, max_length=256)
    auth: Annotated[VaultTokenAuth | VaultAppRoleAuth, Field(discriminator="method")]
    ca_file: Path | None = None

    @field_validator("mount")
    @classmethod
    def _mount(cls, value: str) -> str:
        return _path(value)

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        return _path(value, allow_empty=True)


class AwsStaticCredentials(_Model):
    """An access key pair (the secret key inline or in a 0600 file)."""

    access_key_id: str = Field(min_length=1, max_length=128)
    secret_access_key: str | None = Field(default=None, repr=False)
    secret_access_key_file: Path | None = None
    session_token: str | None = Field(default=None, repr=False)

    @model_validator(mode="after")
    def _one(self) -> AwsStaticCredentials:
        _file_or_inline(self.secret_access_key, self.secret_access_key_file, "secret_access_key")
        return self


class AwsUpstream(_Upstream):
    """AWS Secrets Manager: one secret per key (`per-key`) or one JSON secret holding many keys (`json`)."""

    type: Literal["aws-sm"]
    region: AwsRegion
    endpoint_url: str | None = Field(default=None, max_length=512)
    partition: str = "aws"
    account_id: str | None = Field(default=None, description="12 digits; ARNs of other accounts are refused")
    prefix: str = Field(default="", max_length=512)
    layout: Literal["per-key", "json"] = "per-key"
    profile: str | None = Field(default=None, max_length=128)
    role_arn: str | None = Field(default=None, max_length=2048)
    credentials: AwsStaticCredentials | None = None
    max_attempts: int = Field(default=2, ge=1, le=10)
    recovery_window_days: int = Field(default=7, ge=7, le=30)

    @field_validator("account_id")
    @classmethod
    def _account(cls, value: str | None) -> str | None:
        if value is not None and guard.ACCOUNT.fullmatch(value) is None:
            raise ValueError("must be 12 digits")
        return value

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        return _path(value, allow_empty=True)

    @model_validator(mode="after")
    def _creds(self) -> AwsUpstream:
        if sum(x is not None for x in (self.profile, self.credentials)) > 1:
            raise ValueError("give at most one of profile and credentials")
        return self


Upstream = Annotated[VaultUpstream | AwsUpstream, Field(discriminator="type")]


class Mapping(_Model):
    """An environment (no `name`) or a single secret of an environment, backed by an upstream."""

    project: str
    environment: str
    name: str | None = None
    backend: str
    path: str = Field(
        default="",
        description="relative to the backend's prefix: the directory of an environment's secrets, "
        "or a single secret's path (for the json layout: the JSON secret, the key being `key` or the name)",
    )
    key: str | None = Field(
        default=None, description="json layout, single secret: the key in the JSON secret"
    )

    @field_validator("path")
    @classmethod
    def _rel(cls, value: str) -> str:
        return _path(value, allow_empty=True)

    @model_validator(mode="after")
    def _names(self) -> Mapping:
        try:
            check_slug(self.project, field="project")
            check_slug(self.environment, field="environment")
            if self.name is not None:
                check_name(self.name, field="name")
            if self.key is not None:
                check_name(self.key, field="key")
        except Invalid as exc:
            raise ValueError(exc.message) from None
        if self.name is not None and not self.path:
            raise ValueError("path: a single-secret mapping needs the secret's path")
        if self.key is not None and self.name is None:
            raise ValueError("key: only for a single-secret mapping (with name)")
        return self


class BackendsFile(_Model):
    """The whole file."""

    format: Literal["strongroom-backends/1"]
    cache_ttl: float = Field(
        default=0.0, ge=0, le=3600, description="seconds a read may be served from memory"
    )
    backends: dict[str, Upstream] = Field(default_factory=dict)
    mappings: list[Mapping] = Field(default_factory=list, max_length=10_000)

    @model_validator(mode="after")
    def _refs(self) -> BackendsFile:
        for name in self.backends:
            if guard.SEGMENT.fullmatch(name) is None or name == "database":
                raise ValueError(
                    f"backends.{name}: a backend name is letters, digits and _.@+=- (not 'database')"
                )
        seen: set[tuple[str, str, str | None]] = set()
        for i, m in enumerate(self.mappings):
            if m.backend not in self.backends:
                raise ValueError(f"mappings.{i}.backend: no backend named {m.backend!r}")
            ident = (m.project, m.environment, m.name)
            if ident in seen:
                raise ValueError(f"mappings.{i}: {m.project}/{m.environment}/{m.name or '*'} is mapped twice")
            seen.add(ident)
            upstream = self.backends[m.backend]
            if (
                isinstance(upstream, AwsUpstream)
                and upstream.layout == "json"
                and m.name is None
                and not m.path
            ):
                raise ValueError(f"mappings.{i}.path: the json layout needs the JSON secret's path")
        return self


def parse(text: str, *, source: str) -> BackendsFile:
    """Parse the file's text (JSON, or YAML when it is not JSON); errors name the file and the key path."""
    doc = parse_object(text, source=source, field="backends_file", shape="format, backends and mappings")
    try:
        return BackendsFile.model_validate(doc)
    except ValidationError as exc:
        tags = ("vault", "aws-sm", "token", "approle")
        raise refusal(exc, source=source, field="backends_file", tags=tags) from None


def load(path: Path) -> BackendsFile:
    """Read and parse the backends file; it may hold credentials, so it must not be readable by others."""
    try:
        mode = path.stat().st_mode & 0o777
        text = path.read_text()
    except OSError:
        raise Invalid(f"backends file {path} cannot be read", field="backends_file") from None
    if mode & 0o077:
        raise Invalid(
            f"backends file {path} is readable by others (mode {mode:o}); chmod 600 it", field="backends_file"
        )
    return parse(text, source=str(path))


def read_secret_file(path: Path | None, *, what: str) -> str:
    """A credential from a file (stripped of one trailing newline)."""
    if path is None:
        raise Invalid(f"{what}: no file given", field=what)
    try:
        return path.read_text().rstrip("\n")
    except OSError:
        raise Invalid(f"{what}: {path} cannot be read", field=what) from None
