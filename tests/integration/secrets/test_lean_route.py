"""Every route runs through `LeanRoute` (broker/api/routes/lean.py), whose parameter handling is planned
when the route is built. FastAPI's own handler still runs whenever the app has a dependency override, so
each request below is sent twice, planned and through FastAPI's handler, and the answers (status, body,
the audit event's reason) must be the same: good parameters, bad ones (the 400 problem naming the
field), missing ones, repeated ones and defaults."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute

from broker.api.routes import lean
from broker.api.routes import secrets as secret_routes
from tests.integration.secrets.conftest import Api, Reply, random_value


def _fastapi(api: Api) -> FastAPI:
    app = api.client.app
    while not isinstance(app, FastAPI):
        app = app.app  # type: ignore[attr-defined]
    return app


async def _never_called() -> None:
    """An override for a dependency no route declares: only its presence matters."""


def _both(api: Api, method: str, url: str, **kw: Any) -> tuple[Reply, Reply]:
    planned = api.safe(method, url, **kw)
    app = _fastapi(api)
    app.dependency_overrides[_never_called] = _never_called
    try:
        stock = api.safe(method, url, **kw)
    finally:
        app.dependency_overrides.clear()
    return planned, stock


def _comparable(api: Api, r: Reply) -> tuple[int, Any, str | None]:
    body = r.json() if r.body else None
    if isinstance(body, dict):
        body = {k: v for k, v in body.items() if k not in ("request_id", "token", "accessor", "created_at")}
    reason = api.one_audit(r.request_id)["reason"]
    return r.status, body, reason


def test_every_router_builds_lean_routes() -> None:
    from broker.main import create_app

    assert create_app  # the routers below are the ones create_app includes
    from broker.api.routes import audit, auth, compile, deploys, health, importing, projects

    for module in (secret_routes, audit, auth, compile, deploys, health, importing, projects):
        routes = [r for r in module.router.routes if isinstance(r, APIRoute)]
        assert routes and all(isinstance(r, lean.LeanRoute) for r in routes), module.__name__


def test_the_read_route_is_planned(monkeypatch: pytest.MonkeyPatch) -> None:
    """Building the read and write routes gives the planned handler, not FastAPI's."""
    planned: list[str] = []
    real = lean._lean_handler

    def spy(route: Any, plan: Any, stock: Any) -> Any:
        planned.append(f"{sorted(route.methods)[0]} {route.path}")
        return real(route, plan, stock)

    monkeypatch.setattr(lean, "_lean_handler", spy)
    router = APIRouter(route_class=lean.LeanRoute)
    for route in secret_routes.router.routes:
        assert isinstance(route, APIRoute)
        router.add_api_route(route.path, route.endpoint, methods=list(route.methods))
    read = "GET /v1/projects/{project}/environments/{environment}/secrets/{name}"
    assert read in planned
    assert "PUT /v1/projects/{project}/environments/{environment}/secrets/{name}" in planned


