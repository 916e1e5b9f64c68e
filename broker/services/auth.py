"""Credentials and tokens: exchange, authenticate, renew, child tokens, revoke, identities."""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import ipaddress
import json
import re
import secrets
import unicodedata
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError as DbIntegrityError

from broker.db.units import Tx
from broker.domain.access import Context, Kind, Refusal, Target, TokenFacts, addr_in, decide
from broker.domain.request import Actor, RequestContext
from broker.domain.scopes import ADMIN_SCOPES, Action, Scope, covered, scopes_from_json, with_denies
from broker.errors import BrokerError, Conflict, Forbidden, Invalid, NotFound, RateLimited, Unauthenticated
from broker.repositories import identities as repo
from broker.services import audit
from broker.services.runtime import Runtime

TOKEN_PREFIX = "srt_"  # noqa: S105 (a prefix, not a credential)
ACCESSOR_PREFIX = "sra_"
SECRET_PREFIX = "srs_"  # noqa: S105 (a prefix, not a credential)
MAX_AUTH_HEADER = 8 * 1024
_TOKEN_RE = re.compile(r"srt_[A-Za-z0-9_-]{43}")
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,127}")


class TooLarge(Invalid):
    """An oversized credential, refused before hashing."""


@dataclass(frozen=True)
class TokenInfo:
    """Everything about a token except the token itself."""

    accessor: str
    principal_id: int
    principal_type: str
    principal_name: str
    scopes: tuple[Scope, ...]
    bound_cidrs: tuple[str, ...]
    created_at: datetime
    expires_at: datetime
    max_expires_at: datetime
    num_uses: int | None
    uses_remaining: int | None
    revoked: bool


@dataclass(frozen=True)
class IssuedToken:
    """A new token: the string is shown once."""

    token: str
    info: TokenInfo

    def __repr__(self) -> str:
        return f"IssuedToken(token=***, accessor={self.info.accessor!r})"


@dataclass(frozen=True)
class Identity:
    """A principal as shown to admins."""

    id: int
    type: str
    name: str
    client_id: str
    scopes: tuple[Scope, ...]
    token_ttl: int
    token_max_ttl: int
    bound_cidrs: tuple[str, ...]
    created_at: datetime
    disabled: bool
    deleted: bool = False
    # Until when the secret replaced by the last rotation is still accepted (its grace period), if at all.
    previous_secret_expires_at: datetime | None = None


@dataclass(frozen=True)
class NewIdentity:
    """A created identity with its client secret, shown once."""

    identity: Identity
    client_secret: str

    def __repr__(self) -> str:
        return f"NewIdentity(client_id={self.identity.client_id!r}, client_secret=***)"


def keyed_hash(key: bytes, purpose: bytes, value: str) -> bytes:
    """HMAC-SHA256 of a credential; fast on purpose (inputs are 256-bit random, so no slow hash is needed)."""
    return hmac.new(key, purpose + b"\x00" + value.encode(), hashlib.sha256).digest()


def canonical_principal(client_id: str) -> str:
    """One counter for case and Unicode variants of a client id (cf. CVE-2025-6004)."""
    return unicodedata.normalize("NFKC", client_id).casefold()


def check_client_id(client_id: str) -> None:
    """Raise Invalid naming client_id unless it is a name a credential could never be mistaken for."""
    if not _NAME_RE.fullmatch(client_id):
        raise Invalid("client_id: 1-128 characters of letters, digits, '.', '_', '@', '-'", field="client_id")
    if client_id.casefold().startswith("oidc-"):
        raise Invalid("client_id: oidc-... is reserved for OIDC workload identities", field="client_id")
    if client_id.startswith((TOKEN_PREFIX, ACCESSOR_PREFIX, SECRET_PREFIX)):
        raise Invalid(
            "client_id: must not start with srt_, sra_ or srs_ (credential prefixes)", field="client_id"
        )


def _random(prefix: str) -> str:
    return prefix + base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()


def check_cidrs(values: list[str] | None, *, field: str) -> tuple[str, ...]:
    """Normalise CIDR strings or raise Invalid naming the field."""
    out = []
    for i, item in enumerate(values or []):
        try:
            out.append(str(ipaddress.ip_network(item, strict=False)))
        except ValueError:
            raise Invalid(f"{field}[{i}]: must be an IP address or CIDR block", field=field) from None
    return tuple(out)


