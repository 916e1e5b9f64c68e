"""Every route of the app, enumerated from the FastAPI route table, with valid path params and bodies."""

from __future__ import annotations

import typing
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from fastapi import routing as fastapi_routing
from pydantic import BaseModel
from starlette.routing import BaseRoute, Route


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str  # the template, e.g. /v1/projects/{project}
    params: tuple[str, ...]
    body: type[BaseModel] | None
    in_schema: bool

    def url(self, values: dict[str, str]) -> str:
        missing = [p for p in self.params if p not in values]
        assert not missing, f"{self.method} {self.path}: no test value for path params {missing}"
        return self.path.format(**{p: values[p] for p in self.params})


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
            out.append(Endpoint(method, path, params, body, in_schema))
    return out


def schema_operations(app: FastAPI) -> set[tuple[str, str]]:
    paths = app.openapi()["paths"]
    return {(m.upper(), p) for p, ops in paths.items() for m in ops}
