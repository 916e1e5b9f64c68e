"""Request and response bodies; requests forbid unknown keys."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer


def _absent(value: object) -> bool:
    """Optional provenance fields are left out of the JSON when they do not apply."""
    return value is None


# Where a proxied value comes from; absent from the body for a value the database holds.
Backend = Annotated[
    str | None,
    Field(exclude_if=_absent, description="proxied values only: the backend's name (absent: database)"),
]
UpstreamPath = Annotated[
    str | None, Field(exclude_if=_absent, description="proxied values only: the upstream path or secret id")
]
UpstreamVersion = Annotated[
    str | None, Field(exclude_if=_absent, description="proxied values only: the upstream version")
]


class Request(BaseModel):
    """Base of request bodies: unknown keys are errors, and JSON types are not coerced ("1" is not 1)."""

    model_config = ConfigDict(extra="forbid", strict=True)


class ScopeBody(Request):
    """A grant of actions on a project and the environments matching a glob."""

    project: str = Field(max_length=64, examples=["microblog"])
    environments: str = Field(default="*", max_length=64, examples=["production"])
    actions: list[Literal["read", "write", "admin", "audit"]] = Field(min_length=1, max_length=4)
    deny: bool = Field(default=False, description="A refusal: it wins over every grant that matches")
    keys: list[str] | None = Field(
        default=None,
        max_length=1000,
        description="Only these secret names (absent: every key); never grants an environment-wide call",
    )

    @model_serializer(mode="wrap")
    def _drop_absent_keys(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        out: dict[str, Any] = handler(self)
        if out.get("keys") is None:
            out.pop("keys", None)
        return out


class TokenRequest(Request):
    """Exchange a client credential for a token."""

    client_id: str = Field(min_length=1, max_length=128)
    client_secret: str = Field(min_length=1, max_length=1024)
    ttl: int | None = Field(default=None, ge=1, le=2678400)


class OidcLoginRequest(Request):
    """Exchange a CI platform's OIDC token for a token with a role's scopes."""

    role: str = Field(min_length=1, max_length=64, examples=["deploy-production"])
    jwt: str = Field(min_length=1, max_length=16384)


class RenewRequest(Request):
    """Renew the caller's token."""

    ttl: int | None = Field(default=None, ge=1, le=2678400)


class ChildTokenRequest(Request):
    """Create a child token."""

    scopes: list[ScopeBody] | None = Field(default=None, max_length=100)
    ttl: int | None = Field(default=None, ge=1, le=2678400)
    num_uses: int | None = Field(default=None, ge=1, le=1_000_000)
    bound_cidrs: list[str] | None = Field(default=None, max_length=100)


class AccessorRequest(Request):
    """Name a token by its accessor."""

    accessor: str = Field(min_length=1, max_length=128)


class PrincipalOut(BaseModel):
    """Who a token belongs to."""

    id: str
    type: str
    name: str


class TokenInfoOut(BaseModel):
    """A token's metadata (never the token)."""

    accessor: str
    expires_in: int
    expires_at: datetime
    max_expires_at: datetime
    num_uses: int | None
    uses_remaining: int | None
    bound_cidrs: list[str]
    scopes: list[ScopeBody]
    principal: PrincipalOut


class TokenOut(TokenInfoOut):
    """A new token, shown once."""

    token: str


class TokenListItem(TokenInfoOut):
    """A token as admins list it: metadata, never the token string."""

    created_at: datetime
    revoked: bool


class TokenList(BaseModel):
    """Tokens, newest first."""

    tokens: list[TokenListItem]


class IdentityRequest(Request):
    """Create a user or machine identity."""

    name: str = Field(min_length=1, max_length=128)
    type: Literal["machine", "user"] = "machine"
    scopes: list[ScopeBody] = Field(default_factory=list, max_length=100)
    token_ttl: int | None = Field(default=None, ge=1, le=2678400)
    token_max_ttl: int | None = Field(default=None, ge=1, le=2678400)
    bound_cidrs: list[str] = Field(default_factory=list, max_length=100)
    client_id: str | None = Field(default=None, min_length=1, max_length=128, examples=["ci-deployer"])