def _cidrs_within(child: tuple[str, ...], parent: tuple[str, ...]) -> bool:
    if not parent:
        return True
    if not child:
        return False
    nets = [ipaddress.ip_network(p) for p in parent]
    for c in child:
        net = ipaddress.ip_network(c)
        if not any(net.version == p.version and net.subnet_of(p) for p in nets):  # type: ignore[arg-type]
            return False
    return True


def _info(row: repo.TokenRow) -> TokenInfo:
    return TokenInfo(
        accessor=row.accessor,
        principal_id=row.principal_id,
        principal_type=row.type,
        principal_name=row.name,
        scopes=scopes_from_json(row.scopes),
        bound_cidrs=tuple(row.bound_cidrs),
        created_at=row.created_at,
        expires_at=row.expires_at,
        max_expires_at=row.max_expires_at,
        num_uses=row.num_uses,
        uses_remaining=row.uses_remaining,
        revoked=row.revoked_at is not None,
    )


def _identity(row: repo.PrincipalRow) -> Identity:
    return Identity(
        id=row.id,
        type=row.type,
        name=row.name,
        client_id=row.client_id,
        scopes=scopes_from_json(row.scopes),
        token_ttl=row.token_ttl,
        token_max_ttl=row.token_max_ttl,
        bound_cidrs=tuple(row.bound_cidrs),
        created_at=row.created_at,
        disabled=row.disabled_at is not None,
        deleted=row.deleted_at is not None,
        previous_secret_expires_at=row.previous_secret_expires_at,
    )


async def _issue(
    conn: Any,
    rt: Runtime,
    *,
    principal_id: int,
    parent_id: int | None,
    scopes: tuple[Scope, ...],
    bound_cidrs: tuple[str, ...],
    ttl: int,
    max_expires_at: datetime,
    num_uses: int | None,
    expires_cap: datetime | None = None,
) -> IssuedToken:
    now = rt.clock()
    token = _random(TOKEN_PREFIX)
    accessor = _random(ACCESSOR_PREFIX)
    expires_at = min(now + timedelta(seconds=ttl), max_expires_at, expires_cap or max_expires_at)
    token_id = await repo.add_token(
        conn,
        token_hash=keyed_hash(rt.keys.hmac_key, b"token", token),
        accessor=accessor,
        principal_id=principal_id,
        parent_id=parent_id,
        scopes=[s.to_json() for s in scopes],
        bound_cidrs=list(bound_cidrs),
        ttl=ttl,
        now=now,
        expires_at=expires_at,
        max_expires_at=max_expires_at,
        num_uses=num_uses,
    )
    row = await repo.get_token(conn, token_id)
    assert row is not None
    return IssuedToken(token=token, info=_info(row))


def _check_ttl(ttl: int | None, *, field: str) -> None:
    if ttl is not None and not 1 <= ttl <= 31 * 86400:
        raise Invalid(f"{field}: must be between 1 and 2678400 seconds", field=field)


async def exchange(
    rt: Runtime, ctx: RequestContext, *, client_id: str, client_secret: str, ttl: int | None
) -> IssuedToken:
    """Exchange a client id and secret for a short-lived access token."""
    ctx.about("auth.token")
    keys = [f"principal:{canonical_principal(client_id)}", f"addr:{ctx.source_addr}"]
    wait = await rt.limiter.retry_after(keys)
    if wait:
        raise RateLimited("too many failed authentications; retry later", retry_after=wait)
    _check_ttl(ttl, field="ttl")
    try:
        now = rt.clock()
        async with rt.engine.begin() as conn:
            row = await repo.get_principal_by_client_id(conn, client_id) if len(client_id) <= 128 else None
            candidate = keyed_hash(rt.keys.hmac_key, b"client-secret", client_secret[:1024])
            expected = row.secret_hash if row is not None else b"\x00" * 32
            ok = hmac.compare_digest(candidate, expected) | hmac.compare_digest(
                candidate, previous_secret_hash(row, now)
            )
            ok = ok and row is not None and row.disabled_at is None
            if not ok or row is None:
                ctx.reason = "bad client credential"
                raise Unauthenticated()
            ctx.actor = Actor(
                principal_id=row.id, principal_type=row.type, name=row.name, token_id=0, accessor=""
            )
            bound = tuple(row.bound_cidrs)
            if not addr_in(ctx.source_addr, bound):
                ctx.reason = "source address outside the identity's bound CIDRs"
                raise Unauthenticated()
            issued = await _issue(
                conn,
                rt,
                principal_id=row.id,
                parent_id=None,
                scopes=scopes_from_json(row.scopes),
                bound_cidrs=bound,
                ttl=min(ttl or row.token_ttl, row.token_max_ttl),
                max_expires_at=now + timedelta(seconds=row.token_max_ttl),
                num_uses=None,
            )
            ctx.actor.accessor = issued.info.accessor
            # The event records the scopes the new token holds.
            ctx.actor.scopes = issued.info.scopes
            await audit.record(conn, rt, ctx)
        return issued
    except Unauthenticated:
        # Counted after the transaction: the count stays although the transaction rolls back.
        await rt.limiter.record(keys)
        raise


