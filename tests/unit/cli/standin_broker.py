"""A stand-in for the Strongroom broker, used only by the CLI unit tests.

It serves just the routes of docs/api.md that the CLI calls, from in-memory state, over plain HTTP on
127.0.0.1 (port 0) in a background thread, and records every request so tests can check what went over the
wire. It is not the broker and proves nothing about it: end-to-end tests of the CLI against the real broker
live in tests/e2e.
"""

from __future__ import annotations

import json
import re
import secrets
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

EPOCH = datetime(2030, 1, 1, tzinfo=UTC)
CREATED = "2030-01-01T00:00:00Z"


@dataclass
class Recorded:
    """One request as the stand-in received it."""

    method: str
    target: str
    authorization: str | None
    body: Any
    reveal: str | None = None  # the X-Strongroom-Reveal header, if sent


@dataclass
class Client:
    """An identity that can log in."""

    secret: str
    principal: dict[str, str]
    actions: tuple[str, ...]


@dataclass
class IssuedToken:
    """A token the stand-in handed out."""

    token: str
    accessor: str
    client: Client
    expires_in: int
    max_ttl: int
    revoked: bool = False
    scopes: list[dict[str, Any]] | None = None
    num_uses: int | None = None
    bound_cidrs: list[str] = field(default_factory=list)


@dataclass
class Version:
    """One stored version of a secret."""

    value: str
    sensitive: bool
    deleted: bool = False
    destroyed: bool = False
    author: str = "alice"


@dataclass
class Override:
    """A canned answer for one method and path, served instead of the normal route."""

    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes | None = None


