"""The OIDC file (STRONGROOM_OIDC_FILE, JSON or YAML, 0600): trusted issuers and the roles their tokens log in as.

Only this file names issuers, key set URLs and what a role grants; nothing a client sends changes them.
Every model forbids unknown keys, and an error names the path of the bad key. The format is in
docs/oidc.md.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from broker.backends.config import AllowNetworks
from broker.documents import parse_object, refusal
from broker.domain.oidc import ASYMMETRIC, MAX_LEEWAY
from broker.domain.scopes import scopes_from_json
from broker.errors import Invalid
from broker.files import loose_mode

FORMAT = "strongroom-oidc/1"
_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")
# issuer URL, key set URL, and the claims of which a role must bind at least one: without one, any
# repository (or project) on the platform could log in as the role.
PRESETS: dict[str, tuple[str, str, frozenset[str]]] = {
    "github": (
        "https://token.actions.githubusercontent.com",
        "https://token.actions.githubusercontent.com/.well-known/jwks",
        frozenset({"repository", "repository_id", "repository_owner", "repository_owner_id", "sub"}),
    ),
    "gitlab": (
        "https://gitlab.com",
        "https://gitlab.com/oauth/discovery/keys",
        frozenset({"project_path", "project_id", "namespace_path", "namespace_id", "sub"}),
    ),
}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Issuer(_Model):
    """A trusted issuer: a preset (github, gitlab) or any issuer by URL, and the audience it must name."""

    preset: Literal["github", "gitlab"] | None = None
    issuer: str | None = Field(
        default=None, max_length=512, description="the exact `iss` (default: the preset's)"
    )
    jwks_url: str | None = Field(default=None, max_length=1024, description="default: the preset's")
    audience: str = Field(min_length=1, max_length=512)
    algorithms: list[str] = Field(default_factory=lambda: ["RS256", "ES256"], min_length=1, max_length=10)
    leeway: int = Field(default=60, ge=0, le=MAX_LEEWAY, description="seconds of clock skew allowed")
    allow_networks: AllowNetworks = Field(default_factory=list)
    timeout: float = Field(default=5.0, gt=0, le=60)

    @field_validator("algorithms")
    @classmethod
    def _algorithms(cls, value: list[str]) -> list[str]:
        return _asymmetric(value)

    @model_validator(mode="after")
    def _urls(self) -> Issuer:
        if self.preset is None and (self.issuer is None or self.jwks_url is None):
            raise ValueError("give a preset (github, gitlab) or both issuer and jwks_url")
        for name in ("issuer", "jwks_url"):
            url = getattr(self, name)
            if url is not None and not url.startswith(("https://", "http://")):
                raise ValueError(f"{name} must be an https:// URL")
        return self

    @property
    def issuer_url(self) -> str:
        """The exact `iss` tokens must carry."""
        return self.issuer or PRESETS[self.preset or ""][0]

    @property
    def keys_url(self) -> str:
        """Where the key set is fetched from (this URL only)."""
        if self.jwks_url is not None:
            return self.jwks_url
        if self.preset == "gitlab" and self.issuer is not None:
            # A self-managed GitLab serves its keys at the same place under its own URL.
            return self.issuer.rstrip("/") + "/oauth/discovery/keys"
        return PRESETS[self.preset or ""][1]


class _Binding(_Model):
    """Claims that must match, and the scopes and TTL of the token a match gets."""

    bound_claims: dict[str, str | list[str]] = Field(min_length=1, max_length=50)
    bound_claims_type: Literal["exact", "glob"] = "exact"
    scopes: list[dict[str, object]] = Field(min_length=1, max_length=100)
    ttl: int = Field(default=900, ge=60, le=3600, description="seconds")

    @field_validator("scopes")
    @classmethod
    def _scopes(cls, value: list[dict[str, object]]) -> list[dict[str, object]]:
        try:
            scopes_from_json(value)
        except Invalid as exc:
            raise ValueError(exc.message) from None
        return value

    @field_validator("bound_claims")
    @classmethod
    def _values(cls, value: dict[str, str | list[str]]) -> dict[str, str | list[str]]:
        if any(not v for v in value.values()):
            raise ValueError("every claim needs at least one value")
        return value

    def patterns(self) -> dict[str, list[str]]:
        """Each bound claim with its allowed values."""
        return {k: [v] if isinstance(v, str) else list(v) for k, v in self.bound_claims.items()}


class Role(_Binding):
    """What a token whose claims match logs in as: scopes and a TTL."""

    issuer: str = Field(description="the name of an issuer in this file")


class ConsoleRole(_Binding):
    """What a person signing in to the console gets when the ID token's claims match (first match wins)."""

    name: str = Field(min_length=1, max_length=32)
    ttl: int = Field(default=1800, ge=60, le=3600, description="seconds (the console caps a session at 1800)")


CALLBACK_PATH = "/console/sso/callback"