def previous_secret_hash(row: repo.PrincipalRow | None, now: datetime) -> bytes:
    """The hash of a rotated-out secret still in its grace period, or one no HMAC equals."""
    if row is None or row.previous_secret_hash is None or row.previous_secret_expires_at is None:
        return b"\x00" * 32
    return bytes(row.previous_secret_hash) if row.previous_secret_expires_at > now else b"\x00" * 32


def bearer_digest(rt: Runtime, authorization: str | None) -> bytes | None:
    """The keyed hash of a well-formed bearer token, or None when the header is missing or malformed."""
    if authorization is None or len(authorization) > MAX_AUTH_HEADER:
        return None
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not _TOKEN_RE.fullmatch(token):
        return None
    return keyed_hash(rt.keys.hmac_key, b"token", token)


def token_facts(row: Any) -> TokenFacts:
    """The decision's view of a token row joined to its principal (scopes parsed once per distinct text)."""
    cidrs = row.bound_cidrs
    if isinstance(cidrs, str):
        cidrs = json.loads(cidrs)
    return TokenFacts(
        token_id=row.id,
        accessor=row.accessor,
        principal_id=row.principal_id,
        principal_type=row.type,
        principal_name=row.name,
        scopes=token_scopes(row.scopes),
        bound_cidrs=tuple(cidrs),
        expires_at=row.expires_at,
        max_expires_at=row.max_expires_at,
        revoked_at=row.revoked_at,
        disabled_at=row.disabled_at,
        uses_remaining=row.uses_remaining if row.num_uses is not None else None,
    )


async def _lock_live_parent(conn: Any, rt: Runtime, actor: Actor) -> repo.TokenRow:
    """The caller's token row, locked with its whole parent chain; Forbidden unless every link can still
    authenticate now (a token revoked or expired after this request authenticated mints nothing)."""
    chain = await repo.lock_chain(conn, actor.token_id)
    now = rt.clock()
    parent = next((row for row in chain if row.id == actor.token_id), None)
    if parent is None:
        raise Forbidden("this token no longer exists")
    if parent.num_uses is not None:
        # A child would outlive the parent's use limit (Vault refuses this too).
        raise Forbidden("a use-limited token cannot create child tokens")
    # The network binding is the request's, checked when it authenticated.
    links = Context(source_addr=None, network=False)
    for row in chain:
        decision = decide(token_facts(row), None, links, now)
        if isinstance(decision, Refusal):
            who = "this token" if row.id == actor.token_id else "a parent of this token"
            raise Forbidden(
                f"{who} can no longer authenticate ({decision.reason}); it cannot create child tokens"
            )
    return parent


@functools.lru_cache(maxsize=1024)
def _scopes_of(text: str) -> tuple[Scope, ...]:
    return scopes_from_json(json.loads(text))


def token_scopes(raw: Any) -> tuple[Scope, ...]:
    """A token's scopes from its stored JSON (parsed once per distinct text: the hot path sees the same
    token again and again)."""
    if isinstance(raw, str):
        return _scopes_of(raw)
    return scopes_from_json(raw)


async def authenticate(rt: Runtime, ctx: RequestContext, authorization: str | None) -> Actor:
    """Check a bearer token and return the caller; every failure looks the same."""
    check_header(authorization)

    async def unit(tx: Tx) -> Actor | BrokerError:
        return await authenticate_in(tx, rt, ctx, authorization)

    # One lookup (and, for use-limited tokens, one atomic conditional update): each statement may commit
    # by itself. A unit of work: one thread hop on SQLite, no SQLAlchemy connection.
    got = await rt.units.run(unit, atomic=False)
    if isinstance(got, BrokerError):
        raise got
    return got


def check_header(authorization: str | None) -> None:
    """Refuse an oversized Authorization header before anything else looks at it."""
    if authorization is not None and len(authorization) > MAX_AUTH_HEADER:
        raise TooLarge("authorization: header larger than 8 KiB", field="authorization")


