"""The only way the CLI talks to the broker: stdlib HTTP(S) to the routes of docs/api.md, typed results.

Transport rules: HTTPS is verified against the system CA store, or only against STRONGROOM_CA_FILE when one
is configured; plain HTTP is allowed to loopback hosts only, unless the user passes --insecure. Redirects are
never followed, so the token is only ever sent to the URL the user gave. Tokens and secret values travel in
headers and JSON bodies, never in a path or query.

Two transports, one interface: http.client with a kept-alive connection, and for a single read on no open
connection (`resolved`, all that `run` does) a light HTTP/1.1 exchange on a plain or TLS socket, which
spares `run` the start-up cost of importing http.client and the email package.

Every non-2xx answer becomes a `BrokerError` carrying the broker's problem-JSON `detail` sentence; anything
the CLI itself sent as a secret is masked out of that sentence before anyone sees it.
"""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from cli import __version__
from cli.errors import CliError

if TYPE_CHECKING:
    import http.client
    import ssl

MAX_RESPONSE_BYTES = 16 * 1024 * 1024
TIMEOUT_SECONDS = 30.0
MASK = "********"
# A kept-alive connection idle longer than this is not reused: uvicorn closes idle ones after 5 s.
IDLE_REUSE_SECONDS = 4.0
MAX_HOST_ERROR = 2000  # the broker's limit on a host report's error
REVEAL_HEADER = "X-Strongroom-Reveal"

# Shows that a request is in progress (the CLI passes one that draws on a terminal after a second).
Progress = Callable[[str], AbstractContextManager[None]]

_TOKEN_CHARS = frozenset(chr(c) for c in range(0x21, 0x7F))


class ProtocolError(Exception):
    """The broker's answer is not well-formed HTTP."""


class Answer:
    """A response: status, reason, lower-cased headers, body."""

    __slots__ = ("headers", "raw", "reason", "status")

    def __init__(self, status: int, reason: str, headers: dict[str, str], raw: bytes) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers
        self.raw = raw


def parse_response(data: bytes) -> Answer:
    """Parse a whole HTTP/1.1 response (read until the server closed); raise ProtocolError if malformed."""
    head, separator, body = data.partition(b"\r\n\r\n")
    if not separator:
        raise ProtocolError("the connection closed before the response headers ended")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    version, _, rest = status_line.partition(" ")
    code, _, reason = rest.partition(" ")
    if not version.startswith("HTTP/1.") or not (code.isdigit() and len(code) == 3):
        raise ProtocolError("the response does not start with an HTTP/1.x status line")
    headers: dict[str, str] = {}
    for line in header_lines:
        name, colon, value = line.partition(":")
        if not colon:
            raise ProtocolError("a response header line has no colon")
        headers[name.strip().lower()] = value.strip()
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = _dechunk(body)
    elif headers.get("content-length", "").isdigit():
        length = int(headers["content-length"])
        if len(body) < length:
            raise ProtocolError("the connection closed before the response body ended")
        body = body[:length]
    return Answer(int(code), reason, headers, body)


def _dechunk(data: bytes) -> bytes:
    out: list[bytes] = []
    position = 0
    while True:
        line_end = data.find(b"\r\n", position)
        if line_end < 0:
            raise ProtocolError("a chunk of the response body is cut short")
        size_text = data[position:line_end].split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise ProtocolError("a chunk size in the response body is not a number") from None
        if size == 0:
            return b"".join(out)
        start = line_end + 2
        if len(data) < start + size + 2:
            raise ProtocolError("a chunk of the response body is cut short")
        out.append(data[start : start + size])
        position = start + size + 2


class BrokerError(CliError):
    """The broker answered with an error status; `status` is the HTTP status, the message its detail."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


# --- typed results ---------------------------------------------------------------------------------


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


# --- URL rules ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BrokerUrl:
    """A parsed broker URL in canonical text form (lower-case scheme and host, no trailing slash)."""

    scheme: str
    host: str
    port: int | None
    base_path: str
    text: str


def parse_broker_url(url: str) -> BrokerUrl:
    """Parse and canonicalise a broker URL, or raise CliError saying what is wrong with it."""
    # The messages never quote the URL: a mistaken one may carry a password or a token.
    try:
        parts = urlsplit(url.strip())
        if parts.username is not None or parts.password is not None:
            raise CliError("the broker URL must not carry a user name or password")
        port = parts.port
    except ValueError:
        raise CliError("the broker URL is not a valid URL") from None
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http"):
        raise CliError("the broker URL must start with https:// (or http:// for a loopback host)")
    if not parts.hostname:
        raise CliError("the broker URL has no host")
    if parts.query or parts.fragment:
        raise CliError("the broker URL must not have a query or fragment")
    host = parts.hostname.lower()
    shown_host = f"[{host}]" if ":" in host else host
    base_path = parts.path.rstrip("/")
    text = f"{scheme}://{shown_host}{f':{port}' if port is not None else ''}{base_path}"
    return BrokerUrl(scheme=scheme, host=host, port=port, base_path=base_path, text=text)


def is_loopback(host: str) -> bool:
    """Whether a host name or address is this machine's loopback interface."""
    if host in ("localhost", "localhost."):
        return True
    import ipaddress

    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# --- the client --------------------------------------------------------------------------------------


