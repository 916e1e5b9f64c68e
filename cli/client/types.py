"""What the broker's answers become: frozen dataclasses; values, tokens and secrets are kept out of repr."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a token acts for."""

    id: str
    type: str
    name: str


@dataclass(frozen=True, slots=True)
class Scope:
    """What a token may do: actions on environments (a glob) of a project (or `*`)."""

    project: str
    environments: str
    actions: tuple[str, ...]
    deny: bool = False
    keys: tuple[str, ...] | None = None  # None: every key


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """A token's metadata (everything but the token string)."""

    accessor: str
    expires_in: int
    expires_at: str
    max_expires_at: str
    num_uses: int | None
    bound_cidrs: tuple[str, ...]
    scopes: tuple[Scope, ...]
    principal: Principal
    uses_remaining: int | None = None

    @property
    def max_expires_in(self) -> int | None:
        """Seconds from now to the hard maximum, by the broker's own timestamps (no local clock involved)."""
        from datetime import datetime

        try:
            gap = datetime.fromisoformat(self.max_expires_at) - datetime.fromisoformat(self.expires_at)
        except (ValueError, TypeError):
            # Unparseable or naive-vs-aware timestamps: the caller then simply keeps renewing.
            return None
        return self.expires_in + int(gap.total_seconds())


@dataclass(frozen=True, slots=True)
class Token:
    """A freshly issued token and its metadata."""

    token: str = field(repr=False)
    info: TokenInfo


@dataclass(frozen=True, slots=True)
class ListedToken:
    """A token as an admin lists it: metadata, never the token string."""

    info: TokenInfo
    created_at: str
    revoked: bool


@dataclass(frozen=True, slots=True)
class IdentityInfo:
    """A user or machine identity as admins see it; never its client secret."""

    client_id: str
    name: str
    kind: str
    scopes: tuple[Scope, ...]
    token_ttl: int
    token_max_ttl: int
    bound_cidrs: tuple[str, ...]
    created_at: str
    disabled: bool
    deleted: bool
    previous_secret_expires_at: str | None


@dataclass(frozen=True, slots=True)
class IdentitySecret:
    """A client secret the broker shows once (a new identity's or a rotated one), with its identity's id."""

    client_id: str
    client_secret: str = field(repr=False)
    previous_valid_until: str | None = None


@dataclass(frozen=True, slots=True)
class Generated:
    """What the broker did for `secrets generate`; never the value."""

    generated: bool
    rotated: bool
    secret: SecretMeta


@dataclass(frozen=True, slots=True)
class Project:
    """A project."""

    slug: str
    description: str
    created_at: str


@dataclass(frozen=True, slots=True)
class Environment:
    """An environment of a project; it inherits the values of its parent."""

    slug: str
    parent: str | None
    created_at: str


@dataclass(frozen=True, slots=True)
class SecretMeta:
    """A secret's current version, without its value."""

    name: str
    version: int
    sensitive: bool
    deleted: bool
    created_at: str
    updated_at: str


@dataclass(frozen=True, slots=True)
class Secret:
    """One version of a secret, with its value (kept out of repr)."""

    name: str
    value: str = field(repr=False)
    version: int
    sensitive: bool
    environment: str
    created_at: str


@dataclass(frozen=True, slots=True)
class SecretVersion:
    """One entry of a secret's history."""

    version: int
    created_at: str
    author: str | None
    deleted: bool
    destroyed: bool


@dataclass(frozen=True, slots=True)
class SecretHistory:
    """Every version of one secret."""

    name: str
    current_version: int
    versions: tuple[SecretVersion, ...]


@dataclass(frozen=True, slots=True)
class ResolvedValue:
    """One value of a resolved environment and the environment it was inherited from."""

    value: str = field(repr=False)
    version: int
    environment: str
    sensitive: bool


@dataclass(frozen=True, slots=True)
class Resolved:
    """Every value an environment sees, inheritance applied."""

    project: str
    environment: str
    values: dict[str, ResolvedValue] = field(repr=False)


@dataclass(frozen=True, slots=True)
class Problem:
    """A problem found in a manifest or a target: where (a manifest path or targets/<name>), what, how bad."""

    path: str
    line: int | None
    level: str
    message: str

    def text(self) -> str:
        """`path: message (line N)`."""
        return f"{self.path}: {self.message}" + (f" (line {self.line})" if self.line else "")


@dataclass(frozen=True, slots=True)
class KeyRead:
    """A stored value the broker read for a request: name, where it came from, version (never the value)."""

    name: str
    environment: str
    version: int


@dataclass(frozen=True, slots=True)
class RenderedFile:
    """A compiled file: relative path, bytes (kept out of repr), whether it holds values, mode."""

    path: str
    content: bytes = field(repr=False)
    holds_values: bool
    mode: int


@dataclass(frozen=True, slots=True)
class Compiled:
    """What a compile returned."""

    files: tuple[RenderedFile, ...]
    warnings: tuple[Problem, ...]
    keys: tuple[KeyRead, ...]


@dataclass(frozen=True, slots=True)
class Checked:
    """What a check found; `ok` is false when any problem is an error."""

    ok: bool
    problems: tuple[Problem, ...]
    keys: tuple[KeyRead, ...]


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """A keyed hash standing for a value in a comparison."""

    fingerprint: str
    version: int
    environment: str