@dataclass(frozen=True)
class Found:
    """What a unit looked up for the token check in its own statement: the address's failure lock and
    the token row of the header's digest."""

    locked_until: float | None
    token: repo.TokenByHash | None
    digest: bytes  # the well-formed header's keyed hash the token row was looked up by


async def authenticate_in(
    tx: Tx, rt: Runtime, ctx: RequestContext, authorization: str | None, *, found: Found | None = None
) -> Actor | BrokerError:
    """The one token check, in a unit of work: the caller (also set on `ctx`), or the error to raise
    once the unit has committed (a failure is counted against the address whatever happens next).
    `found`: the look-ups, already made by the unit's own statement for a well-formed header."""
    addr_key = [f"addr:{ctx.source_addr}"]
    if found is None:
        wait = await rt.limiter.retry_after(addr_key, tx=tx)
    else:
        wait = rt.limiter.wait_from([found.locked_until])
    if wait:
        return RateLimited("too many failed authentications from this address; retry later", retry_after=wait)
    digest = found.digest if found is not None else bearer_digest(rt, authorization)
    if digest is None:
        decision: Actor | Refusal = Refusal(Kind.UNAUTHENTICATED, "missing or malformed token")
    else:
        row = found.token if found is not None else await repo.get_token_by_hash(tx, digest)
        facts = token_facts(row) if row is not None else None
        context = Context(source_addr=ctx.source_addr)
        decision = decide(facts, None, context, rt.clock())
        limited = isinstance(decision, Actor) and facts is not None and facts.uses_remaining is not None
        if limited and facts is not None and not await repo.use_once(tx, facts.token_id):
            # Spent by a concurrent request since the row was read: decided on what is left now.
            decision = decide(replace(facts, uses_remaining=0), None, context, rt.clock())
    if isinstance(decision, Refusal):
        await rt.limiter.record(addr_key, tx=tx)
        ctx.reason = decision.reason
        return Unauthenticated()
    ctx.actor = decision
    return decision


# `require` decides for a request that has authenticated already: the time plays no part.
_AUTHENTICATED = Context(source_addr=None, authenticated=True)
_NO_TIME = datetime.min


def require(
    actor: Actor, action: Action, project: str | None, environment: str | None, *, key: str | None = None
) -> None:
    """Raise Forbidden unless the actor's scopes grant the action (on `key`, when one is named)."""
    decision = decide(actor, Target(action, project, environment, key), _AUTHENTICATED, _NO_TIME)
    if isinstance(decision, Refusal):
        raise Forbidden(decision.reason)


async def lookup_self(rt: Runtime, ctx: RequestContext, actor: Actor) -> TokenInfo:
    """Describe the caller's own token."""
    ctx.about("token.lookup-self")
    async with rt.engine.begin() as conn:
        row = await repo.get_token(conn, actor.token_id)
        if row is None:
            raise NotFound("token not found")
        await audit.record(conn, rt, ctx)
    return _info(row)


async def renew_self(rt: Runtime, ctx: RequestContext, actor: Actor, *, ttl: int | None) -> TokenInfo:
    """Extend the caller's token by its TTL (or less), never past its max expiry."""
    ctx.about("token.renew-self")
    _check_ttl(ttl, field="ttl")
    async with rt.engine.begin() as conn:
        row = await repo.get_token(conn, actor.token_id)
        if row is None:
            raise NotFound("token not found")
        step = min(ttl or row.ttl, row.ttl)
        expires = min(rt.clock() + timedelta(seconds=step), row.max_expires_at)
        parent = await repo.get_token(conn, row.parent_id) if row.parent_id is not None else None
        if parent is not None:
            # A child never outlives its parent (whose expiry only ever grows).
            expires = min(expires, parent.expires_at)
        await repo.set_expiry(conn, row.id, max(expires, row.expires_at))
        row = await repo.get_token(conn, actor.token_id)
        assert row is not None
        await audit.record(conn, rt, ctx)
    return _info(row)


async def revoke_self(rt: Runtime, ctx: RequestContext, actor: Actor) -> None:
    """Revoke the caller's token and its children."""
    ctx.about("token.revoke-self")
    async with rt.engine.begin() as conn:
        await repo.revoke_tree(conn, [actor.token_id], rt.clock())
        await audit.record(conn, rt, ctx, status=204)


