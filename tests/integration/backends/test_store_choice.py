"""The store (database or upstream) is chosen once per request, and the other store is never touched.

Every secrets route runs against each kind of world (the database, OpenBao, moto per-key and json):
`broker.services.stores.choose` is wrapped to count its calls, and every method of the store that must
not serve the request is replaced by one that fails the test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from broker.services import stores
from broker.services.stores import DatabaseStore, UpstreamStore
from broker.services.stores.base import SecretStore
from tests.integration.backends.conftest import KINDS, PROJECT, World

STORE_METHODS = [
    name for name in vars(SecretStore) if not name.startswith("_") and callable(getattr(SecretStore, name))
]


@pytest.fixture
def chosen(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The class of each store `choose` returned, in order."""
    got: list[str] = []
    real = stores.choose

    def counting(rt: Any, *, project: str, environment: str, name: str | None = None) -> SecretStore:
        store = real(rt, project=project, environment=environment, name=name)
        got.append(type(store).__name__)
        return store

    monkeypatch.setattr(stores, "choose", counting)
    yield got


def forbid(monkeypatch: pytest.MonkeyPatch, cls: type[object], methods: list[str]) -> None:
    """Make these methods of `cls` fail the request they are called in (the TestClient re-raises)."""

    def refuse(method: str) -> Callable[..., Any]:
        async def called(*_args: Any, **_kwargs: Any) -> Any:
            raise AssertionError(f"{cls.__name__}.{method} was called")

        return called

    for method in methods:
        monkeypatch.setattr(cls, method, refuse(method))


def each_route(w: World, env: str, name: str) -> Iterator[tuple[str, int, set[int]]]:
    """Run every secrets route once; yield (what, status, acceptable statuses)."""
    base = f"/v1/projects/{PROJECT}/environments/{env}"
    r = w.put(name, "first", env=env)
    yield "write", r.status_code, {200}
    r = w.put(name, "second", env=env)
    yield "write again", r.status_code, {200}
    yield "read", w.get(name, env=env).status_code, {200}
    yield "list", w.client.get(f"{base}/secrets", headers=w.h).status_code, {200}
    yield "resolve", w.client.get(f"{base}/resolved", headers=w.h).status_code, {200}
    r = w.client.get(f"{base}/secrets/{name}/versions", headers=w.h)
    yield "history", r.status_code, {200}
    r = w.client.post(f"{base}/secrets/{name}/rollback", json={"version": 1}, headers=w.h)
    yield "rollback", r.status_code, {200}
    r = w.client.post(f"{base}/secrets/{name}/generate", json={}, headers=w.h)
    yield "generate", r.status_code, {200, 400}
    r = w.client.delete(f"{base}/secrets/{name}", headers=w.h)
    yield "delete", r.status_code, {204, 400, 409}
    r = w.client.post(f"{base}/secrets/{name}/undelete", headers=w.h)
    yield "undelete", r.status_code, {200, 400, 409}
    r = w.client.post(f"{base}/secrets/{name}/versions/1/destroy", headers=w.h)
    yield "destroy", r.status_code, {204, 400, 409}


def test_each_request_chooses_its_store_once(
    world: World, chosen: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """production is the database (database world) or mapped whole upstream: one choice per request, and
    the database store never serves an upstream request nor the upstream store a database one."""
    upstream = world.kind != "database"
    if upstream:
        forbid(monkeypatch, DatabaseStore, STORE_METHODS)
    else:
        forbid(monkeypatch, UpstreamStore, [*STORE_METHODS, "read"])
    for what, status, ok in each_route(world, "production", "STORE_CHOICE"):
        assert status in ok, what
        assert len(chosen) == 1, (what, chosen)
        expected = "UpstreamStore" if upstream else "DatabaseStore"
        assert chosen == [expected], what
        chosen.clear()


# The database world maps no project, so it has no case here.
@pytest.mark.parametrize("world", [k for k in KINDS if k != "database"], indirect=True)
def test_a_database_environment_of_a_mapped_project_never_touches_the_upstream_store(
    world: World, chosen: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """staging is not mapped: its secrets are the database store's, even where the project has mappings
    (only a list or a resolve, which may mix upstream values into the chain, asks the upstream store)."""
    forbid(monkeypatch, UpstreamStore, [m for m in [*STORE_METHODS, "read"] if m not in ("list", "resolve")])
    for what, status, ok in each_route(world, "staging", "STORE_CHOICE"):
        assert status in ok, what
        assert chosen == ["UpstreamStore" if what in ("list", "resolve") else "DatabaseStore"], what
        chosen.clear()
