"""The only way the CLI talks to the broker: stdlib HTTP(S) to the routes of docs/api.md, typed results.

Transport rules: HTTPS is verified against the system CA store, or only against STRONGROOM_CA_FILE when one
is configured; plain HTTP is allowed to loopback hosts only, unless the user passes --insecure. Redirects are
never followed (http.client does not), so the token is only ever sent to the URL the user gave. Tokens and
secret values travel in headers and JSON bodies, never in a path or query.

Every non-2xx answer becomes a `BrokerError` carrying the broker's problem-JSON `detail` sentence; anything
the CLI itself sent as a secret is masked out of that sentence before anyone sees it.
"""

from __future__ import annotations

import http.client
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

from cli import __version__
from cli.errors import CliError

MAX_RESPONSE_BYTES = 16 * 1024 * 1024
TIMEOUT_SECONDS = 30.0
MASK = "********"

_TOKEN_CHARS = frozenset(chr(c) for c in range(0x21, 0x7F))


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
        self._ca_file = ca_file
        self._unauthorized_message = unauthorized_message
        self._timeout = timeout
        self._connection: http.client.HTTPConnection | None = None

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

    def renew_self(self, *, ttl: int | None = None) -> TokenInfo:
        """Extend this client's token (`POST /v1/auth/token/renew`)."""
        return _token_info(_Reader(self._request("POST", "/v1/auth/token/renew", {"ttl": ttl}), "token"))

    def revoke_self(self) -> None:
        """Revoke this client's token and its children (`POST /v1/auth/token/revoke-self`)."""
        self._request("POST", "/v1/auth/token/revoke-self", None)

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

    # --- secrets

    def list_secrets(self, *, project: str, environment: str) -> list[SecretMeta]:
        """The secrets of an environment, without values."""
        data = _Reader(self._request("GET", f"{_env_path(project, environment)}/secrets"), "response")
        return [_secret_meta(item) for item in data.objects("secrets")]

    def get_secret(self, *, project: str, environment: str, name: str, version: int | None = None) -> Secret:
        """Read one secret's value, the current version unless `version` is given."""
        path = _secret_path(project, environment, name)
        if version is not None:
            path += f"?version={int(version)}"
        data = _Reader(self._request("GET", path), "secret")
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

    def resolved(self, *, project: str, environment: str) -> Resolved:
        """Every value an environment sees, inheritance applied, in one round trip."""
        data = _Reader(self._request("GET", f"{_env_path(project, environment)}/resolved"), "resolved")
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

    # --- transport

    def _connect(self) -> http.client.HTTPConnection:
        if self._connection is not None:
            return self._connection
        if self._url.scheme == "https":
            import ssl

            try:
                # With a CA file the system store is deliberately not loaded: the user pinned a private CA.
                context = ssl.create_default_context(cafile=self._ca_file)
            except (OSError, ssl.SSLError) as exc:
                raise CliError(f"cannot load the CA file {self._ca_file}: {_reason(exc)}") from None
            self._connection = http.client.HTTPSConnection(
                self._url.host, self._url.port, timeout=self._timeout, context=context
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
    ) -> Any:
        headers = {"Accept": "application/json", "User-Agent": f"strongroom-cli/{__version__}"}
        if self._token is not None:
            headers["Authorization"] = f"Bearer {self._token}"
        payload = None
        if body is not None:
            payload = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        connection = self._connect()
        try:
            connection.request(method, self._url.base_path + path, body=payload, headers=headers)
            response = connection.getresponse()
            raw = response.read(MAX_RESPONSE_BYTES + 1)
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise self._network_error(exc) from None
        if len(raw) > MAX_RESPONSE_BYTES:
            self.close()
            raise CliError("the broker's response is larger than 16 MiB; refusing to read it")
        if 200 <= response.status < 300:
            if response.status == 204:
                return None
            try:
                return json.loads(raw)
            except ValueError:
                raise CliError(
                    f"the broker answered {method} {path} with something that is not JSON"
                ) from None
        raise self._http_error(response, raw, redact)

    def _http_error(
        self, response: http.client.HTTPResponse, raw: bytes, redact: tuple[str, ...]
    ) -> BrokerError:
        status = response.status
        if status == 401 and self._unauthorized_message is not None:
            return BrokerError(status, self._unauthorized_message)
        detail = _problem_detail(raw)
        if detail is None:
            detail = f"the broker answered HTTP {status} {response.reason}".rstrip()
        for secret in redact:
            # Defence in depth: the broker should never echo a value, but if it does the user must not see it.
            if secret:
                detail = detail.replace(secret, MASK)
        if status == 429:
            retry_after = response.getheader("Retry-After", "")
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

    def child(self, key: str) -> _Reader:
        return _Reader(self._get(key), f"{self._where}.{key}")

    def _list(self, key: str) -> list[object]:
        value = self._get(key)
        if not isinstance(value, list):
            raise _unexpected(f"{self._where}.{key}", "is not a list")
        return value

    def objects(self, key: str) -> list[_Reader]:
        return [_Reader(item, f"{self._where}.{key}[{i}]") for i, item in enumerate(self._list(key))]

    def texts(self, key: str) -> tuple[str, ...]:
        items = self._list(key)
        for i, item in enumerate(items):
            if not isinstance(item, str):
                raise _unexpected(f"{self._where}.{key}[{i}]", "is not a string")
        return tuple(str(item) for item in items)


def _token_info(data: _Reader) -> TokenInfo:
    principal = data.child("principal")
    return TokenInfo(
        accessor=data.text("accessor"),
        expires_in=data.integer("expires_in"),
        expires_at=data.text("expires_at"),
        max_expires_at=data.text("max_expires_at"),
        num_uses=data.maybe_integer("num_uses"),
        bound_cidrs=data.texts("bound_cidrs"),
        scopes=tuple(
            Scope(
                project=scope.text("project"),
                environments=scope.text("environments"),
                actions=scope.texts("actions"),
            )
            for scope in data.objects("scopes")
        ),
        principal=Principal(
            id=principal.text("id"), type=principal.text("type"), name=principal.text("name")
        ),
    )


def _project(data: _Reader) -> Project:
    return Project(
        slug=data.text("slug"), description=data.text("description"), created_at=data.text("created_at")
    )


def _environment(data: _Reader) -> Environment:
    return Environment(
        slug=data.text("slug"), parent=data.maybe_text("parent"), created_at=data.text("created_at")
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