async def create_child(
    rt: Runtime,
    ctx: RequestContext,
    actor: Actor,
    *,
    scopes: list[Any] | None,
    ttl: int | None,
    num_uses: int | None,
    bound_cidrs: list[str] | None,
) -> IssuedToken:
    """Create a token under the caller's, never broader in scope, lifetime or network."""
    ctx.about("token.create")
    parent_scopes = actor.scopes
    if not parent_scopes:
        raise Forbidden("this token has no scopes to delegate")
    child_scopes = parent_scopes if scopes is None else scopes_from_json(scopes)
    if not covered(parent_scopes, child_scopes):
        raise Forbidden("scopes: a child token cannot be broader than its parent")
    child_scopes = with_denies(parent_scopes, child_scopes)
    _check_ttl(ttl, field="ttl")
    if num_uses is not None and not 1 <= num_uses <= 1_000_000:
        raise Invalid("num_uses: must be between 1 and 1000000", field="num_uses")
    cidrs = actor.bound_cidrs if bound_cidrs is None else check_cidrs(bound_cidrs, field="bound_cidrs")
    if not _cidrs_within(cidrs, actor.bound_cidrs):
        raise Forbidden("bound_cidrs: a child token cannot reach beyond its parent's networks")
    assert actor.expires_at is not None and actor.max_expires_at is not None
    async with rt.engine.begin() as conn:
        await _lock_live_parent(conn, rt, actor)
        parent_ttl = int((actor.expires_at - rt.clock()).total_seconds())
        issued = await _issue(
            conn,
            rt,
            principal_id=actor.principal_id,
            parent_id=actor.token_id,
            scopes=child_scopes,
            bound_cidrs=cidrs,
            ttl=max(1, min(ttl or rt.settings.token_ttl, parent_ttl)),
            max_expires_at=actor.max_expires_at,
            num_uses=num_uses,
            expires_cap=actor.expires_at,  # never outlive the parent, not even by a fraction of a second
        )
        await audit.record(conn, rt, ctx, status=201)
    return issued


async def issue_child(
    conn: Any, rt: Runtime, actor: Actor, *, scopes: tuple[Scope, ...], ttl: int, num_uses: int | None
) -> IssuedToken:
    """Mint a child of the caller's token in the caller's transaction (deploy tokens); the caller audits."""
    if not covered(actor.scopes, scopes):
        raise Forbidden("scopes: a child token cannot be broader than its parent")
    assert actor.expires_at is not None and actor.max_expires_at is not None
    await _lock_live_parent(conn, rt, actor)
    parent_ttl = int((actor.expires_at - rt.clock()).total_seconds())
    return await _issue(
        conn,
        rt,
        principal_id=actor.principal_id,
        parent_id=actor.token_id,
        scopes=with_denies(actor.scopes, scopes),
        bound_cidrs=actor.bound_cidrs,
        ttl=max(1, min(ttl, parent_ttl)),
        max_expires_at=actor.max_expires_at,
        num_uses=num_uses,
        expires_cap=actor.expires_at,  # never outlive the parent
    )


async def lookup_accessor(rt: Runtime, ctx: RequestContext, actor: Actor, *, accessor: str) -> TokenInfo:
    """Describe a token by accessor (admins)."""
    ctx.about("token.lookup")
    require(actor, Action.ADMIN, None, None)
    async with rt.engine.begin() as conn:
        row = await repo.get_token_by_accessor(conn, accessor[:128])
        if row is None:
            raise NotFound("accessor: no token has this accessor")
        await audit.record(conn, rt, ctx)
    return _info(row)


async def list_tokens(
    rt: Runtime, ctx: RequestContext, actor: Actor, *, include_inactive: bool, limit: int
) -> list[TokenInfo]:
    """Tokens by accessor, newest first, never their strings (admins); live ones unless `include_inactive`."""
    ctx.about("token.list")
    require(actor, Action.ADMIN, None, None)
    if not 1 <= limit <= 1000:
        raise Invalid("limit: must be between 1 and 1000", field="limit")
    async with rt.engine.begin() as conn:
        rows = await repo.list_tokens(conn, now=rt.clock(), include_inactive=include_inactive, limit=limit)
        await audit.record(conn, rt, ctx)
    return [_info(row) for row in rows]