def _loopback_host(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class Console(_Model):
    """Browser sign-in to the console with an OpenID provider (authorization code flow with PKCE)."""

    name: str = Field(description="short name: the audit names a person oidc:<name>:<sub>")
    label: str = Field(min_length=1, max_length=64, description='the button says "Sign in with <label>"')
    issuer: str = Field(max_length=512, description="the exact `iss`; discovery at <issuer>/.well-known/...")
    client_id: str = Field(min_length=1, max_length=256)
    client_secret_file: Path = Field(description="a 0600 file holding the client secret")
    redirect_url: str = Field(max_length=1024, description="exactly as registered at the provider")
    scopes: list[str] = Field(default_factory=lambda: ["openid", "email", "profile"], max_length=20)
    algorithms: list[str] = Field(default_factory=lambda: ["RS256", "ES256"], min_length=1, max_length=10)
    leeway: int = Field(default=60, ge=0, le=MAX_LEEWAY, description="seconds of clock skew allowed")
    allow_networks: AllowNetworks = Field(default_factory=list)
    timeout: float = Field(default=5.0, gt=0, le=60)
    roles: list[ConsoleRole] = Field(min_length=1, max_length=100)

    @field_validator("algorithms")
    @classmethod
    def _algorithms(cls, value: list[str]) -> list[str]:
        return _asymmetric(value)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.fullmatch(value):
            raise ValueError("1-32 of a-z, 0-9 and -, starting with a letter or digit")
        return value

    @field_validator("issuer")
    @classmethod
    def _issuer(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("https", "http") or not parts.hostname or parts.query or parts.fragment:
            raise ValueError("must be an https:// URL with no query or fragment")
        return value

    @field_validator("redirect_url")
    @classmethod
    def _redirect(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("https", "http") or not parts.hostname or parts.query or parts.fragment:
            raise ValueError(f"must be an absolute URL ending in {CALLBACK_PATH}, with no query")
        if parts.scheme == "http" and not _loopback_host(parts.hostname):
            raise ValueError("must be https:// (http only for a loopback address)")
        if parts.path != CALLBACK_PATH or parts.username is not None:
            raise ValueError(f"must be this broker's URL followed by {CALLBACK_PATH}")
        return value

    @field_validator("scopes")
    @classmethod
    def _scope_names(cls, value: list[str]) -> list[str]:
        for scope in value:
            if not re.fullmatch(r"[A-Za-z0-9_.:/-]{1,64}", scope):
                raise ValueError(f"{scope[:40]!r} is not a scope name")
        # openid is what makes this an OpenID Connect request (and brings the ID token).
        return value if "openid" in value else ["openid", *value]

    @model_validator(mode="after")
    def _roles(self) -> Console:
        names = [r.name for r in self.roles]
        for name in names:
            if not _NAME.fullmatch(name):
                raise ValueError(f"roles: {name[:40]!r}: names are 1-32 of a-z, 0-9 and -")
        if len(set(names)) != len(names):
            raise ValueError("roles: two roles have the same name")
        return self


def _asymmetric(value: list[str]) -> list[str]:
    bad = [a for a in value if a not in ASYMMETRIC]
    if bad:
        raise ValueError(f"{bad[0][:16]!r} is not allowed: only {', '.join(sorted(ASYMMETRIC))}")
    return value


class OidcFile(_Model):
    """The whole file."""

    format: Literal["strongroom-oidc/1"]
    issuers: dict[str, Issuer] = Field(default_factory=dict, max_length=50)
    roles: dict[str, Role] = Field(default_factory=dict, max_length=1000)
    console: Console | None = None

    @model_validator(mode="after")
    def _links(self) -> OidcFile:
        if not self.issuers and self.console is None:
            raise ValueError("issuers: name at least one issuer (or configure console sign-in)")
        if self.console is not None and self.console.name in self.issuers:
            # Both name their people oidc:<name>:<sub>: one name would make two issuers' subjects one person.
            raise ValueError(f"console.name: {self.console.name!r} is already the name of an issuer")
        for name in (*self.issuers, *self.roles):
            if not _NAME.fullmatch(name):
                raise ValueError(
                    f"{name[:40]!r}: names are 1-32 of a-z, 0-9 and -, starting with a letter or digit"
                )
        for name, role in self.roles.items():
            issuer = self.issuers.get(role.issuer)
            if issuer is None:
                raise ValueError(f"roles.{name}.issuer: no issuer named {role.issuer[:40]!r}")
            if issuer.preset is not None and not set(role.bound_claims) & PRESETS[issuer.preset][2]:
                needed = ", ".join(sorted(PRESETS[issuer.preset][2]))
                raise ValueError(
                    f"roles.{name}.bound_claims: a {issuer.preset} role must bind one of {needed}, "
                    "or every repository on the platform could log in as it"
                )
        return self


def parse(text: str, *, source: str) -> OidcFile:
    """Parse the file's text (JSON, or YAML when it is not JSON); errors name the file and the key path."""
    doc = parse_object(text, source=source, field="oidc_file", shape="format, issuers and roles")
    try:
        return OidcFile.model_validate(doc)
    except ValidationError as exc:
        raise refusal(exc, source=source, field="oidc_file") from None


def load(path: Path) -> OidcFile:
    """Read and parse the OIDC file; it decides who may log in, so it must not be writable or readable by others."""
    try:
        loose = loose_mode(path, "OIDC file")
        text = path.read_text()
    except OSError:
        raise Invalid(f"OIDC file {path} cannot be read", field="oidc_file") from None
    if loose is not None:
        raise Invalid(loose, field="oidc_file")
    return parse(text, source=str(path))
