"""SECURITY.md 59: a request authenticated with token T mints nothing once T (or an ancestor) is revoked.

The interleaving is forced, never timed: a hook wrapped around `authenticate` revokes the token after
the request has authenticated and before the route mints; or the service steps are called in order.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from broker.domain.request import Actor, RequestContext
from broker.domain.scopes import scopes_from_json
from broker.errors import Forbidden
from broker.repositories import identities as repo
from broker.services import auth
from tests.integration.auth.conftest import ALL_ACTIONS, Broker, bearer, scope


def _ctx() -> RequestContext:
    return RequestContext(
        request_id="race", method="POST", route="/v1/tokens", source_addr="127.0.0.1", user_agent=None
    )


def _token_count(broker: Broker) -> int:
    return len(broker.dump()["tokens"])


def _revoke_after_authenticating(
    monkeypatch: pytest.MonkeyPatch, broker: Broker, victim_accessor: str
) -> list[str]:
    """Make the next request that authenticates revoke `victim_accessor` (as the admin would, in its own
    transaction) between its authentication and the rest of the request."""
    fired: list[str] = []
    real: Callable[..., Awaitable[Actor]] = auth.authenticate

    async def hooked(rt: Any, ctx: RequestContext, authorization: str | None) -> Actor:
        actor = await real(rt, ctx, authorization)
        if not fired:
            fired.append(actor.accessor)
            async with rt.engine.begin() as conn:
                row = await repo.get_token_by_accessor(conn, victim_accessor)
                assert row is not None
                await repo.revoke_tree(conn, [row.id], rt.clock())
        return actor

    monkeypatch.setattr(auth, "authenticate", hooked)
    return fired


def test_child_of_a_token_revoked_after_authentication_is_refused(
    broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = broker.login([scope("*", ALL_ACTIONS)], name="root")
    before = _token_count(broker)
    fired = _revoke_after_authenticating(monkeypatch, broker, root.accessor)
    r = broker.child(root.token)
    assert fired == [root.accessor]
    assert r.status_code == 403, r.text
    assert "revoked token" in r.json()["detail"]
    assert "cannot create child tokens" in r.json()["detail"]
    assert _token_count(broker) == before  # nothing was minted
    monkeypatch.undo()
    broker.expect_denied(broker.whoami(root.token), 401)


def test_grandchild_is_refused_when_an_ancestor_is_revoked_between_authentication_and_mint(
    broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = broker.login([scope("*", ALL_ACTIONS)], name="root")
    child = broker.child_token(root.token)
    before = _token_count(broker)
    _revoke_after_authenticating(monkeypatch, broker, root.accessor)
    r = broker.child(child["token"])
    assert r.status_code == 403, r.text
    assert "cannot create child tokens" in r.json()["detail"]
    assert _token_count(broker) == before
    monkeypatch.undo()
    # Neither the parent nor anything under it reads on either read path afterwards.
    for tok in (root.token, child["token"]):
        broker.expect_denied(broker.whoami(tok), 401)
        r = broker.client.get("/v1/projects/p/environments/e/secrets/A", headers=bearer(tok))
        assert r.status_code == 401, r.text


def test_service_steps_in_order_authenticate_revoke_then_mint(broker: Broker) -> None:
    """The same interleaving through the services, for both minting functions (create_child on
    POST /v1/tokens and issue_child for deploy tokens)."""
    root = broker.login([scope("*", ALL_ACTIONS)], name="root")
    rt = broker.rt

    async def go() -> list[str]:
        refused = []
        actor = await auth.authenticate(rt, _ctx(), f"Bearer {root.token}")
        async with rt.engine.begin() as conn:
            row = await repo.get_token_by_accessor(conn, root.accessor)
            assert row is not None
            await repo.revoke_tree(conn, [row.id], rt.clock())
        try:
            await auth.create_child(
                rt,
                _ctx(),
                actor,
                scopes=None,
                ttl=60,
                num_uses=None,
                bound_cidrs=None,
            )
        except Forbidden as exc:
            refused.append(str(exc))
        try:
            async with rt.engine.begin() as conn:
                await auth.issue_child(
                    conn, rt, actor, scopes=scopes_from_json([scope("*", ["read"])]), ttl=60, num_uses=1
                )
        except Forbidden as exc:
            refused.append(str(exc))
        return refused

    before = _token_count(broker)
    refused = broker.run(go)
    assert len(refused) == 2 and all("revoked token" in m for m in refused), refused
    assert _token_count(broker) == before


def test_expired_parent_mints_nothing(broker: Broker) -> None:
    """An actor whose token expired after authenticating (the clock moved on) cannot mint either."""
    root = broker.login([scope("*", ALL_ACTIONS)], name="root", token_ttl=60)
    rt = broker.rt

    async def go() -> str:
        actor = await auth.authenticate(rt, _ctx(), f"Bearer {root.token}")
        broker.clock.advance(61)
        with pytest.raises(Forbidden) as raised:
            await auth.create_child(
                rt,
                _ctx(),
                actor,
                scopes=None,
                ttl=None,
                num_uses=None,
                bound_cidrs=None,
            )
        return str(raised.value)

    assert "expired token" in broker.run(go)
