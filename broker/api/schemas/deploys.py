"""Bodies of the deploy routes: start a deploy, fetch its bundle, report hosts, finish; the ledger and status."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from broker.api.schemas import Request
from broker.api.schemas.compile import MANIFEST_MAX_CHARS

EXAMPLE_MANIFEST = "service: web\nimage: acme/web\nroles:\n  web:\n    hosts: [web1]\n"
HOST_PATTERN = r"^[A-Za-z0-9:.\[\]-]{1,253}$"
VERSION_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$"  # a docker image tag
FINGERPRINT_PATTERN = r"^hmac-sha256:[0-9a-f]{64}$"


class DeployRequest(Request):
    """Start a deploy (or rollback): the broker parses the manifest and mints a deploy token for its plan."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"manifest": EXAMPLE_MANIFEST, "version": "v1"}]}
    )

    manifest: str = Field(
        max_length=MANIFEST_MAX_CHARS,
        description="strongroom.yml as text; it holds no values",
        examples=[EXAMPLE_MANIFEST],
    )
    version: str = Field(pattern=VERSION_PATTERN, description="The image tag to deploy", examples=["3f2c1ab"])
    ttl_seconds: int = Field(
        default=900, ge=60, le=3600, description="Deploy token lifetime (never past yours)"
    )
    hosts: list[str] | None = Field(
        default=None,
        min_length=1,
        max_length=1000,
        description="Deploy to these manifest hosts only (default: every host of every role)",
    )
    kind: Literal["deploy", "rollback"] = "deploy"
    via: Literal["ssh", "kamal"] = "ssh"


class DeployHostReport(Request):
    """What happened on one host (the CLI reports each host once it is done with it)."""

    host: str = Field(pattern=HOST_PATTERN)
    role: str = Field(min_length=1, max_length=64)
    outcome: Literal["deployed", "failed", "skipped"]
    container: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,255}$")
    image_digest: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._/:@-]{1,256}$")
    env_fingerprint: str | None = Field(default=None, pattern=FINGERPRINT_PATTERN)
    error: str | None = Field(
        default=None, max_length=2000, description="Redacted by the CLI before it is sent"
    )


class DeployFinish(Request):
    """End a deploy: its token (and any child of it) is revoked."""

    outcome: Literal["succeeded", "failed", "partial"]


class DeployStatusRequest(Request):
    """Compare what the ledger says runs on each host with what the broker would compile now."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"manifest": EXAMPLE_MANIFEST}]})

    manifest: str = Field(max_length=MANIFEST_MAX_CHARS, examples=[EXAMPLE_MANIFEST])


class KeyRefOut(BaseModel):
    """A secret the plan reads: the environment it is read in and its name."""

    environment: str
    name: str


class ServedKeyOut(KeyRefOut):
    """A secret version served to a deploy, with its audit fingerprint (never the value)."""

    version: int
    fingerprint: str


class HostKeyOut(ServedKeyOut):
    """A secret version one host (in one role) got in its env file."""

    host: str
    role: str


class HostOut(BaseModel):
    """A ledger row: what a deploy did on one host."""

    host: str
    role: str
    outcome: str
    container: str | None
    image_digest: str | None
    env_fingerprint: str | None
    error: str | None
    at: datetime


class DeployOut(BaseModel):
    """A deploy as the ledger records it."""

    id: str
    project: str
    environment: str
    service: str
    version: str
    kind: str
    via: str
    status: str
    started_at: datetime
    finished_at: datetime | None
    by: str


class DeployDetailOut(DeployOut):
    """One deploy with its host outcomes and the secret versions it was served."""

    hosts: list[HostOut]
    keys: list[ServedKeyOut]
    host_keys: list[HostKeyOut]


class DeployListOut(BaseModel):
    """An environment's deploys, newest first."""

    deploys: list[DeployOut]


class RegistryOut(BaseModel):
    """Where the image is pushed and pulled; the password comes only in the bundle."""

    server: str | None
    username: str


class BuilderOut(BaseModel):
    """How the image is built: build secrets by name (their values come only in the bundle)."""

    context: str | None
    dockerfile: str | None
    target: str | None
    args: dict[str, str]
    secrets: list[str]


class PlanHostOut(BaseModel):
    """A host of a role, with its tags."""

    host: str
    tags: list[str]


class PlanRoleOut(BaseModel):
    """A role and the hosts of it this deploy reaches."""

    name: str
    cmd: str | None
    options: dict[str, str]
    hosts: list[PlanHostOut]


class SshOut(BaseModel):
    """How to reach the hosts and the host key fingerprints pinned in the manifest.

    `user` and `port` are null unless the manifest sets them: ssh (its config, or its defaults) decides.
    """

    user: str | None
    port: int | None
    host_keys: dict[str, list[str]]


class HealthcheckOut(BaseModel):
    """How the new container proves it is ready: cmd if given, else an HTTP GET of path on port."""

    path: str
    port: int | None
    cmd: str | None
    interval: int | float = Field(description="Seconds between probes (a fraction of one allowed)")
    timeout: int


class PlanOut(BaseModel):
    """The deploy plan as pure data (no values)."""

    service: str
    image: str
    version: str
    registry: RegistryOut | None
    builder: BuilderOut | None
    roles: list[PlanRoleOut]
    ssh: SshOut
    healthcheck: HealthcheckOut | None
    retain_images: int
    stop_timeout: int
    # Seconds a new container without a health check must stay running before it counts as ready.
    readiness_delay: int


class DeployCreatedOut(BaseModel):
    """A started deploy, its deploy token (shown once) and its plan."""

    deploy: DeployOut
    token: str
    accessor: str
    expires_at: datetime
    uses: int
    keys: list[KeyRefOut]
    plan: PlanOut


class BundleHostOut(BaseModel):
    """One host's env file (docker --env-file text) and its fingerprint (safe for a container label)."""

    host: str
    role: str
    env_file: str
    env_fingerprint: str


class BundleOut(BaseModel):
    """Everything a deploy needs that is secret: served once, no-store, recorded in the ledger by fingerprint."""

    hosts: list[BundleHostOut]
    registry_password: str | None
    build_secrets: dict[str, str]
    keys: list[ServedKeyOut]


class LastOut(BaseModel):
    """A host's ledger row: the newest that deployed there, or its newest attempt whatever the outcome."""

    deploy: str
    version: str
    image_digest: str | None
    env_fingerprint: str | None
    at: datetime
    by: str
    outcome: str
    error: str | None = None


class RotatedOut(BaseModel):
    """A secret whose value changed since it was deployed."""

    name: str
    deployed_version: int
    current_version: int | None


class StatusHostOut(BaseModel):
    """One host: what the ledger says runs there and what would be compiled now."""

    host: str
    role: str
    last: LastOut | None = Field(description="The newest deploy that deployed to the host")
    last_attempt: LastOut | None = Field(
        default=None, description="The newest deploy that tried the host, whatever its outcome"
    )
    behind: LastOut | None = Field(
        default=None,
        description="The newest deploy of another version to a host of this role since `last` (null: none)",
    )
    expected_env_fingerprint: str
    rotated: list[RotatedOut]


class DeployStatusOut(BaseModel):
    """Every host of the manifest."""

    hosts: list[StatusHostOut]
