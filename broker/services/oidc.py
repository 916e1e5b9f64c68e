"""OIDC workload identity login: a CI job's platform token for a normal short-lived Strongroom token.

The token is checked by broker.domain.oidc against the issuer's key set (broker.oidc.jwks), its claims
must match the role, and a `jti` is accepted once. The token issued has the role's scopes and TTL, an
accessor like any other, and belongs to the principal `oidc:<issuer>:<sub>` (created on first use, with no
usable client secret), so every later request is audited under that identity. Every refusal is audited
with a short reason, never the token's text or a claim value; the login event records the role and the
claims that matched.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta
from typing import Any

import anyio.to_thread
from sqlalchemy.exc import IntegrityError as DbIntegrityError

from broker.domain import oidc
from broker.domain.request import Actor, RequestContext
from broker.domain.scopes import scopes_from_json
from broker.errors import NotFound, RateLimited, Unauthenticated, Unavailable
from broker.oidc.jwks import FetchFailed
from broker.repositories import identities as repo
from broker.repositories import oidc as replays
from broker.services import audit
from broker.services.auth import IssuedToken, _issue, keyed_hash
from broker.services.runtime import Runtime

MAX_MATCHED_TEXT = 400


def _refuse(rt: Runtime, ctx: RequestContext, keys: list[str], reason: str) -> Unauthenticated:
    # `login` counts the failure against the limiter once the refused transaction is over.
    ctx.reason = f"oidc: {reason}"
    return Unauthenticated()


def principal_name(issuer: str, subject: str) -> tuple[str, str]:
    """The client id and name of the principal of (issuer, sub): the name is `oidc:<issuer>:<sub>` (what
    the audit trail shows); the client id a digest of the subject, safe in a URL path (`sub` holds `/`)."""
    digest = hashlib.sha256(subject.encode()).hexdigest()[:32]
    return f"oidc-{issuer}-{digest}", f"oidc:{issuer}:{subject}"[:128]


async def _principal(conn: Any, rt: Runtime, *, client_id: str, name: str, ttl: int) -> int | None:
    """The id of the principal of this subject, created on first use; None when an admin disabled it."""
    row = await repo.get_principal_by_client_id(conn, client_id)
    if row is not None:
        return None if row.disabled_at is not None else int(row.id)
    try:
        async with conn.begin_nested():
            return await repo.add_principal(
                conn,
                type_="machine",
                name=name,
                client_id=client_id,
                # No one knows this secret: an OIDC principal logs in with its platform's token only.
                secret_hash=keyed_hash(rt.keys.hmac_key, b"client-secret", secrets.token_urlsafe(32)),
                scopes=[],
                token_ttl=ttl,
                token_max_ttl=ttl,
                bound_cidrs=[],
                now=rt.clock(),
            )
    except DbIntegrityError:
        # Another login for the same subject created it a moment ago.
        row = await repo.get_principal_by_client_id(conn, client_id)
        assert row is not None
        return int(row.id)


async def login(rt: Runtime, ctx: RequestContext, *, role: str, token: str) -> IssuedToken:
    """Exchange an OIDC token for a short-lived token with the role's scopes; refusals are uniform 401s."""
    ctx.about("auth.oidc")
    keys = [f"addr:{ctx.source_addr}"]
    wait = await rt.limiter.retry_after(keys)
    if wait:
        raise RateLimited("too many failed authentications; retry later", retry_after=wait)
    try:
        return await _login(rt, ctx, keys, role=role, token=token)
    except Unauthenticated:
        # Counted after the transaction: the count stays although the transaction rolls back.
        await rt.limiter.record(keys)
        raise


async def _login(rt: Runtime, ctx: RequestContext, keys: list[str], *, role: str, token: str) -> IssuedToken:
    if rt.oidc is None:
        raise NotFound("OIDC login is not configured on this broker (STRONGROOM_OIDC_FILE)")
    config = rt.oidc.config
    bound = config.roles.get(role[:64])
    if bound is None:
        raise _refuse(rt, ctx, keys, "unknown role")
    issuer = config.issuers[bound.issuer]
    now = rt.clock()

    async def keys_of(force: bool) -> dict[str, Any]:
        assert rt.oidc is not None
        try:
            return await anyio.to_thread.run_sync(lambda: rt.oidc.jwks.get(bound.issuer, force=force))  # type: ignore[union-attr]
        except FetchFailed as exc:
            ctx.reason = f"oidc: {exc}"
            raise Unavailable(f"{exc}; no token was issued") from None

    def check(jwks: dict[str, Any]) -> oidc.Verified:
        return oidc.verify(
            token,
            jwks=jwks,
            issuer=issuer.issuer_url,
            audience=issuer.audience,
            algorithms=issuer.algorithms,
            now=now,
            leeway=issuer.leeway,
        )

    try:
        oidc.header_of(token)  # a malformed token costs no key set fetch
        try:
            verified = check(await keys_of(False))
        except oidc.UnknownKey:
            verified = check(await keys_of(True))  # the issuer may have rotated its keys
    except oidc.Refused as exc:
        raise _refuse(rt, ctx, keys, exc.reason) from None
    matched = oidc.match_claims(verified.claims, bound.patterns(), glob=bound.bound_claims_type == "glob")
    if matched is None:
        raise _refuse(rt, ctx, keys, f"claims do not match role {role}")
    client_id, name = principal_name(bound.issuer, verified.subject)
    async with rt.engine.begin() as conn:
        if verified.jti is not None:
            fresh = await replays.remember_jti(
                conn,
                issuer=bound.issuer,
                jti_hash=keyed_hash(rt.keys.hmac_key, b"oidc-jti", verified.jti),
                expires_at=verified.expires_at + timedelta(seconds=issuer.leeway),
                now=now,
            )
            if not fresh:
                raise _refuse(rt, ctx, keys, "replayed jti")
        principal_id = await _principal(conn, rt, client_id=client_id, name=name, ttl=bound.ttl)
        if principal_id is None:
            raise _refuse(rt, ctx, keys, "principal disabled")
        ctx.actor = Actor(
            principal_id=principal_id, principal_type="machine", name=name, token_id=0, accessor=""
        )
        issued = await _issue(
            conn,
            rt,
            principal_id=principal_id,
            parent_id=None,
            scopes=scopes_from_json(bound.scopes),
            bound_cidrs=(),
            ttl=bound.ttl,
            max_expires_at=now + timedelta(seconds=bound.ttl),
            num_uses=None,
        )
        ctx.actor.accessor = issued.info.accessor
        ctx.actor.scopes = issued.info.scopes
        text = ", ".join(f"{k}={v}" for k, v in sorted(matched.items()))
        ctx.reason = f"oidc role {role}; matched {text}"[:MAX_MATCHED_TEXT]
        await audit.record(conn, rt, ctx)
    return issued