class Problem(Exception):
    """An error answer in problem-JSON form."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class StandinBroker:
    """In-memory state and the routes over it."""

    def __init__(self) -> None:
        self.clients: dict[str, Client] = {}
        self.tokens: dict[str, IssuedToken] = {}
        self.projects: dict[str, dict[str, Any]] = {}
        self.environments: dict[tuple[str, str], dict[str, Any]] = {}
        self.secrets: dict[tuple[str, str, str], list[Version]] = {}
        self.requests: list[Recorded] = []
        self.overrides: dict[tuple[str, str], Override] = {}
        self.token_ttl = 900
        self.max_ttl = 8 * 3600
        self.renew_ttl = 900
        self.echo_values_in_errors = False
        self.identities: dict[str, dict[str, Any]] = {}
        self.oidc_tokens: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._scheme = "http"
        self._thread: threading.Thread | None = None

    # --- set-up helpers for tests

    def add_client(
        self,
        client_id: str,
        secret: str,
        *,
        name: str = "alice",
        actions: tuple[str, ...] = ("read", "write", "admin"),
    ) -> None:
        """Register an identity."""
        self.clients[client_id] = Client(
            secret=secret, principal={"id": f"id-{client_id}", "type": "user", "name": name}, actions=actions
        )

    def issue(self, client_id: str) -> str:
        """Mint a token directly (what CI would have in STRONGROOM_TOKEN)."""
        return self._issue(self.clients[client_id], ttl=None).token

    def add_project(self, slug: str, description: str = "") -> None:
        """Create a project."""
        self.projects[slug] = {"slug": slug, "description": description, "created_at": CREATED}

    def add_environment(self, project: str, slug: str, parent: str | None = None) -> None:
        """Create an environment."""
        self.environments[(project, slug)] = {"slug": slug, "parent": parent, "created_at": CREATED}

    def put(self, project: str, environment: str, name: str, value: str, *, sensitive: bool = True) -> None:
        """Store a version of a secret."""
        self.secrets.setdefault((project, environment, name), []).append(Version(value, sensitive))

    def override(self, method: str, path: str, status: int, body: Any = None, **kwargs: Any) -> None:
        """Answer `method path` with a canned response from now on."""
        self.overrides[(method, path)] = Override(status, body, **kwargs)

    def revoke_all(self) -> None:
        """Make every token unusable, as expiry or an admin would."""
        for issued in self.tokens.values():
            issued.revoked = True

    def calls(self, method: str | None = None, path: str | None = None) -> list[Recorded]:
        """Recorded requests, optionally only those for `method` and/or path (without query)."""
        with self._lock:
            found = list(self.requests)
        return [
            r
            for r in found
            if (method is None or r.method == method) and (path is None or urlsplit(r.target).path == path)
        ]

    # --- server

    @property
    def url(self) -> str:
        """Base URL of the running stand-in."""
        assert self._server is not None
        host, port = self._server.server_address[:2]
        assert isinstance(host, str)
        return f"{self._scheme}://{host}:{port}"

    def start(self, *, tls: ssl.SSLContext | None = None) -> None:
        """Serve in a daemon thread on 127.0.0.1, on a port the OS picks; over TLS if given a server context."""
        broker = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                broker._handle(self)

            do_POST = do_PUT = do_DELETE = do_PATCH = do_GET

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._scheme = "http"
        if tls is not None:
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True)
            self._scheme = "https"
        # A short poll interval only makes stop() return sooner; nothing waits on it for correctness.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and wait for the serving thread to end."""
        assert self._server is not None and self._thread is not None
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    # --- request handling

    def _handle(self, request: BaseHTTPRequestHandler) -> None:
        length = int(request.headers.get("Content-Length") or 0)
        raw = request.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        with self._lock:
            self.requests.append(
                Recorded(
                    request.command,
                    request.path,
                    request.headers.get("Authorization"),
                    body,
                    request.headers.get("X-Strongroom-Reveal"),
                )
            )
        path = urlsplit(request.path).path
        override = self.overrides.get((request.command, path))
        if override is not None:
            if override.raw is not None:
                self._send_raw(request, override.status, override.raw, "text/plain", override.headers)
            else:
                self._send(request, override.status, override.body, override.headers)
            return
        try:
            status, answer = self._route(
                request.command, request.path, request.headers.get("Authorization"), body
            )
        except Problem as problem:
            self._send(
                request,
                problem.status,
                {"type": "about:blank", "title": "Error", "status": problem.status, "detail": problem.detail},
            )
            return
        self._send(request, status, answer)

    def _send(
        self, request: BaseHTTPRequestHandler, status: int, body: Any, headers: dict[str, str] | None = None
    ) -> None:
        if status == 204:
            self._send_raw(request, status, b"", None, headers or {})
            return
        content_type = "application/json" if status < 400 else "application/problem+json"
        self._send_raw(request, status, json.dumps(body).encode(), content_type, headers or {})

    @staticmethod
    def _send_raw(
        request: BaseHTTPRequestHandler,
        status: int,
        data: bytes,
        content_type: str | None,
        headers: dict[str, str],
    ) -> None:
        request.send_response(status)
        if content_type:
            request.send_header("Content-Type", content_type)
        request.send_header("Content-Length", str(len(data)))
        request.send_header("Cache-Control", "no-store")
        for name, value in headers.items():
            request.send_header(name, value)
        request.end_headers()
        request.wfile.write(data)

    def _route(self, method: str, target: str, authorization: str | None, body: Any) -> tuple[int, Any]:
        parts = urlsplit(target)
        path, query = parts.path, parse_qs(parts.query)
        if (method, path) == ("POST", "/v1/auth/token"):
            return self._login(body)
        if (method, path) == ("POST", "/v1/auth/oidc"):
            return self._oidc_login(body)
        issued = self._authenticate(authorization)
        for route_method, pattern, handler in self._routes():
            match = re.fullmatch(pattern, path)
            if match and route_method == method:
                args = [unquote(group) for group in match.groups()]
                return handler(issued, body, query, *args)
        raise Problem(404, f"no route for {method} {path}")

    def _routes(self) -> list[tuple[str, str, Callable[..., tuple[int, Any]]]]:
        seg = r"([^/]+)"
        base = rf"/v1/projects/{seg}/environments/{seg}"
        return [
            ("POST", r"/v1/auth/token/renew", self._renew),
            ("POST", r"/v1/auth/token/revoke-self", self._revoke_self),
            ("GET", r"/v1/projects", self._list_projects),
            ("POST", r"/v1/projects", self._create_project),
            ("GET", rf"/v1/projects/{seg}/environments", self._list_environments),
            ("POST", rf"/v1/projects/{seg}/environments", self._create_environment),
            ("GET", rf"{base}/secrets", self._list_secrets),
            ("GET", rf"{base}/secrets/{seg}", self._get_secret),
            ("PUT", rf"{base}/secrets/{seg}", self._put_secret),
            ("DELETE", rf"{base}/secrets/{seg}", self._delete_secret),
            ("GET", rf"{base}/secrets/{seg}/versions", self._history),
            ("POST", rf"{base}/secrets/{seg}/rollback", self._rollback),
            ("GET", rf"{base}/resolved", self._resolved),
            ("POST", rf"{base}/secrets/{seg}/generate", self._generate),
            ("POST", r"/v1/tokens", self._create_token),
            ("GET", r"/v1/tokens", self._list_tokens),
            ("POST", r"/v1/tokens/revoke", self._revoke_token),
            ("DELETE", rf"/v1/projects/{seg}", self._delete_project),
            ("PATCH", rf"/v1/projects/{seg}/environments/{seg}", self._set_parent),
            ("DELETE", rf"/v1/projects/{seg}/environments/{seg}", self._delete_environment),
            ("POST", rf"{base}/secrets/{seg}/undelete", self._undelete_secret),
            ("POST", rf"{base}/secrets/{seg}/versions/(\d+)/destroy", self._destroy_version),
            ("POST", r"/v1/identities", self._create_identity),
            ("GET", r"/v1/identities", self._list_identities),
            ("GET", rf"/v1/identities/{seg}", self._show_identity),
            ("POST", rf"/v1/identities/{seg}/disable", self._disable_identity),
            ("POST", rf"/v1/identities/{seg}/enable", self._enable_identity),
            ("POST", rf"/v1/identities/{seg}/rotate-secret", self._rotate_secret),
            ("DELETE", rf"/v1/identities/{seg}", self._delete_identity),
        ]

    # --- auth

    def _issue(self, client: Client, ttl: int | None) -> IssuedToken:
        issued = IssuedToken(
            token=f"srt_{secrets.token_urlsafe(32)}",
            accessor=f"sra_{secrets.token_urlsafe(12)}",
            client=client,
            expires_in=min(ttl or self.token_ttl, self.max_ttl),
            max_ttl=self.max_ttl,
        )
        self.tokens[issued.token] = issued
        return issued

    def _token_info(self, issued: IssuedToken) -> dict[str, Any]:
        return {
            "accessor": issued.accessor,
            "expires_in": issued.expires_in,
            "expires_at": _iso(EPOCH + timedelta(seconds=issued.expires_in)),
            "max_expires_at": _iso(EPOCH + timedelta(seconds=issued.max_ttl)),
            "num_uses": issued.num_uses,
            "uses_remaining": issued.num_uses,
            "bound_cidrs": issued.bound_cidrs,
            "scopes": issued.scopes
            or [{"project": "*", "environments": "*", "actions": list(issued.client.actions), "deny": False}],
            "principal": issued.client.principal,
        }

    def _login(self, body: Any) -> tuple[int, Any]:
        client = self.clients.get(str(body.get("client_id"))) if isinstance(body, dict) else None
        if client is None or not secrets.compare_digest(str(body.get("client_secret")), client.secret):
            raise Problem(401, "authentication failed")
        issued = self._issue(client, body.get("ttl"))
        return 200, {"token": issued.token, **self._token_info(issued)}

    def _oidc_login(self, body: Any) -> tuple[int, Any]:
        # The stand-in trusts an ID token listed in `oidc_tokens` (role, token) -> principal name.
        name = self.oidc_tokens.get((str(body.get("role")), str(body.get("jwt"))))
        if name is None:
            raise Problem(401, "authentication failed")
        client = Client(
            secret="", principal={"id": f"id-{name}", "type": "machine", "name": name}, actions=("read",)
        )
        issued = self._issue(client, None)
        return 200, {"token": issued.token, **self._token_info(issued)}

    def _authenticate(self, authorization: str | None) -> IssuedToken:
        token = (authorization or "").removeprefix("Bearer ")
        issued = self.tokens.get(token)
        if issued is None or issued.revoked:
            raise Problem(401, "authentication failed")
        return issued

    def _require(self, issued: IssuedToken, action: str) -> None:
        if action not in issued.client.actions:
            raise Problem(403, f"the token's scopes do not grant {action}")

    def _renew(self, issued: IssuedToken, body: Any, query: Any) -> tuple[int, Any]:
        issued.expires_in = min(self.renew_ttl, issued.max_ttl)
        return 200, self._token_info(issued)

    def _revoke_self(self, issued: IssuedToken, body: Any, query: Any) -> tuple[int, Any]:
        issued.revoked = True
        return 204, None

    # --- projects and environments

    def _project(self, slug: str) -> dict[str, Any]:
        if slug not in self.projects:
            raise Problem(404, f"projects/{slug}: not found")
        return self.projects[slug]

    def _environment(self, project: str, slug: str) -> dict[str, Any]:
        self._project(project)
        if (project, slug) not in self.environments:
            raise Problem(404, f"projects/{project}/environments/{slug}: not found")
        return self.environments[(project, slug)]

    def _list_projects(self, issued: IssuedToken, body: Any, query: Any) -> tuple[int, Any]:
        return 200, {"projects": list(self.projects.values())}

    def _create_project(self, issued: IssuedToken, body: Any, query: Any) -> tuple[int, Any]:
        self._require(issued, "admin")
        slug = body["slug"]
        if slug in self.projects:
            raise Problem(409, f"projects/{slug}: already exists")
        self.add_project(slug, body.get("description", ""))
        return 201, self.projects[slug]

    def _list_environments(self, issued: IssuedToken, body: Any, query: Any, project: str) -> tuple[int, Any]:
        self._project(project)
        return 200, {"environments": [e for (p, _), e in self.environments.items() if p == project]}

    def _create_environment(
        self, issued: IssuedToken, body: Any, query: Any, project: str
    ) -> tuple[int, Any]:
        self._require(issued, "admin")
        self._project(project)
        if body.get("parent") is not None:
            self._environment(project, body["parent"])
        self.add_environment(project, body["slug"], body.get("parent"))
        return 201, self.environments[(project, body["slug"])]

    def _delete_project(self, issued: IssuedToken, body: Any, query: Any, project: str) -> tuple[int, Any]:
        self._require(issued, "admin")
        self._project(project)
        if any(p == project for p, _ in self.environments):
            raise Problem(409, f"projects/{project}: delete its environments first")
        del self.projects[project]
        return 204, None

    def _set_parent(
        self, issued: IssuedToken, body: Any, query: Any, project: str, env: str
    ) -> tuple[int, Any]:
        self._require(issued, "admin")
        environment = self._environment(project, env)
        if body.get("parent") is not None:
            self._environment(project, body["parent"])
        environment["parent"] = body.get("parent")
        return 200, environment

    def _delete_environment(
        self, issued: IssuedToken, body: Any, query: Any, project: str, env: str
    ) -> tuple[int, Any]:
        self._require(issued, "admin")
        self._environment(project, env)
        children = any(p == project and e["parent"] == env for (p, _), e in self.environments.items())
        if children or any((p, e) == (project, env) for p, e, _ in self.secrets):
            raise Problem(
                409, f"projects/{project}/environments/{env}: still has secrets or inheriting environments"
            )
        del self.environments[(project, env)]
        return 204, None

    # --- secrets

    def _meta(self, name: str, versions: list[Version]) -> dict[str, Any]:
        current = versions[-1]
        return {
            "name": name,
            "version": len(versions),
            "sensitive": current.sensitive,
            "deleted": current.deleted,
            "created_at": CREATED,
            "updated_at": CREATED,
        }

    def _versions(self, project: str, environment: str, name: str) -> list[Version]:
        self._environment(project, environment)
        versions = self.secrets.get((project, environment, name))
        if not versions or versions[-1].deleted:
            raise Problem(404, f"environments/{environment}/secrets/{name}: not found")
        return versions

    def _list_secrets(
        self, issued: IssuedToken, body: Any, query: Any, project: str, env: str
    ) -> tuple[int, Any]:
        self._environment(project, env)
        items = [
            self._meta(name, versions)
            for (p, e, name), versions in self.secrets.items()
            if (p, e) == (project, env) and not versions[-1].deleted
        ]
        return 200, {"secrets": items}

    def _get_secret(
        self, issued: IssuedToken, body: Any, query: Any, project: str, env: str, name: str
    ) -> tuple[int, Any]:
        self._require(issued, "read")
        versions = self._versions(project, env, name)
        number = int(query["version"][0]) if "version" in query else len(versions)
        if not 1 <= number <= len(versions):
            raise Problem(404, f"environments/{env}/secrets/{name}: no version {number}")
        version = versions[number - 1]
        return 200, {
            "name": name,
            "value": version.value,
            "version": number,
            "sensitive": version.sensitive,
            "environment": env,
            "created_at": CREATED,
        }

    def _put_secret(
        self, issued: IssuedToken, body: Any, query: Any, project: str, env: str, name: str
    ) -> tuple[int, Any]:
        self._require(issued, "write")
        self._environment(project, env)
        versions = self.secrets.get((project, env, name), [])
        cas = body.get("cas")
        if cas is not None and cas != len(versions):
            detail = f"environments/{env}/secrets/{name}: cas {cas} does not match the current version {len(versions)}"
            if self.echo_values_in_errors:
                detail += f" (value {body['value']})"
            raise Problem(409, detail)
        self.put(project, env, name, body["value"], sensitive=body.get("sensitive", True))
        return 200, self._meta(name, self.secrets[(project, env, name)])

    def _delete_secret(
        self, issued: IssuedToken, body: Any, query: Any, project: str, env: str, name: str
    ) -> tuple[int, Any]:
        self._require(issued, "write")
        self._versions(project, env, name)[-1].deleted = True
        return 204, None

    def _undelete_secret(
        self, issued: IssuedToken, body: Any, query: Any, project: str, env: str, name: str
    ) -> tuple[int, Any]:
        self._require(issued, "write")
        versions = self.secrets.get((project, env, name))
        if not versions or not versions[-1].deleted:
            raise Problem(404, f"environments/{env}/secrets/{name}: nothing to undelete")
        versions[-1].deleted = False
        return 200, self._meta(name, versions)

    def _destroy_version(
        self, issued: IssuedToken, body: Any, query: Any, project: str, env: str, name: str, number: str
    ) -> tuple[int, Any]:
        self._require(issued, "write")
        versions = self._versions(project, env, name)
        if not 1 <= int(number) <= len(versions):
            raise Problem(404, f"environments/{env}/secrets/{name}: no version {number}")
        versions[int(number) - 1].destroyed = True
        versions[int(number) - 1].value = ""
        return 204, None

    def _history(
        self, issued: IssuedToken, body: Any, query: Any, project: str, env: str, name: str
    ) -> tuple[int, Any]:
        versions = self._versions(project, env, name)
        return 200, {
            "name": name,
            "current_version": len(versions),
            "versions": [
                {
                    "version": i + 1,
                    "created_at": CREATED,
                    "author": v.author,
                    "deleted": v.deleted,
                    "destroyed": v.destroyed,
                }
                for i, v in enumerate(versions)
            ],
        }

    def _rollback(
        self, issued: IssuedToken, body: Any, query: Any, project: str, env: str, name: str
    ) -> tuple[int, Any]:
        self._require(issued, "write")
        versions = self._versions(project, env, name)
        number = body["version"]
        if not 1 <= number <= len(versions):
            raise Problem(404, f"environments/{env}/secrets/{name}: no version {number}")
        old = versions[number - 1]
        self.put(project, env, name, old.value, sensitive=old.sensitive)
        return 200, self._meta(name, versions)

    def _resolved(
        self, issued: IssuedToken, body: Any, query: Any, project: str, env: str
    ) -> tuple[int, Any]:
        self._require(issued, "read")
        chain = []
        current: str | None = env
        while current is not None:
            chain.append(current)
            current = self._environment(project, current)["parent"]
        values: dict[str, Any] = {}
        for source in reversed(chain):  # nearest environment applied last, so it wins
            for (p, e, name), versions in self.secrets.items():
                if (p, e) == (project, source) and not versions[-1].deleted:
                    values[name] = {
                        "value": versions[-1].value,
                        "version": len(versions),
                        "environment": source,
                        "sensitive": versions[-1].sensitive,
                    }
        return 200, {"project": project, "environment": env, "values": values}

    # --- generate and tokens (issue 5)

    def _generate(
        self, issued: IssuedToken, body: Any, query: Any, project: str, env: str, name: str
    ) -> tuple[int, Any]:
        self._require(issued, "write")
        self._environment(project, env)
        versions = self.secrets.get((project, env, name))
        if versions and not body.get("rotate"):
            return 200, {"generated": False, "rotated": False, "secret": self._meta(name, versions)}
        self.put(project, env, name, secrets.token_hex(body.get("bytes", 64)))
        return 200, {
            "generated": True,
            "rotated": bool(versions),
            "secret": self._meta(name, self.secrets[(project, env, name)]),
        }

    def _create_token(self, issued: IssuedToken, body: Any, query: Any) -> tuple[int, Any]:
        child = self._issue(issued.client, body.get("ttl"))
        # Like the broker: a child never outlives its parent.
        child.expires_in = min(child.expires_in, issued.expires_in)
        child.scopes = body.get("scopes")
        child.num_uses = body.get("num_uses")
        child.bound_cidrs = body.get("bound_cidrs") or []
        return 201, {"token": child.token, **self._token_info(child)}

    def _list_tokens(self, issued: IssuedToken, body: Any, query: Any) -> tuple[int, Any]:
        self._require(issued, "admin")
        items = [
            {**self._token_info(t), "created_at": CREATED, "revoked": t.revoked}
            for t in reversed(list(self.tokens.values()))
            if query.get("include_inactive") == ["true"] or not t.revoked
        ]
        return 200, {"tokens": items[: int(query.get("limit", ["200"])[0])]}

    def _revoke_token(self, issued: IssuedToken, body: Any, query: Any) -> tuple[int, Any]:
        self._require(issued, "admin")
        for t in self.tokens.values():
            if t.accessor == body.get("accessor"):
                t.revoked = True
                return 204, None
        raise Problem(404, "accessor: no token has this accessor")

    # --- identities (the broker's rules that the CLI relies on; client secrets kept only to log in with)

    def _identity(self, client_id: str) -> dict[str, Any]:
        if client_id not in self.identities:
            raise Problem(404, "client_id: no identity has this client id")
        return self.identities[client_id]

    def _create_identity(self, issued: IssuedToken, body: Any, query: Any) -> tuple[int, Any]:
        self._require(issued, "admin")
        client_id = body.get("client_id") or f"sri_{secrets.token_hex(12)}"
        if client_id in self.identities or client_id in self.clients:
            raise Problem(409, f"client_id: {client_id} is taken")
        secret = f"srs_{secrets.token_urlsafe(32)}"
        actions = tuple(a for scope in body.get("scopes", []) for a in scope.get("actions", []))
        self.clients[client_id] = Client(
            secret=secret,
            principal={"id": f"id-{client_id}", "type": body["type"], "name": body["name"]},
            actions=actions,
        )
        self.identities[client_id] = {
            "id": f"id-{client_id}",
            "name": body["name"],
            "type": body["type"],
            "client_id": client_id,
            "scopes": body.get("scopes", []),
            "token_ttl": body.get("token_ttl") or self.token_ttl,
            "token_max_ttl": body.get("token_max_ttl") or self.max_ttl,
            "bound_cidrs": body.get("bound_cidrs", []),
            "created_at": CREATED,
            "disabled": False,
            "deleted": False,
            "previous_secret_expires_at": None,
        }
        return 201, {**self.identities[client_id], "client_secret": secret}

    def _list_identities(self, issued: IssuedToken, body: Any, query: Any) -> tuple[int, Any]:
        self._require(issued, "admin")
        everything = query.get("include_deleted") == ["true"]
        return 200, {"identities": [i for i in self.identities.values() if everything or not i["deleted"]]}

    def _show_identity(self, issued: IssuedToken, body: Any, query: Any, client_id: str) -> tuple[int, Any]:
        self._require(issued, "admin")
        return 200, self._identity(client_id)

    def _disable_identity(
        self, issued: IssuedToken, body: Any, query: Any, client_id: str
    ) -> tuple[int, Any]:
        self._require(issued, "admin")
        self._identity(client_id)["disabled"] = True
        return 200, self._identity(client_id)

    def _enable_identity(self, issued: IssuedToken, body: Any, query: Any, client_id: str) -> tuple[int, Any]:
        self._require(issued, "admin")
        ident = self._identity(client_id)
        if ident["deleted"]:
            raise Problem(409, "client_id: this identity is deleted and cannot be enabled; create a new one")
        ident["disabled"] = False
        return 200, ident

    def _delete_identity(self, issued: IssuedToken, body: Any, query: Any, client_id: str) -> tuple[int, Any]:
        self._require(issued, "admin")
        self._identity(client_id).update(disabled=True, deleted=True)
        return 204, None

    def _rotate_secret(self, issued: IssuedToken, body: Any, query: Any, client_id: str) -> tuple[int, Any]:
        self._require(issued, "admin")
        ident = self._identity(client_id)
        grace = body.get("grace")
        until = _iso(EPOCH + timedelta(seconds=grace)) if grace else None
        ident["previous_secret_expires_at"] = until
        self.clients[client_id].secret = secret = f"srs_{secrets.token_urlsafe(32)}"
        return 200, {"client_id": client_id, "client_secret": secret, "previous_secret_valid_until": until}


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