@dataclass(frozen=True, slots=True)
class EnvironmentDiff:
    """Two environments compared by name and fingerprint."""

    a: str
    b: str
    only_in_a: tuple[str, ...]
    only_in_b: tuple[str, ...]
    different: tuple[tuple[str, Fingerprint, Fingerprint], ...]
    same: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ImportChange:
    """What an import does (or would do) to one name."""

    name: str
    action: str
    reason: str | None
    upstream_path: str | None
    upstream_version: str | None


@dataclass(frozen=True, slots=True)
class ImportResult:
    """The outcome of an import or a dry run (never values)."""

    source: str
    backend: str
    dry_run: bool
    changes: tuple[ImportChange, ...]


# --- deploys (issue 6): a plan from the broker, a bundle for the deploy token, a ledger per host


@dataclass(frozen=True, slots=True)
class PlanHost:
    """One host of a role and its tags."""

    host: str
    tags: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PlanRole:
    """A role: its command, docker run options and hosts."""

    name: str
    cmd: str | None
    options: dict[str, str]
    hosts: tuple[PlanHost, ...]


@dataclass(frozen=True, slots=True)
class PlanBuilder:
    """How to build the image: context, Dockerfile, target, clear args, build secret names."""

    context: str | None
    dockerfile: str | None
    target: str | None
    args: dict[str, str]
    secrets: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PlanRegistry:
    """The registry to push to and pull from (the password comes only in the bundle)."""

    server: str | None
    username: str


@dataclass(frozen=True, slots=True)
class PlanHealthcheck:
    """How the remote side decides a new container is healthy."""

    path: str | None
    port: int | None
    cmd: str | None
    interval: int
    timeout: int


@dataclass(frozen=True, slots=True)
class PlanSsh:
    """SSH login, port and the host key fingerprints pinned in the manifest."""

    user: str | None
    port: int | None
    host_keys: dict[str, tuple[str, ...]]


@dataclass(frozen=True, slots=True)
class DeployPlan:
    """The broker's PlanOut: names, hosts and settings, never a value; `raw` is the JSON object itself."""

    service: str
    image: str
    version: str
    registry: PlanRegistry | None
    builder: PlanBuilder | None
    roles: tuple[PlanRole, ...]
    ssh: PlanSsh
    healthcheck: PlanHealthcheck | None
    retain_images: int
    stop_timeout: int
    raw: dict[str, Any] = field(repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class KeyRef:
    """A secret the plan reads: environment, name and (in a bundle or ledger) version and fingerprint."""

    environment: str
    name: str
    version: int | None = None
    fingerprint: str | None = None


@dataclass(frozen=True, slots=True)
class DeployHostRecord:
    """A ledger row: what a deploy did on one host."""

    host: str
    role: str
    outcome: str
    container: str | None
    image_digest: str | None
    env_fingerprint: str | None
    error: str | None
    at: str | None


@dataclass(frozen=True, slots=True)
class DeployInfo:
    """A deploy as the broker records it (`hosts` and `keys` only when read one by one)."""

    id: str
    project: str
    environment: str
    service: str
    version: str
    kind: str
    status: str
    started_at: str
    finished_at: str | None
    by: str
    hosts: tuple[DeployHostRecord, ...] = ()
    keys: tuple[KeyRef, ...] = ()


@dataclass(frozen=True, slots=True)
class CreatedDeploy:
    """A new deploy: its row, the short-lived deploy token bound to it, and the plan."""

    deploy: DeployInfo | None
    token: str | None = field(repr=False)
    accessor: str | None
    expires_at: str | None
    uses: int | None
    keys: tuple[KeyRef, ...]
    plan: DeployPlan


@dataclass(frozen=True, slots=True)
class BundleHost:
    """One host's env file (values: kept out of repr) and its fingerprint."""

    host: str
    role: str
    env_file: str = field(repr=False)
    env_fingerprint: str


@dataclass(frozen=True, slots=True)
class DeployBundle:
    """Everything secret a deploy needs, fetched once with the deploy token; repr shows names only."""

    hosts: tuple[BundleHost, ...]
    registry_password: str | None = field(repr=False)
    build_secrets: dict[str, str] = field(repr=False)
    keys: tuple[KeyRef, ...]

    def values(self) -> list[str]:
        """Every value in the bundle (to seed a redactor): env-file texts, the password, build secrets."""
        out = [item.env_file for item in self.hosts]
        if self.registry_password is not None:
            out.append(self.registry_password)
        out.extend(self.build_secrets.values())
        return out


@dataclass(frozen=True, slots=True)
class LastDeploy:
    """What the ledger says runs on a host."""

    deploy_id: str | None
    version: str | None
    image_digest: str | None
    env_fingerprint: str | None
    at: str | None
    by: str | None
    outcome: str | None


@dataclass(frozen=True, slots=True)
class Rotated:
    """A secret changed since it was deployed to a host."""

    name: str
    deployed_version: int | None
    current_version: int | None


@dataclass(frozen=True, slots=True)
class HostStatus:
    """A host of the manifest: what runs there by the ledger, and what the broker would compile now."""

    host: str
    role: str
    last: LastDeploy | None
    expected_env_fingerprint: str | None
    rotated: tuple[Rotated, ...]

    @property
    def drift(self) -> bool:
        """Whether the host runs something other than what a deploy would give it now (or nothing)."""
        return (
            self.last is None
            or self.last.env_fingerprint != self.expected_env_fingerprint
            or bool(self.rotated)
        )