@pytest.mark.parametrize(
    ("params", "headers"),
    [
        ({}, {}),
        ({"version": "1"}, {}),
        ({"version": "0"}, {}),
        ({"version": "x"}, {}),
        ({"version": str(2**31)}, {}),
        ({"version": ["1", "2"]}, {}),
        ({"upstream_version": "v" * 257}, {}),
        ({}, {"X-Strongroom-Reveal": "1"}),
        ({}, {"X-Strongroom-Reveal": "y" * 17}),
        ({"version": "0"}, {"X-Strongroom-Reveal": "y" * 17}),
    ],
    ids=str,
)
def test_the_read_route_answers_as_fastapi_does(
    api: Api, params: dict[str, Any], headers: dict[str, str]
) -> None:
    value = random_value()
    assert api.put("common", "K", value).status_code == 200
    planned, stock = _both(api, "GET", api.url("common", "K"), params=params, headers={**api.h, **headers})
    assert _comparable(api, planned) == _comparable(api, stock)
    if planned.status == 400:
        assert "version" in planned.json()["detail"] or "Reveal" in planned.json()["detail"]


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/v1/audit/events", {"limit": "0"}),
        ("/v1/audit/events", {"limit": "7", "action": "secret.*"}),
        ("/v1/audit/events", {"cursor": "-1"}),
        ("/v1/audit/events", {"actor": "a" * 129}),
        ("/v1/tokens", {"include_inactive": "maybe"}),
        ("/v1/tokens", {"include_inactive": "true", "limit": "2"}),
        ("/v1/projects/microblog/environments/common/secrets", {"include_deleted": "1"}),
        ("/v1/projects/microblog/environments/common/secrets", {"include_deleted": "2"}),
        ("/v1/projects/microblog/diff", {"a": "common"}),
        ("/v1/projects/microblog/diff", {"a": "", "b": "common"}),
        ("/v1/projects/microblog/environments/common/deploys", {"limit": "x"}),
        ("/v1/projects/microblog/environments/common/secrets/K/versions/0/destroy", {}),
        ("/up", {}),
    ],
    ids=str,
)
def test_other_routes_answer_as_fastapi_does(api: Api, path: str, params: dict[str, str]) -> None:
    assert api.put("common", "K", random_value()).status_code == 200
    method = "POST" if path.endswith("/destroy") else "GET"
    planned, stock = _both(api, method, path, params=params, headers=api.h)
    if path == "/up":
        assert (planned.status, planned.body) == (stock.status, stock.body)
        return
    a, b = _comparable(api, planned), _comparable(api, stock)
    if a[0] == 200:
        # A second listing also sees the first one's event, and rows with equal sort keys may come in
        # either order: compare the shape of successful listings, everything of refusals.
        a, b = (a[0], sorted(a[1]), a[2]), (b[0], sorted(b[1]), b[2])
    assert a == b


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b'{"value": "v1"}', "application/json"),
        (b'{"value": "v1", "cas": 0}', "application/json"),
        (b'{"value": "v1"}', "application/merge-patch+json"),
        (b'{"value": "v1"}', "application/json; charset=utf-8"),
        (b'{"value": "v1"}', "text/plain"),
        (b'{"value": "v1"}', None),
        (b'{"value": ', "application/json"),
        (b"", "application/json"),
        (b"[]", "application/json"),
        (b'{"value": 7}', "application/json"),
        (b'{"value": "v1", "cas": "x"}', "application/json"),
        (b'{"value": "v1", "extra": 1}', "application/json"),
        (b'{"value": "' + b"x" * (2 << 20) + b'"}', "application/json"),
    ],
    ids=lambda v: repr(v)[:40],
)
def test_the_write_route_reads_its_body_as_fastapi_does(
    api: Api, body: bytes, content_type: str | None
) -> None:
    """Each body is sent to a fresh name twice (planned, then FastAPI's handler): the same status, body
    and audit reason, valid writes included."""
    headers = {**api.h, **({"Content-Type": content_type} if content_type else {})}
    planned = api.safe("PUT", api.url("common", "A"), content=body, headers=headers)
    app = _fastapi(api)
    app.dependency_overrides[_never_called] = _never_called
    try:
        stock = api.safe("PUT", api.url("common", "B"), content=body, headers=headers)
    finally:
        app.dependency_overrides.clear()
    a, b = _comparable(api, planned), _comparable(api, stock)
    if a[0] == 200:
        assert a[1]["name"] == "A" and b[1]["name"] == "B"
        a, b = (
            (a[0], {**a[1], "name": "", "updated_at": ""}, a[2]),
            (b[0], {**b[1], "name": "", "updated_at": ""}, b[2]),
        )
    assert a == b


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/tokens", {"ttl": 600}),
        ("/v1/tokens", {"ttl": "soon"}),
        ("/v1/tokens", {"num_uses": 0, "ttl": -1}),
        ("/v1/projects/microblog/environments/common/values", {"names": ["K"]}),
        ("/v1/projects/microblog/environments/common/values", {"names": ["MISSING"]}),
        ("/v1/projects/microblog/environments/common/values", {"names": "K"}),
        ("/v1/projects/microblog/environments/common/values", {}),
    ],
    ids=str,
)
def test_routes_with_a_response_parameter_answer_as_fastapi_does(
    api: Api, path: str, body: dict[str, Any]
) -> None:
    """Routes that set headers or a status on FastAPI's temporary response (`response: Response`): the
    same status, headers (cache-control) and body either way."""
    assert api.put("common", "K", random_value()).status_code == 200
    planned, stock = _both(api, "POST", path, json=body, headers=api.h)
    assert planned.headers.get("cache-control") == stock.headers.get("cache-control")
    assert planned.headers.get("content-type") == stock.headers.get("content-type")
    a, b = _comparable(api, planned), _comparable(api, stock)
    if path == "/v1/tokens" and a[0] == 201:
        a, b = (a[0], sorted(a[1]), a[2]), (b[0], sorted(b[1]), b[2])
    assert a == b
