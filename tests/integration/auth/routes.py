"""Every route of the app, enumerated from the FastAPI route table, with valid path params and bodies."""

from __future__ import annotations

import typing
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx
from fastapi import FastAPI
from fastapi import routing as fastapi_routing
from pydantic import BaseModel
from starlette.routing import BaseRoute, Route

from tests.integration.auth.conftest import Broker, Login, bearer


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str  # the template, e.g. /v1/projects/{project}
    params: tuple[str, ...]
    body: type[BaseModel] | None
    in_schema: bool
    query: tuple[str, ...] = ()  # required query parameters

    def url(self, values: dict[str, str]) -> str:
        missing = [p for p in (*self.params, *self.query) if p not in values]
        assert not missing, f"{self.method} {self.path}: no test value for parameters {missing}"
        url = self.path.format(**{p: values[p] for p in self.params})
        if self.query:
            url += "?" + urlencode({q: values[q] for q in self.query})
        return url


def _flat(routes: list[BaseRoute]) -> Iterator[Any]:
    """Routes with included routers expanded (newer FastAPI keeps included routers lazily)."""
    iterate = getattr(fastapi_routing, "iter_route_contexts", None)
    if iterate is not None:
        yield from iterate(routes)
        return
    yield from routes


def _body_model(endpoint: Any) -> type[BaseModel] | None:
    hints = typing.get_type_hints(endpoint, include_extras=True)
    found = []
    for name, hint in hints.items():
        if name == "return":
            continue
        base = typing.get_args(hint)[0] if typing.get_origin(hint) is typing.Annotated else hint
        if isinstance(base, type) and issubclass(base, BaseModel):
            found.append(base)
    assert len(found) <= 1, f"{endpoint.__name__}: more than one body model {found}"
    return found[0] if found else None


def endpoints(app: FastAPI) -> list[Endpoint]:
    schema_paths = app.openapi()["paths"]
    out: list[Endpoint] = []
    for route in _flat(list(app.routes)):
        path = route.path
        methods = route.methods
        assert isinstance(path, str) and methods, f"unsupported route type {route!r} (a mount or websocket?)"
        original = getattr(route, "original_route", route)
        if not isinstance(original, Route | fastapi_routing.APIRoute):
            raise AssertionError(f"unsupported route type {type(original).__name__} at {path}")
        params = tuple(route.param_convertors)
        in_schema = bool(getattr(route, "include_in_schema", True))
        body = _body_model(route.endpoint) if isinstance(original, fastapi_routing.APIRoute) else None
        for method in sorted(methods):
            operation = schema_paths.get(path, {}).get(method.lower(), {})
            query = tuple(
                p["name"]
                for p in operation.get("parameters", [])
                if p.get("in") == "query" and p.get("required")
            )
            out.append(Endpoint(method, path, params, body, in_schema, query))
    return out


def schema_operations(app: FastAPI) -> set[tuple[str, str]]:
    paths = app.openapi()["paths"]
    return {(m.upper(), p) for p, ops in paths.items() for m in ops}


def app_of(broker: Broker) -> FastAPI:
    app = broker.client.app.app  # type: ignore[attr-defined]  # create_app returns Edge(FastAPI)
    assert isinstance(app, FastAPI)
    return app


DEPLOY_MANIFEST = (
    "service: web\nimage: acme/web\nroles:\n  web:\n    hosts: [web1]\nenv:\n  secret: [API_KEY]\n"
)


def example_bodies(login: Login, accessor: str) -> dict[str, dict[str, Any]]:
    """A valid body for each request model (validated below, so a changed model fails loudly)."""
    return {
        "TokenRequest": {"client_id": login.client_id, "client_secret": login.client_secret},
        "RenewRequest": {},
        "ChildTokenRequest": {},
        "AccessorRequest": {"accessor": accessor},
        "IdentityRequest": {"name": "sneaky", "type": "machine", "scopes": []},
        "RotateSecretRequest": {"grace": 60},
        "OidcLoginRequest": {"role": "deploy", "jwt": "not.a.token"},
        "ProjectCreate": {"slug": "gamma"},
        "ProjectUpdate": {"description": "changed"},
        "EnvironmentCreate": {"slug": "staging", "parent": "prod"},
        "EnvironmentUpdate": {"parent": None},
        "SecretWrite": {"value": "overwritten"},
        "RollbackRequest": {"version": 1},
        "GenerateRequest": {"bytes": 32, "format": "hex", "rotate": True},
        "CompileRequest": {"manifest": "service: web\n", "targets": ["dotenv"]},
        "CheckRequest": {"manifest": "service: web\n", "targets": ["dotenv"]},
        "ValuesRequest": {"names": ["API_KEY"]},
        "ImportRequest": {"source": "vault://secret/myapp/production", "dry_run": True},
        "DeployRequest": {"manifest": DEPLOY_MANIFEST, "version": "v1"},
        "DeployHostReport": {"host": "web1", "role": "web", "outcome": "deployed"},
        "DeployFinish": {"outcome": "succeeded"},
        "DeployStatusRequest": {"manifest": DEPLOY_MANIFEST},
    }


def body_for(ep: Endpoint, bodies: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    if ep.body is None:
        return None
    name = ep.body.__name__
    assert name in bodies, (
        f"{ep.method} {ep.path}: add a valid example body for {name} to example_bodies() in {__file__}"
    )
    model: type[BaseModel] = ep.body
    model.model_validate(bodies[name])
    return bodies[name]


def call(broker: Broker, ep: Endpoint, values: dict[str, str], token: str, body: Any) -> httpx.Response:
    r: httpx.Response = broker.client.request(
        ep.method, ep.url(values), json=body, headers=bearer(token) if token else {}
    )
    return r


# Path parameters, then required query parameters (`a`, `b`: the environments of GET .../diff).
EXISTING = {
    "project": "alpha",
    "environment": "prod",
    "name": "API_KEY",
    "version": "1",
    "client_id": "admin",
    "a": "common",
    "b": "prod",
    "deploy_id": "7d3f5c9e-0b1a-4c2d-9e8f-1a2b3c4d5e6f",
}
MISSING = {
    "project": "ghost",
    "environment": "nowhere",
    "name": "NOPE",
    "version": "7",
    "client_id": "sri_nobody",
    "a": "nowhere",
    "b": "nothere",
    "deploy_id": "00000000-0000-4000-8000-000000000000",
}
