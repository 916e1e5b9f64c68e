"""The one access decision: may this token do this, from here, now? Pure: every input is an argument.

Authentication (`auth.authenticate`), authorisation (`auth.require`), and the parent chain check when a
token mints a child all ask `decide`; nothing else compares a token's expiry, revocation, principal,
network binding, use count or scopes.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from broker.domain.request import Actor
from broker.domain.scopes import Action, Scope, allowed


@dataclass(frozen=True, slots=True)
class TokenFacts:
    """What the database says about a token and its principal (never the token string)."""

    token_id: int
    accessor: str
    principal_id: int
    principal_type: str
    principal_name: str
    scopes: tuple[Scope, ...]
    bound_cidrs: tuple[str, ...]
    expires_at: datetime
    max_expires_at: datetime
    revoked_at: datetime | None = None
    disabled_at: datetime | None = None
    # Uses left of a use-limited token (None: not use-limited).
    uses_remaining: int | None = None

    def actor(self) -> Actor:
        """The caller this token makes."""
        return Actor(
            principal_id=self.principal_id,
            principal_type=self.principal_type,
            name=self.principal_name,
            token_id=self.token_id,
            accessor=self.accessor,
            scopes=self.scopes,
            bound_cidrs=self.bound_cidrs,
            expires_at=self.expires_at,
            max_expires_at=self.max_expires_at,
        )


@dataclass(frozen=True, slots=True)
class Target:
    """What the request wants to do: an action on a project, environment and key (None: not named)."""

    action: Action
    project: str | None = None
    environment: str | None = None
    key: str | None = None

    def where(self) -> str:
        """The target as a path, for refusals."""
        where = self.project if self.environment is None else f"{self.project}/{self.environment}"
        if self.key is not None:
            where = f"{where}/{self.key}"
        return where or "the broker"


@dataclass(frozen=True, slots=True)
class Context:
    """Facts about the request that the decision depends on.

    `network`: check the token's bound CIDRs against `source_addr` (a parent chain check at mint time
    does not: the request's own address was checked when it authenticated). `authenticated`: the token
    already passed this request's authentication (the actor came from an earlier decision), so only the
    grant of the target is decided.
    """

    source_addr: str | None
    network: bool = True
    authenticated: bool = False


class Kind(StrEnum):
    """The two ways a request is refused."""

    UNAUTHENTICATED = "unauthenticated"
    FORBIDDEN = "forbidden"


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why the request may not go on: unauthenticated (say nothing to the caller) or forbidden."""

    kind: Kind
    reason: str


Decision = Actor | Refusal


def addr_in(addr: str | None, cidrs: tuple[str, ...]) -> bool:
    """Whether an address lies in one of the blocks (every address does when there are none)."""
    if not cidrs:
        return True
    if addr is None:
        return False
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        # A dual-stack listener reports IPv4 peers as ::ffff:a.b.c.d; match them against IPv4 CIDRs.
        ip = ip.ipv4_mapped
    return any(ip in ipaddress.ip_network(c) for c in cidrs)


def _token_refusal(token: TokenFacts, context: Context, now: datetime) -> str | None:
    if token.revoked_at is not None:
        return "revoked token"
    if token.expires_at <= now:
        return "expired token"
    if token.disabled_at is not None:
        return "principal disabled"
    if context.network and not addr_in(context.source_addr, token.bound_cidrs):
        return "source address outside the token's bound CIDRs"
    if token.uses_remaining is not None and token.uses_remaining <= 0:
        return "token has no uses left"
    return None


def decide(
    token: TokenFacts | Actor | None, target: Target | None, context: Context, now: datetime
) -> Decision:
    """The caller, or why not: the token must authenticate (unless `context.authenticated`, then an
    `Actor` may stand for it) and its scopes must grant `target` (when one is named)."""
    if token is None:
        return Refusal(Kind.UNAUTHENTICATED, "unknown token")
    if isinstance(token, Actor):
        if not context.authenticated:
            raise ValueError("an Actor stands for a token only once the request has authenticated")
        actor, scopes = token, token.scopes
    else:
        if not context.authenticated:
            reason = _token_refusal(token, context, now)
            if reason is not None:
                return Refusal(Kind.UNAUTHENTICATED, reason)
        actor, scopes = token.actor(), token.scopes
    if target is not None and not allowed(
        scopes, target.action, target.project, target.environment, key=target.key
    ):
        return Refusal(Kind.FORBIDDEN, f"this token does not grant {target.action.value} on {target.where()}")
    return actor
