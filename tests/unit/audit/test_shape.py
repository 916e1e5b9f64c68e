"""The request event's shape: the scopes column is the canonical JSON of the actor's scopes (encoded once
per set of scopes, so a cached text must still be that token's own)."""

from __future__ import annotations

from datetime import UTC, datetime

from broker.audit.canonical import canonical_json
from broker.domain.request import Actor, RequestContext
from broker.domain.scopes import Action, Scope
from broker.services.audit.events import shape

WHEN = datetime(2026, 12, 4, 22, 30, tzinfo=UTC)


def _scopes_of(scopes: tuple[Scope, ...]) -> str | None:
    actor = Actor(1, "service", "ci", 2, "acc", scopes)
    event = shape(
        RequestContext("r", "GET", "/x", None, None, actor=actor), outcome="ok", status=200, now=WHEN
    )
    value = event["scopes"]
    assert value is None or isinstance(value, str)
    return value


def test_scopes_are_each_tokens_own_canonical_json() -> None:
    read = (Scope("p", "prod*", frozenset({Action.READ})),)
    denied = (*read, Scope("p", "prod-eu", frozenset({Action.READ}), deny=True, keys=frozenset({"B", "A"})))
    for scopes in (read, denied, read, (), denied):
        assert _scopes_of(scopes) == canonical_json([s.to_json() for s in scopes]).decode("ascii")
    assert _scopes_of(read) != _scopes_of(denied)


def test_an_anonymous_request_has_no_scopes() -> None:
    event = shape(RequestContext("r", "GET", "/x", None, None), outcome="denied", status=401, now=WHEN)
    assert event["scopes"] is None and event["actor_type"] == "anonymous"