async def revoke_accessor(rt: Runtime, ctx: RequestContext, actor: Actor, *, accessor: str) -> None:
    """Revoke a token (and its children) by accessor (admins)."""
    ctx.about("token.revoke")
    require(actor, Action.ADMIN, None, None)
    async with rt.engine.begin() as conn:
        row = await repo.get_token_by_accessor(conn, accessor[:128])
        if row is None:
            raise NotFound("accessor: no token has this accessor")
        await repo.revoke_tree(conn, [row.id], rt.clock())
        await audit.record(conn, rt, ctx, status=204)


async def _new_principal(
    conn: Any,
    rt: Runtime,
    *,
    type_: str,
    name: str,
    client_id: str,
    scopes: tuple[Scope, ...],
    token_ttl: int,
    token_max_ttl: int,
    bound_cidrs: tuple[str, ...],
) -> NewIdentity:
    secret = _random(SECRET_PREFIX)
    try:
        pid = await repo.add_principal(
            conn,
            type_=type_,
            name=name,
            client_id=client_id,
            secret_hash=keyed_hash(rt.keys.hmac_key, b"client-secret", secret),
            scopes=[s.to_json() for s in scopes],
            token_ttl=token_ttl,
            token_max_ttl=token_max_ttl,
            bound_cidrs=list(bound_cidrs),
            now=rt.clock(),
        )
    except DbIntegrityError:
        raise Conflict(f"client_id: {client_id} is taken") from None
    row = await repo.get_principal(conn, pid)
    assert row is not None
    return NewIdentity(identity=_identity(row), client_secret=secret)


async def create_identity(
    rt: Runtime,
    ctx: RequestContext,
    actor: Actor,
    *,
    name: str,
    type_: str,
    scopes: list[Any],
    token_ttl: int | None,
    token_max_ttl: int | None,
    bound_cidrs: list[str],
    client_id: str | None = None,
) -> NewIdentity:
    """Create a user or machine identity; the client secret is returned once and stored only hashed."""
    ctx.about("identity.create")
    require(actor, Action.ADMIN, None, None)
    if not _NAME_RE.fullmatch(name):
        raise Invalid("name: 1-128 characters of letters, digits, '.', '_', '@', '-'", field="name")
    if type_ not in ("machine", "user"):
        raise Invalid("type: must be machine or user", field="type")
    parsed = scopes_from_json(scopes)
    if not covered(actor.scopes, parsed):
        raise Forbidden("scopes: you cannot grant more than your own token holds")
    parsed = with_denies(actor.scopes, parsed)
    max_ttl = token_max_ttl or rt.settings.token_max_ttl
    ttl = token_ttl or rt.settings.token_ttl
    _check_ttl(ttl, field="token_ttl")
    _check_ttl(max_ttl, field="token_max_ttl")
    if ttl > max_ttl:
        raise Invalid("token_ttl: must not exceed token_max_ttl", field="token_ttl")
    cidrs = check_cidrs(bound_cidrs, field="bound_cidrs")
    if client_id is not None:
        check_client_id(client_id)
    else:
        client_id = "sri_" + secrets.token_hex(12)
    async with rt.engine.begin() as conn:
        if any(
            canonical_principal(r.client_id) == canonical_principal(client_id)
            for r in await repo.list_principals(conn)
        ):
            raise Conflict(f"client_id: {client_id} is taken (client ids differing only in case are one)")
        created = await _new_principal(
            conn,
            rt,
            type_=type_,
            name=name,
            client_id=client_id,
            scopes=parsed,
            token_ttl=ttl,
            token_max_ttl=max_ttl,
            bound_cidrs=cidrs,
        )
        await audit.record(conn, rt, ctx, status=201)
    return created


async def list_identities(
    rt: Runtime, ctx: RequestContext, actor: Actor, *, include_deleted: bool = False
) -> list[Identity]:
    """Every identity (admins); deleted ones only when asked."""
    ctx.about("identity.list")
    require(actor, Action.ADMIN, None, None)
    async with rt.engine.begin() as conn:
        rows = await repo.list_principals(conn)
        await audit.record(conn, rt, ctx)
    return [_identity(r) for r in rows if include_deleted or r.deleted_at is None]


async def bootstrap_admin(rt: Runtime) -> NewIdentity | None:
    """Create the bootstrap admin if the broker has no principal yet; None if it already has one."""
    async with rt.engine.begin() as conn:
        if await repo.count_principals(conn):
            return None
        return await _new_principal(
            conn,
            rt,
            type_="user",
            name="admin",
            client_id="admin",
            scopes=ADMIN_SCOPES,
            token_ttl=rt.settings.token_ttl,
            token_max_ttl=rt.settings.token_max_ttl,
            bound_cidrs=(),
        )
