"""The OIDC file (STRONGROOM_OIDC_FILE, JSON or YAML, 0600): trusted issuers and the roles their tokens log in as.

Only this file names issuers, key set URLs and what a role grants; nothing a client sends changes them.
Every model forbids unknown keys, and an error names the path of the bad key. The format is in
docs/oidc.md.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

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
        bad = [a for a in value if a not in ASYMMETRIC]
        if bad:
            raise ValueError(f"{bad[0][:16]!r} is not allowed: only {', '.join(sorted(ASYMMETRIC))}")
        return value

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


class Role(_Model):
    """What a token whose claims match logs in as: scopes and a TTL."""

    issuer: str = Field(description="the name of an issuer in this file")
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

    def patterns(self) -> dict[str, list[str]]:
        """Each bound claim with its allowed values."""
        return {k: [v] if isinstance(v, str) else list(v) for k, v in self.bound_claims.items()}


class OidcFile(_Model):
    """The whole file."""

    format: Literal["strongroom-oidc/1"]
    issuers: dict[str, Issuer] = Field(min_length=1, max_length=50)
    roles: dict[str, Role] = Field(default_factory=dict, max_length=1000)

    @model_validator(mode="after")
    def _links(self) -> OidcFile:
        for name in (*self.issuers, *self.roles):
            if not _NAME.fullmatch(name):
                raise ValueError(
                    f"{name[:40]!r}: names are 1-32 of a-z, 0-9 and -, starting with a letter or digit"
                )
        for name, role in self.roles.items():
            issuer = self.issuers.get(role.issuer)
            if issuer is None:
                raise ValueError(f"roles.{name}.issuer: no issuer named {role.issuer[:40]!r}")
            if any(not values for values in role.patterns().values()):
                raise ValueError(f"roles.{name}.bound_claims: every claim needs at least one value")
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