class BrokerClient:
    """A connection to one broker, optionally authenticated by one token."""

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        insecure: bool = False,
        ca_file: str | None = None,
        unauthorized_message: str | None = None,
        timeout: float = TIMEOUT_SECONDS,
        progress: Progress | None = None,
    ) -> None:
        self._url = parse_broker_url(url)
        if self._url.scheme == "http" and not insecure and not is_loopback(self._url.host):
            raise CliError(
                f"refusing plain http to {self._url.host}: the token and secrets would cross the network "
                "unencrypted; use https, or pass --insecure if you really mean it"
            )
        if token is not None and (not token or not set(token) <= _TOKEN_CHARS):
            # http.client would refuse it too, but its error message quotes the whole header value.
            raise CliError("the token has characters a broker token never has (is it truncated or quoted?)")
        self._token = token
        self._insecure = insecure
        self._ca_file = ca_file
        self._unauthorized_message = unauthorized_message
        self._timeout = timeout
        self._progress = progress
        self._connection: http.client.HTTPConnection | None = None
        self._last_used = 0.0

    @property
    def url(self) -> str:
        """The canonical broker URL this client talks to."""
        return self._url.text

    def close(self) -> None:
        """Close the connection, if one is open."""
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    # --- auth and tokens

    def issue_token(self, *, client_id: str, client_secret: str, ttl: int | None = None) -> Token:
        """Exchange a client ID and secret for a token (`POST /v1/auth/token`)."""
        body = {"client_id": client_id, "client_secret": client_secret, "ttl": ttl}
        data = _Reader(self._request("POST", "/v1/auth/token", body, redact=(client_secret,)), "token")
        return Token(token=data.text("token"), info=_token_info(data))

    def oidc_login(self, *, role: str, id_token: str) -> Token:
        """Exchange a CI platform's OIDC token for a token with a role's scopes (`POST /v1/auth/oidc`)."""
        body = {"role": role, "jwt": id_token}
        data = _Reader(self._request("POST", "/v1/auth/oidc", body, redact=(id_token,)), "token")
        return Token(token=data.text("token"), info=_token_info(data))

    def renew_self(self, *, ttl: int | None = None) -> TokenInfo:
        """Extend this client's token (`POST /v1/auth/token/renew`)."""
        return _token_info(_Reader(self._request("POST", "/v1/auth/token/renew", {"ttl": ttl}), "token"))

    def revoke_self(self) -> None:
        """Revoke this client's token and its children (`POST /v1/auth/token/revoke-self`)."""
        self._request("POST", "/v1/auth/token/revoke-self", None)

    def create_token(
        self,
        *,
        scopes: list[dict[str, Any]] | None,
        ttl: int | None,
        num_uses: int | None,
        bound_cidrs: list[str] | None,
    ) -> Token:
        """A child of this client's token, never broader (`POST /v1/tokens`)."""
        body = {"scopes": scopes, "ttl": ttl, "num_uses": num_uses, "bound_cidrs": bound_cidrs}
        data = _Reader(self._request("POST", "/v1/tokens", body), "token")
        return Token(token=data.text("token"), info=_token_info(data))

    def list_tokens(self, *, include_inactive: bool = False, limit: int = 200) -> list[ListedToken]:
        """Tokens newest first, without their strings (`GET /v1/tokens`, admin)."""
        query = f"?limit={int(limit)}" + ("&include_inactive=true" if include_inactive else "")
        data = _Reader(self._request("GET", f"/v1/tokens{query}"), "response")
        return [
            ListedToken(
                info=_token_info(item), created_at=item.text("created_at"), revoked=item.flag("revoked")
            )
            for item in data.objects("tokens")
        ]

    def revoke_token(self, *, accessor: str) -> None:
        """Revoke a token and its children by accessor (`POST /v1/tokens/revoke`, admin)."""
        self._request("POST", "/v1/tokens/revoke", {"accessor": accessor})

    # --- identities (admin)

    def create_identity(
        self,
        *,
        name: str,
        kind: str,
        scopes: list[dict[str, Any]],
        bound_cidrs: list[str],
        client_id: str | None = None,
        token_ttl: int | None = None,
        token_max_ttl: int | None = None,
    ) -> tuple[IdentityInfo, IdentitySecret]:
        """Create an identity; its client secret is in the answer this once (`POST /v1/identities`)."""
        body = {
            "name": name,
            "type": kind,
            "scopes": scopes,
            "bound_cidrs": bound_cidrs,
            "client_id": client_id,
            "token_ttl": token_ttl,
            "token_max_ttl": token_max_ttl,
        }
        data = _Reader(self._request("POST", "/v1/identities", body), "identity")
        info = _identity(data)
        return info, IdentitySecret(client_id=info.client_id, client_secret=data.text("client_secret"))

    def list_identities(self, *, include_deleted: bool = False) -> list[IdentityInfo]:
        """Identities, oldest first (`GET /v1/identities`)."""
        query = "?include_deleted=true" if include_deleted else ""
        data = _Reader(self._request("GET", f"/v1/identities{query}"), "response")
        return [_identity(item) for item in data.objects("identities")]

    def show_identity(self, *, client_id: str) -> IdentityInfo:
        """One identity (`GET /v1/identities/{client_id}`)."""
        return _identity(_Reader(self._request("GET", _identity_path(client_id)), "identity"))

    def disable_identity(self, *, client_id: str) -> IdentityInfo:
        """Disable an identity and revoke its tokens (`POST .../disable`)."""
        return _identity(_Reader(self._request("POST", f"{_identity_path(client_id)}/disable"), "identity"))

    def enable_identity(self, *, client_id: str) -> IdentityInfo:
        """Let a disabled identity log in again (`POST .../enable`)."""
        return _identity(_Reader(self._request("POST", f"{_identity_path(client_id)}/enable"), "identity"))

    def delete_identity(self, *, client_id: str) -> None:
        """Delete an identity for good (`DELETE /v1/identities/{client_id}`)."""
        self._request("DELETE", _identity_path(client_id))

    def rotate_identity_secret(self, *, client_id: str, grace: int | None) -> IdentitySecret:
        """A new client secret, shown once; the old one works for `grace` seconds (`POST .../rotate-secret`)."""
        path = f"{_identity_path(client_id)}/rotate-secret"
        data = _Reader(self._request("POST", path, {"grace": grace}), "rotated")
        return IdentitySecret(
            client_id=data.text("client_id"),
            client_secret=data.text("client_secret"),
            previous_valid_until=data.maybe_text("previous_secret_valid_until"),
        )

    # --- projects and environments

    def list_projects(self) -> list[Project]:
        """The projects this token has a scope on."""
        data = _Reader(self._request("GET", "/v1/projects"), "response")
        return [_project(item) for item in data.objects("projects")]

    def create_project(self, *, slug: str, description: str = "") -> Project:
        """Create a project."""
        body = {"slug": slug, "description": description}
        return _project(_Reader(self._request("POST", "/v1/projects", body), "project"))

    def list_environments(self, *, project: str) -> list[Environment]:
        """The environments of a project."""
        data = _Reader(self._request("GET", f"{_project_path(project)}/environments"), "response")
        return [_environment(item) for item in data.objects("environments")]

    def create_environment(self, *, project: str, slug: str, parent: str | None = None) -> Environment:
        """Create an environment, optionally inheriting from a parent environment."""
        body = {"slug": slug, "parent": parent}
        path = f"{_project_path(project)}/environments"
        return _environment(_Reader(self._request("POST", path, body), "environment"))

    def set_environment_parent(self, *, project: str, environment: str, parent: str | None) -> Environment:
        """Change what an environment inherits from (`PATCH`; None: nothing)."""
        path = _env_path(project, environment)
        return _environment(_Reader(self._request("PATCH", path, {"parent": parent}), "environment"))

    def delete_environment(self, *, project: str, environment: str) -> None:
        """Delete an environment with no secrets and no children."""
        self._request("DELETE", _env_path(project, environment))

    def delete_project(self, *, project: str) -> None:
        """Delete a project with no environments."""
        self._request("DELETE", _project_path(project))

    # --- secrets

    def list_secrets(self, *, project: str, environment: str) -> list[SecretMeta]:
        """The secrets of an environment, without values."""
        data = _Reader(self._request("GET", f"{_env_path(project, environment)}/secrets"), "response")
        return [_secret_meta(item) for item in data.objects("secrets")]

    def get_secret(
        self, *, project: str, environment: str, name: str, version: int | None = None, reveal: bool = False
    ) -> Secret:
        """Read one secret's value, the current version unless `version`; `reveal`: audited as shown."""
        path = _secret_path(project, environment, name)
        if version is not None:
            path += f"?version={int(version)}"
        data = _Reader(self._request("GET", path, reveal=reveal), "secret")
        return Secret(
            name=data.text("name"),
            value=data.text("value"),
            version=data.integer("version"),
            sensitive=data.flag("sensitive"),
            environment=data.text("environment"),
            created_at=data.text("created_at"),
        )

    def put_secret(
        self,
        *,
        project: str,
        environment: str,
        name: str,
        value: str,
        sensitive: bool = True,
        cas: int | None = None,
    ) -> SecretMeta:
        """Store a new version of a secret; with `cas`, only if the current version is `cas` (0: none yet)."""
        body = {"value": value, "sensitive": sensitive, "cas": cas}
        path = _secret_path(project, environment, name)
        return _secret_meta(_Reader(self._request("PUT", path, body, redact=(value,)), "secret"))

    def delete_secret(self, *, project: str, environment: str, name: str) -> None:
        """Soft-delete a secret's current version."""
        self._request("DELETE", _secret_path(project, environment, name))

    def undelete_secret(self, *, project: str, environment: str, name: str) -> SecretMeta:
        """Bring a soft-deleted secret back."""
        path = f"{_secret_path(project, environment, name)}/undelete"
        return _secret_meta(_Reader(self._request("POST", path), "secret"))

    def destroy_secret_version(self, *, project: str, environment: str, name: str, version: int) -> None:
        """Erase one version's ciphertext for good."""
        path = f"{_secret_path(project, environment, name)}/versions/{int(version)}/destroy"
        self._request("POST", path)

    def secret_history(self, *, project: str, environment: str, name: str) -> SecretHistory:
        """Every version of a secret, without values."""
        data = _Reader(
            self._request("GET", f"{_secret_path(project, environment, name)}/versions"), "history"
        )
        return SecretHistory(
            name=data.text("name"),
            current_version=data.integer("current_version"),
            versions=tuple(
                SecretVersion(
                    version=item.integer("version"),
                    created_at=item.text("created_at"),
                    author=item.maybe_text("author"),
                    deleted=item.flag("deleted"),
                    destroyed=item.flag("destroyed"),
                )
                for item in data.objects("versions")
            ),
        )

    def rollback_secret(self, *, project: str, environment: str, name: str, version: int) -> SecretMeta:
        """Store a new version holding the value of an earlier `version`."""
        path = f"{_secret_path(project, environment, name)}/rollback"
        return _secret_meta(_Reader(self._request("POST", path, {"version": version}), "secret"))

    def generate_secret(
        self, *, project: str, environment: str, name: str, size: int, encoding: str, rotate: bool
    ) -> Generated:
        """Have the broker generate and store a value unless the secret exists (or `rotate`); never returns it."""
        body = {"bytes": size, "format": encoding, "rotate": rotate}
        path = f"{_secret_path(project, environment, name)}/generate"
        data = _Reader(self._request("POST", path, body), "generated")
        return Generated(
            generated=data.flag("generated"),
            rotated=data.flag("rotated"),
            secret=_secret_meta(data.child("secret")),
        )

    def resolved(self, *, project: str, environment: str, reveal: bool = False) -> Resolved:
        """Every value an environment sees, inheritance applied, in one round trip; `reveal`: audited as shown."""
        path = f"{_env_path(project, environment)}/resolved"
        data = _Reader(self._request("GET", path, reveal=reveal, light=True), "resolved")
        values_reader = data.child("values")
        values: dict[str, ResolvedValue] = {}
        for name in values_reader.keys():  # noqa: SIM118 (a _Reader, not a dict)
            item = values_reader.child(name)
            values[name] = ResolvedValue(
                value=item.text("value"),
                version=item.integer("version"),
                environment=item.text("environment"),
                sensitive=item.flag("sensitive"),
            )
        return Resolved(project=data.text("project"), environment=data.text("environment"), values=values)

    # --- compile (the manifest goes up as text; it holds no values)

    def compile(
        self, *, project: str, environment: str, manifest: str, targets: list[str], role: str | None = None
    ) -> Compiled:
        """Render `targets` for an environment from `manifest` (`POST .../compile`)."""
        body = {"manifest": manifest, "targets": targets, "role": role}
        data = _Reader(self._request("POST", f"{_env_path(project, environment)}/compile", body), "compile")
        files = []
        for item in data.objects("files"):
            encoding = item.text("encoding")
            text = item.text("content")
            try:
                content = (
                    text.encode("utf-8") if encoding == "utf-8" else base64.b64decode(text, validate=True)
                )
            except ValueError:
                raise _unexpected("compile.files", "has content that is not base64") from None
            files.append(
                RenderedFile(
                    path=item.text("path"),
                    content=content,
                    holds_values=item.flag("holds_values"),
                    mode=item.integer("mode"),
                )
            )
        return Compiled(files=tuple(files), warnings=_problems(data, "warnings"), keys=_keys_read(data))

    def check(
        self, *, project: str, environment: str, manifest: str, targets: list[str], role: str | None = None
    ) -> Checked:
        """Every problem a compile would meet, without any value (`POST .../check`)."""
        body = {"manifest": manifest, "targets": targets, "role": role}
        data = _Reader(self._request("POST", f"{_env_path(project, environment)}/check", body), "check")
        return Checked(ok=data.flag("ok"), problems=_problems(data, "problems"), keys=_keys_read(data))

    def values(self, *, project: str, environment: str, names: list[str]) -> dict[str, str]:
        """The named values as the environment sees them, all or an error (`POST .../values`)."""
        path = f"{_env_path(project, environment)}/values"
        data = _Reader(self._request("POST", path, {"names": names}), "values").child("values")
        out = {name: data.child(name).text("value") for name in data.keys()}  # noqa: SIM118 (a _Reader)
        missing = [name for name in names if name not in out]
        if missing:
            raise _unexpected("values", f"lacks {missing[0]}")
        return out

    def diff(self, *, project: str, a: str, b: str) -> EnvironmentDiff:
        """Two environments compared by fingerprint, never by value (`GET /v1/projects/{p}/diff`)."""
        path = f"{_project_path(project)}/diff?a={quote(a, safe='')}&b={quote(b, safe='')}"
        data = _Reader(self._request("GET", path), "diff")

        def fingerprint(item: _Reader) -> Fingerprint:
            return Fingerprint(item.text("fingerprint"), item.integer("version"), item.text("environment"))

        return EnvironmentDiff(
            a=data.text("a"),
            b=data.text("b"),
            only_in_a=data.texts("only_in_a"),
            only_in_b=data.texts("only_in_b"),
            different=tuple(
                (item.text("name"), fingerprint(item.child("a")), fingerprint(item.child("b")))
                for item in data.objects("different")
            ),
            same=data.texts("same"),
        )

    # --- import from an upstream (issue 7)

    def import_from_backend(
        self,
        *,
        project: str,
        environment: str,
        source: str,
        backend: str | None = None,
        dry_run: bool = False,
        overwrite: bool = False,
    ) -> ImportResult:
        """Copy a Vault or AWS Secrets Manager source into a database environment (or list what would change)."""
        body = {"source": source, "backend": backend, "dry_run": dry_run, "overwrite": overwrite}
        data = _Reader(self._request("POST", f"{_env_path(project, environment)}/import", body), "import")
        return ImportResult(
            source=data.text("source"),
            backend=data.text("backend"),
            dry_run=data.flag("dry_run"),
            changes=tuple(
                ImportChange(
                    name=item.text("name"),
                    action=item.text("action"),
                    reason=item.maybe_text("reason"),
                    upstream_path=item.maybe_text("upstream_path"),
                    upstream_version=item.maybe_text("upstream_version"),
                )
                for item in data.objects("changes")
            ),
        )

    # --- deploys (issue 6; docs/api.md): the deploy token's calls go through `with_token(token)`

    def with_token(self, token: str, *, unauthorized_message: str | None = None) -> BrokerClient:
        """A client for the same broker, TLS settings and progress, authenticated by `token` instead."""
        return BrokerClient(
            self._url.text,
            token=token,
            insecure=self._insecure,
            ca_file=self._ca_file,
            unauthorized_message=unauthorized_message,
            timeout=self._timeout,
            progress=self._progress,
        )

    def create_deploy(
        self,
        *,
        project: str,
        environment: str,
        manifest: str,
        version: str,
        ttl_seconds: int = 900,
        hosts: list[str] | None = None,
        kind: str = "deploy",
        via: str = "ssh",
    ) -> CreatedDeploy:
        """Start a deploy: a ledger row, a deploy token for the plan's keys only, and the plan."""
        body: dict[str, Any] = {
            "manifest": manifest,
            "version": version,
            "ttl_seconds": ttl_seconds,
            "hosts": hosts,
            "kind": kind,
            "via": via,
        }
        data = _Reader(self._request("POST", f"{_env_path(project, environment)}/deploys", body), "deploy")
        token = data.maybe_text("token")
        try:
            deploy = data.child("deploy") if data.maybe_object("deploy") else None
            return CreatedDeploy(
                deploy=_deploy_info(deploy) if deploy is not None else None,
                token=token,
                accessor=data.maybe_text("accessor"),
                expires_at=data.maybe_text("expires_at"),
                uses=data.maybe_integer("uses"),
                keys=_key_refs(data, "keys"),
                plan=_deploy_plan(data.child("plan")),
            )
        except BaseException:
            # A token was minted but the answer cannot be used: end the token before giving up on it.
            if token is not None:
                orphan = self.with_token(token)
                with contextlib.suppress(Exception):
                    orphan.revoke_self()
                orphan.close()
            raise

    def deploy_bundle(self, *, deploy_id: str) -> DeployBundle:
        """The env file of every host, the registry password and build secrets (deploy token only)."""
        data = _Reader(self._request("POST", f"/v1/deploys/{_segment(deploy_id)}/bundle", None), "bundle")
        secrets = data.child("build_secrets")
        return DeployBundle(
            hosts=tuple(
                BundleHost(
                    host=item.text("host"),
                    role=item.text("role"),
                    env_file=item.text("env_file"),
                    env_fingerprint=item.text("env_fingerprint"),
                )
                for item in data.objects("hosts")
            ),
            registry_password=data.maybe_text("registry_password"),
            build_secrets={name: secrets.text(name) for name in secrets.keys()},  # noqa: SIM118 (a _Reader)
            keys=_key_refs(data, "keys"),
        )

    def report_deploy_host(
        self,
        *,
        deploy_id: str,
        host: str,
        role: str,
        outcome: str,
        container: str | None = None,
        image_digest: str | None = None,
        env_fingerprint: str | None = None,
        error: str | None = None,
        redactor: Callable[[str], str] | None = None,
    ) -> None:
        """Record what the deploy did on one host in the ledger (deploy token); `error` redacted, then cut."""
        if error is not None:
            # Redact the whole text before cutting it: a cut through a value would leave a prefix no
            # redactor recognises any more.
            error = (redactor(error) if redactor is not None else error)[:MAX_HOST_ERROR]
        body = {
            "host": host,
            "role": role,
            "outcome": outcome,
            "container": container,
            "image_digest": image_digest,
            "env_fingerprint": env_fingerprint,
            "error": error,
        }
        self._request("POST", f"/v1/deploys/{_segment(deploy_id)}/hosts", body)

    def finish_deploy(self, *, deploy_id: str, outcome: str) -> DeployInfo:
        """Close the deploy with its outcome; the broker revokes the deploy token (deploy token)."""
        path = f"/v1/deploys/{_segment(deploy_id)}/finish"
        return _deploy_info(_Reader(self._request("POST", path, {"outcome": outcome}), "deploy"))

    def list_deploys(self, *, project: str, environment: str, limit: int = 20) -> list[DeployInfo]:
        """The environment's deploys, newest first."""
        path = f"{_env_path(project, environment)}/deploys?limit={int(limit)}"
        return [
            _deploy_info(item) for item in _Reader(self._request("GET", path), "response").objects("deploys")
        ]

    def get_deploy(self, *, deploy_id: str) -> DeployInfo:
        """One deploy with its ledger rows and the key versions it served."""
        return _deploy_info(_Reader(self._request("GET", f"/v1/deploys/{_segment(deploy_id)}"), "deploy"))

    def deploy_status(self, *, project: str, environment: str, manifest: str) -> list[HostStatus]:
        """Per host of the manifest: the ledger's last deploy against what the broker would compile now."""
        path = f"{_env_path(project, environment)}/deploys/status"
        data = _Reader(self._request("POST", path, {"manifest": manifest}), "status")
        out = []
        for item in data.objects("hosts"):
            last = item.child("last") if item.maybe_object("last") else None
            out.append(
                HostStatus(
                    host=item.text("host"),
                    role=item.text("role"),
                    last=_last_deploy(last) if last is not None else None,
                    expected_env_fingerprint=item.maybe_text("expected_env_fingerprint"),
                    rotated=tuple(
                        Rotated(
                            name=entry.text("name"),
                            deployed_version=entry.maybe_integer("deployed_version"),
                            current_version=entry.maybe_integer("current_version"),
                        )
                        for entry in item.objects_or_none("rotated")
                    ),
                )
            )
        return out

    # --- audit (docs/audit.md): records pass through as the broker's JSON, which is what auditors keep

    def audit_events(self, query: dict[str, str]) -> dict[str, Any]:
        """A page of audit events (`GET /v1/audit/events`)."""
        return _object(self._request("GET", "/v1/audit/events" + _query(query)), "events")

    def audit_fingerprint(self, *, value: str) -> dict[str, Any]:
        """The fingerprint of a candidate value and the events that touched it (`POST /v1/audit/fingerprint`)."""
        return _object(
            self._request("POST", "/v1/audit/fingerprint", {"value": value}, redact=(value,)), "fingerprint"
        )

    def audit_checkpoints(self, *, from_seq: int = 0) -> dict[str, Any]:
        """Signed checkpoints from `from_seq` on, and the public key (`GET /v1/audit/checkpoints`)."""
        return _object(
            self._request("GET", "/v1/audit/checkpoints" + _query({"from_seq": str(from_seq)})), "checkpoints"
        )

    def audit_export(self, query: dict[str, str], write: Callable[[bytes], object]) -> None:
        """Stream an export (`GET /v1/audit/export`) to `write`, chunk by chunk (exports can be large)."""
        import http.client

        headers = {"Accept": "application/x-ndjson, text/csv", "User-Agent": f"strongroom-cli/{__version__}"}
        if self._token is not None:
            headers["Authorization"] = f"Bearer {self._token}"
        connection = self._connect()
        try:
            connection.request(
                "GET", self._url.base_path + "/v1/audit/export" + _query(query), headers=headers
            )
            response = connection.getresponse()
            if not 200 <= response.status < 300:
                raw = response.read(MAX_RESPONSE_BYTES + 1)
                answer = Answer(response.status, response.reason, {}, raw)
                raise self._http_error(answer, ())
            while chunk := response.read(65536):
                write(chunk)
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise self._network_error(exc) from None

    # --- transport

    def _tls_context(self) -> ssl.SSLContext:
        import ssl

        try:
            # With a CA file the system store is deliberately not loaded: the user pinned a private CA.
            return ssl.create_default_context(cafile=self._ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise CliError(f"cannot load the CA file {self._ca_file}: {_reason(exc)}") from None

    def _connect(self) -> http.client.HTTPConnection:
        if self._connection is not None:
            import time

            if time.monotonic() - self._last_used < IDLE_REUSE_SECONDS:
                return self._connection
            # Servers drop idle keep-alive connections (uvicorn after 5 s); a request sent on one that
            # is being closed fails with nothing processed, so a connection idle that long is replaced.
            self.close()
        import http.client  # not at module level: `run` reads through the light path below instead

        if self._url.scheme == "https":
            self._connection = http.client.HTTPSConnection(
                self._url.host, self._url.port, timeout=self._timeout, context=self._tls_context()
            )
        else:
            self._connection = http.client.HTTPConnection(
                self._url.host, self._url.port, timeout=self._timeout
            )
        return self._connection

    def _request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        redact: tuple[str, ...] = (),
        reveal: bool = False,
        light: bool = False,
    ) -> Any:
        headers = {"Accept": "application/json", "User-Agent": f"strongroom-cli/{__version__}"}
        if self._token is not None:
            headers["Authorization"] = f"Bearer {self._token}"
        if reveal:
            headers[REVEAL_HEADER] = "1"
        payload = None
        if body is not None:
            payload = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        # One request on no open connection (what `run` makes) skips http.client, which costs start-up time.
        exchange = self._light_exchange if light and self._connection is None else self._exchange
        try:
            if self._progress is None:
                answer = exchange(method, path, payload, headers)
            else:
                with self._progress("waiting for the broker"):
                    answer = exchange(method, path, payload, headers)
        except (OSError, ProtocolError) as exc:
            self.close()
            raise self._network_error(exc) from None
        raw = answer.raw
        if len(raw) > MAX_RESPONSE_BYTES:
            self.close()
            raise CliError("the broker's response is larger than 16 MiB; refusing to read it")
        if 200 <= answer.status < 300:
            if answer.status == 204:
                return None
            try:
                return json.loads(raw)
            except ValueError:
                raise CliError(
                    f"the broker answered {method} {path} with something that is not JSON"
                ) from None
        raise self._http_error(answer, redact)

    def _exchange(self, method: str, path: str, payload: bytes | None, headers: dict[str, str]) -> Answer:
        import http.client

        connection = self._connect()
        try:
            connection.request(method, self._url.base_path + path, body=payload, headers=headers)
            response = connection.getresponse()
            raw = response.read(MAX_RESPONSE_BYTES + 1)
        except http.client.HTTPException as exc:
            raise ProtocolError(str(exc) or type(exc).__name__) from None
        import time

        self._last_used = time.monotonic()
        retry_after = response.getheader("Retry-After", "") or ""
        return Answer(response.status, response.reason, {"retry-after": retry_after}, raw)

    def _light_exchange(
        self, method: str, path: str, payload: bytes | None, headers: dict[str, str]
    ) -> Answer:
        """One HTTP/1.1 request on its own connection (`Connection: close`), read to the end."""
        import socket

        target = self._url.base_path + path
        if not target.isascii() or not target.isprintable() or " " in target:
            raise CliError("the broker URL's path has characters that a request line cannot carry")
        host = self._url.host
        port = self._url.port or (443 if self._url.scheme == "https" else 80)
        context = self._tls_context() if self._url.scheme == "https" else None
        with socket.create_connection((host, port), timeout=self._timeout) as plain:
            sock = plain if context is None else context.wrap_socket(plain, server_hostname=host)
            shown_host = f"[{host}]" if ":" in host else host
            default_port = self._url.port is None
            lines = [
                f"{method} {target} HTTP/1.1",
                f"Host: {shown_host}{'' if default_port else f':{port}'}",
                "Connection: close",
                *(f"{name}: {value}" for name, value in headers.items()),
            ]
            if payload is not None:
                lines.append(f"Content-Length: {len(payload)}")
            sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("ascii") + (payload or b""))
            chunks: list[bytes] = []
            size = 0
            while size <= MAX_RESPONSE_BYTES + 65536:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
        return parse_response(b"".join(chunks))

    def _http_error(self, answer: Answer, redact: tuple[str, ...]) -> BrokerError:
        status = answer.status
        if status == 401 and self._unauthorized_message is not None:
            return BrokerError(status, self._unauthorized_message)
        detail = _problem_detail(answer.raw)
        if detail is None:
            detail = f"the broker answered HTTP {status} {answer.reason}".rstrip()
        for secret in redact:
            # Defence in depth: the broker should never echo a value, but if it does the user must not see it.
            if secret:
                detail = detail.replace(secret, MASK)
        if status == 429:
            retry_after = answer.headers.get("retry-after", "")
            if retry_after.isdigit():
                detail = f"{detail.rstrip('.')}; try again in {retry_after} seconds"
        return BrokerError(status, detail)

    def _network_error(self, exc: BaseException) -> CliError:
        if self._url.scheme == "https":
            import ssl

            if isinstance(exc, ssl.SSLCertVerificationError):
                return CliError(
                    f"cannot verify the TLS certificate of {self._url.host} ({exc.verify_message}); "
                    "if it is signed by a private CA, set STRONGROOM_CA_FILE to that CA's certificate"
                )
        if isinstance(exc, TimeoutError):
            return CliError(f"the broker at {self.url} did not answer within {self._timeout:g} seconds")
        return CliError(f"cannot reach the broker at {self.url}: {_reason(exc)}")


