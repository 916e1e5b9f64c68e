"""OIDC logins: a CI job's platform token, or a person's console sign-in, for a short-lived Strongroom token.

The token is checked by broker.domain.oidc against the issuer's key set (broker.oidc.jwks), its claims
must match the role, and a `jti` is accepted once. The token issued has the role's scopes and TTL, an
accessor like any other, and belongs to the principal `oidc:<issuer>:<sub>` (created on first use, with no
usable client secret), so every later request is audited under that identity. Every refusal is audited
with a short reason, never the token's text or a claim value; the login event records the role and the
claims that matched. The console's sign-in (authorization code flow with PKCE, at the end of this
module) verifies its ID token with the same function, plus the nonce, and maps its claims to the first
matching role of the file's `console` section; its person is `oidc:<console name>:<sub>`, a user.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import anyio.to_thread
from anyio import CapacityLimiter
from anyio.lowlevel import RunVar
from sqlalchemy.exc import IntegrityError as DbIntegrityError

from broker.domain import oidc
from broker.domain.request import Actor, RequestContext
from broker.domain.scopes import scopes_from_json
from broker.errors import BrokerError, NotFound, RateLimited, Unauthenticated, Unavailable
from broker.oidc import sso
from broker.oidc.jwks import FetchFailed
from broker.oidc.sso import ConsoleProvider
from broker.repositories import identities as repo
from broker.repositories import oidc as replays
from broker.services import audit
from broker.services.auth import IssuedToken, _issue, keyed_hash
from broker.services.runtime import Runtime

MAX_MATCHED_TEXT = 400
# Worker threads that may wait on identity providers at once (discovery, key sets, code exchanges): their
# own pool, so a slow provider cannot take every thread of anyio's default pool the broker shares.
PROVIDER_THREADS = 8
_T = TypeVar("_T")
_provider_threads: RunVar[CapacityLimiter] = RunVar("strongroom_provider_threads")


def provider_limiter() -> CapacityLimiter:
    """The event loop's limiter of provider calls (PROVIDER_THREADS at once), made on first use."""
    try:
        return _provider_threads.get()
    except LookupError:
        limiter = CapacityLimiter(PROVIDER_THREADS)
        _provider_threads.set(limiter)
        return limiter


async def _provider_call(call: Callable[[], _T]) -> _T:
    return await anyio.to_thread.run_sync(call, limiter=provider_limiter())


def _refuse(ctx: RequestContext, reason: str) -> Unauthenticated:
    # `login` counts the failure against the limiter once the refused transaction is over.
    ctx.reason = f"oidc: {reason}"
    return Unauthenticated()


def principal_name(issuer: str, subject: str) -> tuple[str, str]:
    """The client id and name of the principal of (issuer, sub): the name is `oidc:<issuer>:<sub>` (what
    the audit trail shows); the client id a digest of the subject, safe in a URL path (`sub` holds `/`)."""
    digest = hashlib.sha256(subject.encode()).hexdigest()[:32]
    return f"oidc-{issuer}-{digest}", f"oidc:{issuer}:{subject}"[:128]