class IdentityOut(BaseModel):
    """An identity as admins see it."""

    id: str
    name: str
    type: str
    client_id: str
    scopes: list[ScopeBody]
    token_ttl: int
    token_max_ttl: int
    bound_cidrs: list[str]
    created_at: datetime
    disabled: bool
    deleted: bool = False
    previous_secret_expires_at: datetime | None = None


class NewIdentityOut(IdentityOut):
    """A new identity with its client secret, shown once."""

    client_secret: str


class IdentityList(BaseModel):
    """Identities."""

    identities: list[IdentityOut]


class RotateSecretRequest(Request):
    """Replace an identity's client secret; the old one is accepted for `grace` seconds (default none)."""

    grace: int | None = Field(default=None, ge=0, le=2678400)


class RotatedSecretOut(BaseModel):
    """A new client secret, shown once."""

    client_id: str
    client_secret: str
    previous_secret_valid_until: datetime | None


class ProjectCreate(Request):
    """Create a project."""

    slug: str = Field(min_length=1, max_length=64, examples=["microblog"])
    description: str = Field(default="", max_length=1000)


class ProjectUpdate(Request):
    """Change a project."""

    description: str = Field(max_length=1000)


class ProjectOut(BaseModel):
    """A project."""

    slug: str
    description: str
    created_at: datetime


class ProjectList(BaseModel):
    """Projects."""

    projects: list[ProjectOut]


class EnvironmentCreate(Request):
    """Create an environment."""

    slug: str = Field(min_length=1, max_length=64, examples=["production"])
    parent: str | None = Field(default=None, max_length=64)


class EnvironmentUpdate(Request):
    """Change what an environment inherits from."""

    parent: str | None = Field(max_length=64)


class EnvironmentOut(BaseModel):
    """An environment."""

    slug: str
    parent: str | None
    created_at: datetime


class EnvironmentList(BaseModel):
    """Environments."""

    environments: list[EnvironmentOut]


class SecretWrite(Request):
    """Write a new version of a secret."""

    value: str = Field(max_length=65536, description="UTF-8 text, at most 64 KiB")
    sensitive: bool = True
    cas: int | None = Field(
        default=None, ge=0, description="0: create only; N: only if the current version is N"
    )


class RollbackRequest(Request):
    """Roll back to a version."""

    version: int = Field(ge=1, le=2**31 - 1)


class GenerateRequest(Request):
    """Have the broker generate and store a random value (left alone if the secret exists, unless rotate)."""

    bytes: int = Field(default=64, ge=16, le=1024, description="Random bytes (8 bits each) of the value")
    format: Literal["hex", "base64", "alnum"] = "hex"
    rotate: bool = Field(default=False, description="Replace an existing value with a new version")


class SecretMetaOut(BaseModel):
    """A secret's metadata."""

    name: str
    version: int
    sensitive: bool
    deleted: bool
    created_at: datetime
    updated_at: datetime
    backend: Backend = None
    upstream_path: UpstreamPath = None
    upstream_version: UpstreamVersion = None


class GenerateOut(BaseModel):
    """What `generate` did; never the value."""

    generated: bool
    rotated: bool
    secret: SecretMetaOut


class SecretList(BaseModel):
    """Secrets of an environment (never values)."""

    secrets: list[SecretMetaOut]


class SecretValueOut(BaseModel):
    """One value."""

    name: str
    value: str
    version: int
    sensitive: bool
    environment: str
    created_at: datetime
    backend: Backend = None
    upstream_path: UpstreamPath = None
    upstream_version: UpstreamVersion = None


class VersionOut(BaseModel):
    """One version's metadata."""

    version: int
    created_at: datetime
    author: str | None
    deleted: bool
    destroyed: bool
    upstream_version: str | None = Field(default=None, exclude_if=_absent, description="proxied secrets only")


class HistoryOut(BaseModel):
    """A secret's versions, newest first."""

    name: str
    current_version: int
    versions: list[VersionOut]


class ResolvedValueOut(BaseModel):
    """A resolved value and where it came from."""

    value: str
    version: int
    environment: str
    sensitive: bool
    backend: Backend = None
    upstream_path: UpstreamPath = None
    upstream_version: UpstreamVersion = None


class ResolvedOut(BaseModel):
    """An environment's values with inheritance applied."""

    project: str
    environment: str
    values: dict[str, ResolvedValueOut]


class Health(BaseModel):
    """Liveness."""

    status: str
