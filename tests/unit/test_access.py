"""The one access decision (broker.domain.access.decide): a table of tokens, targets and contexts."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from broker.domain.access import Context, Kind, Refusal, Target, TokenFacts, decide
from broker.domain.request import Actor
from broker.domain.scopes import Action, Scope

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
READ_APP = Scope(project="app", environments="prod*", actions=frozenset({Action.READ}))
DENY_KEY = Scope(
    project="app", environments="*", actions=frozenset({Action.READ}), deny=True, keys=frozenset({"ROOT"})
)
TOKEN = TokenFacts(
    token_id=7,
    accessor="sra_x",
    principal_id=3,
    principal_type="machine",
    principal_name="ci",
    scopes=(READ_APP, DENY_KEY),
    bound_cidrs=("10.0.0.0/8",),
    expires_at=NOW + timedelta(minutes=5),
    max_expires_at=NOW + timedelta(hours=1),
)
HERE = Context(source_addr="10.1.2.3")
READ_PROD_A = Target(Action.READ, "app", "production", "A")

UNAUTH, FORBID = Kind.UNAUTHENTICATED, Kind.FORBIDDEN
CASES: list[tuple[str, TokenFacts | None, Target | None, Context, Kind | None, str]] = [
    ("grant", TOKEN, READ_PROD_A, HERE, None, ""),
    ("authenticate only", TOKEN, None, HERE, None, ""),
    ("unknown token", None, READ_PROD_A, HERE, UNAUTH, "unknown token"),
    ("revoked", replace(TOKEN, revoked_at=NOW), READ_PROD_A, HERE, UNAUTH, "revoked token"),
    ("expired at now", replace(TOKEN, expires_at=NOW), READ_PROD_A, HERE, UNAUTH, "expired token"),
    ("disabled principal", replace(TOKEN, disabled_at=NOW), None, HERE, UNAUTH, "principal disabled"),
    ("outside CIDRs", TOKEN, None, Context(source_addr="192.0.2.1"), UNAUTH, "bound CIDRs"),
    ("no address", TOKEN, None, Context(source_addr=None), UNAUTH, "bound CIDRs"),
    ("bad address", TOKEN, None, Context(source_addr="nonsense"), UNAUTH, "bound CIDRs"),
    ("ipv4-mapped", TOKEN, None, Context(source_addr="::ffff:10.9.9.9"), None, ""),
    ("network not checked", TOKEN, None, Context(source_addr=None, network=False), None, ""),
    ("unbound token", replace(TOKEN, bound_cidrs=()), None, Context(source_addr=None), None, ""),
    ("uses left", replace(TOKEN, uses_remaining=1), READ_PROD_A, HERE, None, ""),
    ("no uses left", replace(TOKEN, uses_remaining=0), READ_PROD_A, HERE, UNAUTH, "no uses left"),
    # The token is refused before its scopes are looked at: an expired token learns nothing about grants.
    ("expired and ungranted", replace(TOKEN, revoked_at=NOW), Target(Action.WRITE, "x"), HERE, UNAUTH, ""),
    ("other action", TOKEN, Target(Action.WRITE, "app", "production", "A"), HERE, FORBID, "write on app/"),
    ("other project", TOKEN, Target(Action.READ, "web", "production", "A"), HERE, FORBID, "web/production/A"),
    ("env glob miss", TOKEN, Target(Action.READ, "app", "staging", "A"), HERE, FORBID, "app/staging/A"),
    ("denied key", TOKEN, Target(Action.READ, "app", "production", "ROOT"), HERE, FORBID, "ROOT"),
    ("project-wide", TOKEN, Target(Action.READ, "app"), HERE, FORBID, "read on app"),
    ("broker-wide", TOKEN, Target(Action.ADMIN), HERE, FORBID, "admin on the broker"),
    ("env-wide under key deny", TOKEN, Target(Action.READ, "app", "production"), HERE, FORBID, ""),
]


@pytest.mark.parametrize(
    ("token", "target", "context", "kind", "reason"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_decide(
    token: TokenFacts | None, target: Target | None, context: Context, kind: Kind | None, reason: str
) -> None:
    got = decide(token, target, context, NOW)
    if kind is None:
        assert isinstance(got, Actor)
        assert token is not None and got.token_id == token.token_id and got.scopes == token.scopes
        assert (got.principal_id, got.name, got.accessor) == (3, "ci", "sra_x")
    else:
        assert isinstance(got, Refusal) and got.kind is kind
        assert reason in got.reason


def test_an_authenticated_request_is_decided_on_its_grant_alone() -> None:
    """`authenticated`: the token checks ran when the request authenticated (a token that expires
    mid-request does not fail the rest of it); the grant is still decided."""
    expired = replace(TOKEN, expires_at=NOW - timedelta(seconds=1))
    after = Context(source_addr=None, authenticated=True)
    assert isinstance(decide(expired, READ_PROD_A, after, NOW), Actor)
    actor = expired.actor()
    assert decide(actor, READ_PROD_A, after, NOW) is actor
    refused = decide(actor, Target(Action.WRITE, "app", "production", "A"), after, NOW)
    assert refused == Refusal(Kind.FORBIDDEN, "this token does not grant write on app/production/A")


def test_an_actor_cannot_stand_in_for_a_token_check() -> None:
    with pytest.raises(ValueError, match="authenticated"):
        decide(TOKEN.actor(), READ_PROD_A, HERE, NOW)