async def _principal(conn: Any, rt: Runtime, *, client_id: str, name: str, kind: str, ttl: int) -> int | None:
    """The id of the principal of this subject, created on first use; None when an admin disabled it."""
    row = await repo.get_principal_by_client_id(conn, client_id)
    if row is not None:
        return None if row.disabled_at is not None else int(row.id)
    try:
        async with conn.begin_nested():
            return await repo.add_principal(
                conn,
                type_=kind,
                name=name,
                client_id=client_id,
                # No one knows this secret: an OIDC principal logs in with its provider's token only.
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


async def _grant(
    conn: Any,
    rt: Runtime,
    ctx: RequestContext,
    *,
    issuer: str,
    subject: str,
    kind: str,
    scopes: list[dict[str, object]],
    ttl: int,
    reason: str,
    refuse: Callable[[str], Exception],
) -> IssuedToken:
    """Issue the subject's token (its principal created on first use) and audit the login, in `conn`'s transaction."""
    client_id, name = principal_name(issuer, subject)
    principal_id = await _principal(conn, rt, client_id=client_id, name=name, kind=kind, ttl=ttl)
    if principal_id is None:
        raise refuse("principal disabled")
    ctx.actor = Actor(principal_id=principal_id, principal_type=kind, name=name, token_id=0, accessor="")
    issued = await _issue(
        conn,
        rt,
        principal_id=principal_id,
        parent_id=None,
        scopes=scopes_from_json(scopes),
        bound_cidrs=(),
        ttl=ttl,
        max_expires_at=rt.clock() + timedelta(seconds=ttl),
        num_uses=None,
    )
    ctx.actor.accessor = issued.info.accessor
    ctx.actor.scopes = issued.info.scopes
    ctx.reason = reason[:MAX_MATCHED_TEXT]
    await audit.record(conn, rt, ctx)
    return issued


async def _verified(
    ctx: RequestContext,
    token: str,
    *,
    fetch: Callable[[bool], dict[str, Any]],
    check: Callable[[dict[str, Any]], oidc.Verified],
) -> oidc.Verified:
    """The token checked against its issuer's key set, refetched once when it names an unknown key id (the
    issuer may have rotated its keys); raises oidc.Refused, or Unavailable when no key set can be had."""

    async def keys_of(force: bool) -> dict[str, Any]:
        try:
            return await _provider_call(lambda: fetch(force))
        except FetchFailed as exc:
            ctx.reason = f"oidc: {exc}"
            raise Unavailable(f"{exc}; no token was issued") from None

    oidc.header_of(token)  # a malformed token costs no key set fetch
    try:
        return check(await keys_of(False))
    except oidc.UnknownKey:
        return check(await keys_of(True))


def _limiter_keys(ctx: RequestContext) -> list[str]:
    return [f"addr:{ctx.source_addr}"]


async def _not_locked_out(rt: Runtime, ctx: RequestContext) -> None:
    wait = await rt.limiter.retry_after(_limiter_keys(ctx))
    if wait:
        raise RateLimited("too many failed authentications; retry later", retry_after=wait)


async def _counted(rt: Runtime, ctx: RequestContext, attempt: Callable[[], Awaitable[_T]]) -> _T:
    """`attempt`, its refusal counted as a failed login against the address."""
    try:
        return await attempt()
    except Unauthenticated:
        # Counted after the transaction: the count stays although the transaction rolls back.
        await rt.limiter.record(_limiter_keys(ctx))
        raise


async def _limited(rt: Runtime, ctx: RequestContext, attempt: Callable[[], Awaitable[_T]]) -> _T:
    await _not_locked_out(rt, ctx)
    return await _counted(rt, ctx, attempt)


async def login(rt: Runtime, ctx: RequestContext, *, role: str, token: str) -> IssuedToken:
    """Exchange an OIDC token for a short-lived token with the role's scopes; refusals are uniform 401s."""
    ctx.about("auth.oidc")
    return await _limited(rt, ctx, lambda: _login(rt, ctx, role=role, token=token))


async def _login(rt: Runtime, ctx: RequestContext, *, role: str, token: str) -> IssuedToken:
    if rt.oidc is None:
        raise NotFound("OIDC login is not configured on this broker (STRONGROOM_OIDC_FILE)")
    config, cache = rt.oidc.config, rt.oidc.jwks
    bound = config.roles.get(role[:64])
    if bound is None:
        raise _refuse(ctx, "unknown role")
    issuer = config.issuers[bound.issuer]
    now = rt.clock()

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
        verified = await _verified(
            ctx, token, fetch=lambda force: cache.get(bound.issuer, force=force), check=check
        )
    except oidc.Refused as exc:
        raise _refuse(ctx, exc.reason) from None
    matched = oidc.match_claims(verified.claims, bound.patterns(), glob=bound.bound_claims_type == "glob")
    if matched is None:
        raise _refuse(ctx, f"claims do not match role {role}")
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
                raise _refuse(ctx, "replayed jti")
        text = ", ".join(f"{k}={v}" for k, v in sorted(matched.items()))
        return await _grant(
            conn,
            rt,
            ctx,
            issuer=bound.issuer,
            subject=verified.subject,
            kind="machine",
            scopes=bound.scopes,
            ttl=bound.ttl,
            reason=f"oidc role {role}; matched {text}",
            refuse=lambda reason: _refuse(ctx, reason),
        )


# --- console sign-in (OpenID Connect authorization code flow with PKCE) ----------------------------------

SSO_ACTION = "auth.sso"
# How long a browser has between "Sign in with ..." and the provider sending it back.
SSO_WINDOW = 600
# The replay register's issuer column for used sign-ins: not a name the OIDC file can give an issuer.
_USED = "@console-sign-in"


class SignInRefused(Unauthenticated):
    """A console sign-in refused; the message tells the person what happened (no secret, no claim value)."""

    def __init__(self, message: str) -> None:
        BrokerError.__init__(self, message)


@dataclass(frozen=True)
class SignIn:
    """A sign-in started: where to send the browser, and the value of its pre-login cookie."""

    url: str
    cookie: str


@dataclass(frozen=True)
class SignedIn:
    """A sign-in finished: the session's token, and the console page the person had asked for."""

    issued: IssuedToken
    next_path: str


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _derived(rt: Runtime, login_id: str) -> tuple[str, str, str]:
    """The state, nonce and PKCE verifier of a sign-in: keyed hashes of its random id, so nothing is stored
    until the callback, and the cookie alone (without the broker's key) reveals none of them."""
    key = rt.keys.hmac_key
    state = _b64(keyed_hash(key, b"console-sso-state", login_id))
    nonce = _b64(keyed_hash(key, b"console-sso-nonce", login_id))
    verifier = _b64(keyed_hash(key, b"console-sso-pkce", login_id))  # 43 characters (RFC 7636 minimum)
    return state, nonce, verifier


def _cookie_mac(rt: Runtime, body: str) -> str:
    return _b64(keyed_hash(rt.keys.hmac_key, b"console-sso-cookie", body))


def _console(rt: Runtime) -> ConsoleProvider:
    if rt.oidc is None or rt.oidc.console is None:
        raise NotFound(
            "console sign-in with OpenID Connect is not configured (console in STRONGROOM_OIDC_FILE)"
        )
    return rt.oidc.console


def sso_label(rt: Runtime) -> str | None:
    """The provider's name for the sign-in button, or None when console sign-in is not configured."""
    console = rt.oidc.console if rt.oidc is not None else None
    return console.config.label if console is not None else None


async def sso_begin(rt: Runtime, ctx: RequestContext, *, next_path: str) -> SignIn:
    """Start a sign-in: a fresh id (and the page to open afterwards) in the pre-login cookie, and the
    provider's authorization URL carrying the state, nonce and PKCE challenge derived from the id."""
    ctx.about("auth.sso-start")
    provider = _console(rt)
    try:
        endpoints = await _provider_call(provider.endpoints)
    except FetchFailed as exc:
        ctx.reason = f"oidc: {exc}"
        raise Unavailable(f"{exc}; try again later or sign in with client credentials") from None
    login_id = secrets.token_urlsafe(32)
    state, nonce, verifier = _derived(rt, login_id)
    challenge = _b64(hashlib.sha256(verifier.encode("ascii")).digest())
    body = f"{login_id}.{int(rt.clock().timestamp())}.{_b64(next_path.encode())}"
    ctx.reason = "oidc: sign-in started"
    return SignIn(
        url=provider.authorization_url(endpoints, state=state, nonce=nonce, challenge=challenge),
        cookie=f"{body}.{_cookie_mac(rt, body)}",
    )


def _login_id(rt: Runtime, cookie: str | None) -> tuple[str, datetime, str] | None:
    """The sign-in id, start time and next page in a pre-login cookie this broker set, or None."""
    parts = (cookie or "").split(".")
    if len(parts) != 4 or not parts[1].isdigit() or len(parts[1]) > 12:
        return None
    body = ".".join(parts[:3])
    if not hmac.compare_digest(parts[3].encode(), _cookie_mac(rt, body).encode()):
        return None
    next_path = base64.urlsafe_b64decode(parts[2] + "=" * (-len(parts[2]) % 4)).decode("utf-8", "replace")
    return parts[0], datetime.fromtimestamp(int(parts[1]), UTC), next_path


async def sso_finish(
    rt: Runtime,
    ctx: RequestContext,
    *,
    cookie: str | None,
    params: Mapping[str, str],
    max_ttl: int,
) -> SignedIn:
    """Finish a sign-in at the callback: check the state against the browser's pre-login cookie, use the
    sign-in once, exchange the code (with the PKCE verifier and the client secret), verify the ID token as
    the workload login does plus its nonce, map its claims to the first matching console role and issue a
    token of that role's scopes, at most `max_ttl` seconds. Every outcome is one `auth.sso` event.

    Only a refused code exchange or ID token counts as a failed login against the address: a refusal
    before the browser's pre-login cookie and the state matched guesses nothing (the state is a keyed
    hash), and counting it would let any web page lock an address out with a cross-site image."""
    ctx.about(SSO_ACTION)
    return await _finish(rt, ctx, cookie=cookie, params=params, max_ttl=max_ttl)


def _shown(text: str) -> str:
    """A provider's own words as a page may show them: one line of printable characters, at most 200."""
    return "".join(c for c in " ".join(text.split()) if c.isprintable())[:200]


def refuse_sign_in(ctx: RequestContext, reason: str, message: str) -> SignInRefused:
    """A sign-in refused: `reason` for the audit, `message` for the person (neither holds a value)."""
    ctx.reason = f"oidc: {reason}"
    return SignInRefused(message)


async def _finish(
    rt: Runtime, ctx: RequestContext, *, cookie: str | None, params: Mapping[str, str], max_ttl: int
) -> SignedIn:
    provider = _console(rt)
    config = provider.config
    again = "start again from the sign-in page"
    found = _login_id(rt, cookie)
    now = rt.clock()
    if found is None:
        raise refuse_sign_in(
            ctx,
            "no sign-in started in this browser",
            f"state: no sign-in was started in this browser; {again}",
        )
    login_id, started, next_path = found
    # The answer may reach another replica, whose clock may be a little behind the one that started.
    if not timedelta(seconds=-config.leeway) <= now - started <= timedelta(seconds=SSO_WINDOW):
        raise refuse_sign_in(
            ctx, "sign-in expired", f"state: the sign-in took longer than {SSO_WINDOW // 60} minutes; {again}"
        )
    state, nonce, verifier = _derived(rt, login_id)
    sent = params.get("state", "")
    if not sent or not hmac.compare_digest(sent.encode(), state.encode()):
        raise refuse_sign_in(
            ctx, "state mismatch", f"state: the answer does not belong to this browser's sign-in; {again}"
        )
    if "iss" in params and params["iss"] != config.issuer:
        # RFC 9207: the answer names the provider that sent it; another one is a mix-up attack.
        raise refuse_sign_in(
            ctx, "the answer names another issuer", f"iss: the answer comes from another provider; {again}"
        )
    if "error" in params:
        code = sso.error_code(params.get("error"))
        # What the provider says is shown (escaped, bounded) to the person; the audit keeps the code only.
        said = _shown(params.get("error_description", ""))
        raise refuse_sign_in(
            ctx,
            f"the provider answered {code}",
            f"{config.label} did not sign you in ({code})" + (f": {said}" if said else ""),
        )
    code = params.get("code", "")
    if not code or len(code) > 2048:
        raise refuse_sign_in(
            ctx, "no code in the answer", f"code: the provider's answer carries no code; {again}"
        )
    await _not_locked_out(rt, ctx)  # before the sign-in is used up: a person locked out may retry it later
    async with rt.engine.begin() as conn:
        # Used once, whatever happens next: a replayed answer never reaches the provider again.
        fresh = await replays.remember_jti(
            conn,
            issuer=_USED,
            jti_hash=keyed_hash(rt.keys.hmac_key, b"console-sso-used", login_id),
            expires_at=started + timedelta(seconds=SSO_WINDOW + 60),
            now=now,
        )
    if not fresh:
        raise refuse_sign_in(ctx, "replayed callback", f"state: this sign-in was already used; {again}")
    return await _counted(
        rt,
        ctx,
        lambda: _exchange(rt, ctx, provider, code=code, login=(nonce, verifier, next_path), max_ttl=max_ttl),
    )


async def _exchange(
    rt: Runtime,
    ctx: RequestContext,
    provider: ConsoleProvider,
    *,
    code: str,
    login: tuple[str, str, str],
    max_ttl: int,
) -> SignedIn:
    """Redeem the code, verify the ID token, map its claims to a console role and issue the session's token."""
    config = provider.config
    nonce, verifier, next_path = login
    again = "start again from the sign-in page"
    now = rt.clock()
    try:
        token = await _provider_call(lambda: provider.redeem(code, verifier=verifier))
    except sso.CodeRefused as exc:
        raise refuse_sign_in(ctx, exc.reason, f"code: {exc.reason}; {again}") from None
    except FetchFailed as exc:
        ctx.reason = f"oidc: {exc}"
        raise Unavailable(f"{exc}; no session was opened") from None

    def check(jwks: dict[str, Any]) -> oidc.Verified:
        return oidc.verify(
            token,
            jwks=jwks,
            issuer=config.issuer,
            audience=config.client_id,
            algorithms=config.algorithms,
            now=now,
            leeway=config.leeway,
            nonce=nonce,
        )

    try:
        verified = await _verified(ctx, token, fetch=lambda force: provider.keys(force=force), check=check)
    except oidc.Refused as exc:
        raise refuse_sign_in(
            ctx, exc.reason, f"id_token: the provider's ID token was refused ({exc.reason})"
        ) from None
    for role in config.roles:
        matched = oidc.match_person(verified.claims, role.patterns(), glob=role.bound_claims_type == "glob")
        if matched is not None:
            break
    else:
        _client_id, who = principal_name(config.name, verified.subject)
        raise refuse_sign_in(
            ctx,
            f"no console role matches the claims of {who}",
            f"your {config.label} account is not mapped to any console role; ask an admin to add it "
            "(console.roles in the OIDC file)",
        )
    text = ", ".join(f"{k}={v}" for k, v in sorted(matched.items()))
    async with rt.engine.begin() as conn:
        issued = await _grant(
            conn,
            rt,
            ctx,
            issuer=config.name,
            subject=verified.subject,
            kind="user",
            scopes=role.scopes,
            ttl=min(role.ttl, max_ttl),
            reason=f"oidc console role {role.name}; matched {text}",
            refuse=lambda reason: refuse_sign_in(
                ctx, reason, "this account is disabled on the broker; ask an admin"
            ),
        )
    return SignedIn(issued=issued, next_path=next_path)