# --- helpers -----------------------------------------------------------------------------------------


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    text = str(exc)
    return text if text else type(exc).__name__


def _problem_detail(raw: bytes) -> str | None:
    try:
        problem = json.loads(raw)
    except ValueError:
        return None
    if isinstance(problem, dict):
        detail = problem.get("detail")
        if isinstance(detail, str) and detail.strip():
            return detail.strip()
    return None


def _query(params: dict[str, str]) -> str:
    from urllib.parse import urlencode

    present = {k: v for k, v in params.items() if v is not None and v != ""}
    return "?" + urlencode(present, quote_via=quote) if present else ""


def _object(data: object, where: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise _unexpected(where, "is not an object")
    return data


def _segment(value: str) -> str:
    # Names are validated before they get here; quoting is what guarantees one name is one path segment.
    return quote(value, safe="")


def _project_path(project: str) -> str:
    return f"/v1/projects/{_segment(project)}"


def _env_path(project: str, environment: str) -> str:
    return f"{_project_path(project)}/environments/{_segment(environment)}"


def _secret_path(project: str, environment: str, name: str) -> str:
    return f"{_env_path(project, environment)}/secrets/{_segment(name)}"


def _unexpected(where: str, problem: str) -> CliError:
    # Only paths and types, never the offending value: it may be a secret.
    return CliError(f"the broker sent an unexpected response: {where} {problem}")


class _Reader:
    """Typed access to one JSON object of a response; errors name the field, never its value."""

    def __init__(self, data: object, where: str) -> None:
        if not isinstance(data, dict):
            raise _unexpected(where, "is not an object")
        self._data: dict[str, object] = data
        self._where = where

    def _get(self, key: str) -> object:
        if key not in self._data:
            raise _unexpected(f"{self._where}.{key}", "is missing")
        return self._data[key]

    def keys(self) -> list[str]:
        return list(self._data)

    def text(self, key: str) -> str:
        value = self._get(key)
        if not isinstance(value, str):
            raise _unexpected(f"{self._where}.{key}", "is not a string")
        return value

    def maybe_text(self, key: str) -> str | None:
        return None if self._data.get(key) is None else self.text(key)

    def integer(self, key: str) -> int:
        value = self._get(key)
        if isinstance(value, bool) or not isinstance(value, int):
            raise _unexpected(f"{self._where}.{key}", "is not an integer")
        return value

    def maybe_integer(self, key: str) -> int | None:
        return None if self._data.get(key) is None else self.integer(key)

    def flag(self, key: str) -> bool:
        value = self._get(key)
        if not isinstance(value, bool):
            raise _unexpected(f"{self._where}.{key}", "is not true or false")
        return value

    def maybe_flag(self, key: str) -> bool | None:
        return None if self._data.get(key) is None else self.flag(key)

    def child(self, key: str) -> _Reader:
        return _Reader(self._get(key), f"{self._where}.{key}")

    def _list(self, key: str) -> list[object]:
        value = self._get(key)
        if not isinstance(value, list):
            raise _unexpected(f"{self._where}.{key}", "is not a list")
        return value

    def objects(self, key: str) -> list[_Reader]:
        return [_Reader(item, f"{self._where}.{key}[{i}]") for i, item in enumerate(self._list(key))]

    def maybe_object(self, key: str) -> bool:
        """Whether `key` holds an object (False when absent or null; an error when another type)."""
        value = self._data.get(key)
        if value is None:
            return False
        if not isinstance(value, dict):
            raise _unexpected(f"{self._where}.{key}", "is not an object")
        return True

    def objects_or_none(self, key: str) -> list[_Reader]:
        return self.objects(key) if self._data.get(key) is not None else []

    def ident(self, key: str) -> str:
        """An id the broker may send as a string or an integer, as text."""
        value = self._get(key)
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise _unexpected(f"{self._where}.{key}", "is not an id")
        return str(value)

    def maybe_list(self, key: str) -> bool:
        return self._data.get(key) is not None

    def maybe_text_or_id(self, key: str) -> str | None:
        return None if self._data.get(key) is None else self.ident(key)

    def raw(self) -> dict[str, object]:
        return self._data

    def text_map(self, key: str) -> dict[str, str]:
        if self._data.get(key) is None:
            return {}
        child = self.child(key)
        return {name: child.text(name) for name in child.keys()}  # noqa: SIM118 (a _Reader)

    def texts(self, key: str) -> tuple[str, ...]:
        items = self._list(key)
        for i, item in enumerate(items):
            if not isinstance(item, str):
                raise _unexpected(f"{self._where}.{key}[{i}]", "is not a string")
        return tuple(str(item) for item in items)


def _scopes(data: _Reader) -> tuple[Scope, ...]:
    return tuple(
        Scope(
            project=scope.text("project"),
            environments=scope.text("environments"),
            actions=scope.texts("actions"),
            deny=scope.maybe_flag("deny") or False,
            keys=scope.texts("keys") if "keys" in scope.keys() else None,  # noqa: SIM118 (a reader, not a dict)
        )
        for scope in data.objects("scopes")
    )


def _identity_path(client_id: str) -> str:
    return f"/v1/identities/{_segment(client_id)}"


def _identity(data: _Reader) -> IdentityInfo:
    return IdentityInfo(
        client_id=data.text("client_id"),
        name=data.text("name"),
        kind=data.text("type"),
        scopes=_scopes(data),
        token_ttl=data.integer("token_ttl"),
        token_max_ttl=data.integer("token_max_ttl"),
        bound_cidrs=data.texts("bound_cidrs"),
        created_at=data.text("created_at"),
        disabled=data.flag("disabled"),
        deleted=data.maybe_flag("deleted") or False,
        previous_secret_expires_at=data.maybe_text("previous_secret_expires_at"),
    )


def _token_info(data: _Reader) -> TokenInfo:
    principal = data.child("principal")
    return TokenInfo(
        accessor=data.text("accessor"),
        expires_in=data.integer("expires_in"),
        expires_at=data.text("expires_at"),
        max_expires_at=data.text("max_expires_at"),
        num_uses=data.maybe_integer("num_uses"),
        bound_cidrs=data.texts("bound_cidrs"),
        scopes=_scopes(data),
        principal=Principal(
            id=principal.text("id"), type=principal.text("type"), name=principal.text("name")
        ),
        uses_remaining=data.maybe_integer("uses_remaining"),
    )


def _project(data: _Reader) -> Project:
    return Project(
        slug=data.text("slug"), description=data.text("description"), created_at=data.text("created_at")
    )


def _environment(data: _Reader) -> Environment:
    return Environment(
        slug=data.text("slug"), parent=data.maybe_text("parent"), created_at=data.text("created_at")
    )


def _problems(data: _Reader, key: str) -> tuple[Problem, ...]:
    return tuple(
        Problem(
            path=item.text("path"),
            line=item.maybe_integer("line"),
            level=item.text("level"),
            message=item.text("message"),
        )
        for item in data.objects(key)
    )


def _keys_read(data: _Reader) -> tuple[KeyRead, ...]:
    return tuple(
        KeyRead(name=item.text("name"), environment=item.text("environment"), version=item.integer("version"))
        for item in data.objects("keys")
    )


def _secret_meta(data: _Reader) -> SecretMeta:
    return SecretMeta(
        name=data.text("name"),
        version=data.integer("version"),
        sensitive=data.flag("sensitive"),
        deleted=data.flag("deleted"),
        created_at=data.text("created_at"),
        updated_at=data.text("updated_at"),
    )


def _key_refs(data: _Reader, key: str) -> tuple[KeyRef, ...]:
    return tuple(
        KeyRef(
            environment=item.text("environment"),
            name=item.text("name"),
            version=item.maybe_integer("version"),
            fingerprint=item.maybe_text("fingerprint"),
        )
        for item in data.objects_or_none(key)
    )


def _deploy_info(data: _Reader) -> DeployInfo:
    return DeployInfo(
        id=data.ident("id"),
        project=data.text("project"),
        environment=data.text("environment"),
        service=data.text("service"),
        version=data.text("version"),
        kind=data.text("kind"),
        status=data.text("status"),
        started_at=data.text("started_at"),
        finished_at=data.maybe_text("finished_at"),
        by=data.text("by"),
        hosts=tuple(
            DeployHostRecord(
                host=item.text("host"),
                role=item.text("role"),
                outcome=item.text("outcome"),
                container=item.maybe_text("container"),
                image_digest=item.maybe_text("image_digest"),
                env_fingerprint=item.maybe_text("env_fingerprint"),
                error=item.maybe_text("error"),
                at=item.maybe_text("at") or item.maybe_text("created_at"),
            )
            for item in data.objects_or_none("hosts")
        ),
        keys=_key_refs(data, "keys"),
    )


def _last_deploy(data: _Reader) -> LastDeploy:
    deploy_key = next(
        (k for k in ("deploy_id", "deploy", "id") if data.maybe_text_or_id(k) is not None), None
    )
    return LastDeploy(
        deploy_id=data.maybe_text_or_id(deploy_key) if deploy_key is not None else None,
        version=data.maybe_text("version"),
        image_digest=data.maybe_text("image_digest"),
        env_fingerprint=data.maybe_text("env_fingerprint"),
        at=data.maybe_text("at"),
        by=data.maybe_text("by"),
        outcome=data.maybe_text("outcome"),
    )


def plan_from_json(data: object) -> DeployPlan:
    """A PlanOut object (as the broker sends it) as a DeployPlan; CliError naming a bad field."""
    return _deploy_plan(_Reader(data, "plan"))


def _deploy_plan(data: _Reader) -> DeployPlan:
    registry = data.child("registry") if data.maybe_object("registry") else None
    builder = data.child("builder") if data.maybe_object("builder") else None
    health = data.child("healthcheck") if data.maybe_object("healthcheck") else None
    ssh = data.child("ssh") if data.maybe_object("ssh") else None
    host_keys: dict[str, tuple[str, ...]] = {}
    if ssh is not None and ssh.maybe_object("host_keys"):
        pinned = ssh.child("host_keys")
        host_keys = {host: pinned.texts(host) for host in pinned.keys()}  # noqa: SIM118 (a _Reader)
    return DeployPlan(
        service=data.text("service"),
        image=data.text("image"),
        version=data.text("version"),
        registry=(
            PlanRegistry(server=registry.maybe_text("server"), username=registry.text("username"))
            if registry is not None
            else None
        ),
        builder=(
            PlanBuilder(
                context=builder.maybe_text("context"),
                dockerfile=builder.maybe_text("dockerfile"),
                target=builder.maybe_text("target"),
                args=builder.text_map("args"),
                secrets=builder.texts("secrets") if builder.maybe_list("secrets") else (),
            )
            if builder is not None
            else None
        ),
        roles=tuple(
            PlanRole(
                name=role.text("name"),
                cmd=role.maybe_text("cmd"),
                options=role.text_map("options"),
                hosts=tuple(
                    PlanHost(
                        host=item.text("host"), tags=item.texts("tags") if item.maybe_list("tags") else ()
                    )
                    for item in role.objects("hosts")
                ),
            )
            for role in data.objects("roles")
        ),
        ssh=PlanSsh(
            user=ssh.maybe_text("user") if ssh is not None else None,
            port=ssh.maybe_integer("port") if ssh is not None else None,
            host_keys=host_keys,
        ),
        healthcheck=(
            PlanHealthcheck(
                path=health.maybe_text("path"),
                port=health.maybe_integer("port"),
                cmd=health.maybe_text("cmd"),
                interval=health.maybe_integer("interval") or 1,
                timeout=health.maybe_integer("timeout") or 30,
            )
            if health is not None
            else None
        ),
        retain_images=data.maybe_integer("retain_images") or 5,
        stop_timeout=data.maybe_integer("stop_timeout") or 10,
        raw=dict(data.raw()),
    )
