"""Authentication, tokens and identities."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Response

from broker.api.deps import ActorDep, CtxDep, RuntimeDep
from broker.api.routes.common import NO_STORE, PROBLEMS
from broker.api.routes.lean import LeanRoute
from broker.api.schemas import (
    AccessorRequest,
    ChildTokenRequest,
    IdentityList,
    IdentityOut,
    IdentityRequest,
    NewIdentityOut,
    OidcLoginRequest,
    PrincipalOut,
    RenewRequest,
    RotatedSecretOut,
    RotateSecretRequest,
    ScopeBody,
    TokenInfoOut,
    TokenList,
    TokenListItem,
    TokenOut,
    TokenRequest,
)
from broker.services import auth, identities, oidc
from broker.services.auth import Identity, IssuedToken, TokenInfo

router = APIRouter(route_class=LeanRoute, prefix="/v1", responses=PROBLEMS)


def _scopes(scopes: tuple[object, ...]) -> list[ScopeBody]:
    return [ScopeBody.model_validate(s.to_json()) for s in scopes]  # type: ignore[attr-defined]


def info_out(info: TokenInfo, now: datetime) -> TokenInfoOut:
    """TokenInfo -> response body; expires_in comes from the server's clock."""
    return TokenInfoOut(
        accessor=info.accessor,
        expires_in=max(0, int((info.expires_at - now).total_seconds())),
        expires_at=info.expires_at,
        max_expires_at=info.max_expires_at,
        num_uses=info.num_uses,
        uses_remaining=info.uses_remaining,
        bound_cidrs=list(info.bound_cidrs),
        scopes=_scopes(info.scopes),
        principal=PrincipalOut(id=str(info.principal_id), type=info.principal_type, name=info.principal_name),
    )


def token_out(issued: IssuedToken, now: datetime) -> TokenOut:
    """IssuedToken -> response body with the token, shown once."""
    return TokenOut(token=issued.token, **info_out(issued.info, now).model_dump())


def identity_out(ident: Identity) -> IdentityOut:
    """Identity -> response body."""
    return IdentityOut(
        id=str(ident.id),
        name=ident.name,
        type=ident.type,
        client_id=ident.client_id,
        scopes=_scopes(ident.scopes),
        token_ttl=ident.token_ttl,
        token_max_ttl=ident.token_max_ttl,
        bound_cidrs=list(ident.bound_cidrs),
        created_at=ident.created_at,
        disabled=ident.disabled,
        deleted=ident.deleted,
        previous_secret_expires_at=ident.previous_secret_expires_at,
    )


@router.post("/auth/token", response_model=TokenOut, tags=["auth"])
async def issue_token(body: TokenRequest, rt: RuntimeDep, ctx: CtxDep, response: Response) -> TokenOut:
    """Exchange a client id and secret for a short-lived access token."""
    issued = await auth.exchange(
        rt, ctx, client_id=body.client_id, client_secret=body.client_secret, ttl=body.ttl
    )
    response.headers.update(NO_STORE)
    return token_out(issued, rt.clock())


@router.post("/auth/oidc", response_model=TokenOut, tags=["auth"])
async def oidc_login(body: OidcLoginRequest, rt: RuntimeDep, ctx: CtxDep, response: Response) -> TokenOut:
    """Exchange a CI platform's OIDC token (GitHub Actions, GitLab CI, any configured issuer) for a
    short-lived token with the scopes of the role its claims match."""
    issued = await oidc.login(rt, ctx, role=body.role, token=body.jwt)
    response.headers.update(NO_STORE)
    return token_out(issued, rt.clock())


@router.get("/auth/token/self", response_model=TokenInfoOut, tags=["auth"])
async def lookup_self(rt: RuntimeDep, ctx: CtxDep, actor: ActorDep) -> TokenInfoOut:
    """Describe the caller's token."""
    return info_out(await auth.lookup_self(rt, ctx, actor), rt.clock())


@router.post("/auth/token/renew", response_model=TokenInfoOut, tags=["auth"])
async def renew_self(body: RenewRequest, rt: RuntimeDep, ctx: CtxDep, actor: ActorDep) -> TokenInfoOut:
    """Extend the caller's token, never past its max TTL."""
    return info_out(await auth.renew_self(rt, ctx, actor, ttl=body.ttl), rt.clock())


@router.post("/auth/token/revoke-self", status_code=204, tags=["auth"])
async def revoke_self(rt: RuntimeDep, ctx: CtxDep, actor: ActorDep) -> Response:
    """Revoke the caller's token and its children."""
    await auth.revoke_self(rt, ctx, actor)
    return Response(status_code=204)


@router.post("/tokens", status_code=201, response_model=TokenOut, tags=["tokens"])
async def create_child(
    body: ChildTokenRequest, rt: RuntimeDep, ctx: CtxDep, actor: ActorDep, response: Response
) -> TokenOut:
    """Create a child token, never broader than the caller's."""
    issued = await auth.create_child(
        rt,
        ctx,
        actor,
        scopes=[s.model_dump() for s in body.scopes] if body.scopes is not None else None,
        ttl=body.ttl,
        num_uses=body.num_uses,
        bound_cidrs=body.bound_cidrs,
    )
    response.headers.update(NO_STORE)
    return token_out(issued, rt.clock())


@router.get("/tokens", response_model=TokenList, tags=["tokens"])
async def list_tokens(
    rt: RuntimeDep,
    ctx: CtxDep,
    actor: ActorDep,
    include_inactive: Annotated[bool, Query()] = False,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> TokenList:
    """Tokens newest first, by accessor, never their strings (admin); expired and revoked ones on request."""
    infos = await auth.list_tokens(rt, ctx, actor, include_inactive=include_inactive, limit=limit)
    now = rt.clock()
    return TokenList(
        tokens=[
            TokenListItem(created_at=i.created_at, revoked=i.revoked, **info_out(i, now).model_dump())
            for i in infos
        ]
    )


@router.post("/tokens/lookup", response_model=TokenInfoOut, tags=["tokens"])
async def lookup_accessor(
    body: AccessorRequest, rt: RuntimeDep, ctx: CtxDep, actor: ActorDep
) -> TokenInfoOut:
    """Describe a token by its accessor (admin)."""
    return info_out(await auth.lookup_accessor(rt, ctx, actor, accessor=body.accessor), rt.clock())


@router.post("/tokens/revoke", status_code=204, tags=["tokens"])
async def revoke_accessor(body: AccessorRequest, rt: RuntimeDep, ctx: CtxDep, actor: ActorDep) -> Response:
    """Revoke a token and its children by accessor (admin)."""
    await auth.revoke_accessor(rt, ctx, actor, accessor=body.accessor)
    return Response(status_code=204)


@router.post("/identities", status_code=201, response_model=NewIdentityOut, tags=["identities"])
async def create_identity(
    body: IdentityRequest, rt: RuntimeDep, ctx: CtxDep, actor: ActorDep, response: Response
) -> NewIdentityOut:
    """Create a user or machine identity; the client secret is shown once."""
    created = await auth.create_identity(
        rt,
        ctx,
        actor,
        name=body.name,
        type_=body.type,
        scopes=[s.model_dump() for s in body.scopes],
        token_ttl=body.token_ttl,
        token_max_ttl=body.token_max_ttl,
        bound_cidrs=body.bound_cidrs,
        client_id=body.client_id,
    )
    response.headers.update(NO_STORE)
    return NewIdentityOut(client_secret=created.client_secret, **identity_out(created.identity).model_dump())


@router.get("/identities", response_model=IdentityList, tags=["identities"])
async def list_identities(
    rt: RuntimeDep, ctx: CtxDep, actor: ActorDep, include_deleted: Annotated[bool, Query()] = False
) -> IdentityList:
    """Every identity (admin); deleted ones on request."""
    found = await auth.list_identities(rt, ctx, actor, include_deleted=include_deleted)
    return IdentityList(identities=[identity_out(i) for i in found])


@router.get("/identities/{client_id}", response_model=IdentityOut, tags=["identities"])
async def show_identity(client_id: str, rt: RuntimeDep, ctx: CtxDep, actor: ActorDep) -> IdentityOut:
    """One identity, deleted or not (admin)."""
    return identity_out(await identities.show_identity(rt, ctx, actor, client_id=client_id))


@router.post("/identities/{client_id}/disable", response_model=IdentityOut, tags=["identities"])
async def disable_identity(client_id: str, rt: RuntimeDep, ctx: CtxDep, actor: ActorDep) -> IdentityOut:
    """Disable an identity and revoke its tokens (admin); enable undoes the first part."""
    return identity_out(await identities.disable_identity(rt, ctx, actor, client_id=client_id))


@router.post("/identities/{client_id}/enable", response_model=IdentityOut, tags=["identities"])
async def enable_identity(client_id: str, rt: RuntimeDep, ctx: CtxDep, actor: ActorDep) -> IdentityOut:
    """Let a disabled identity log in again (admin)."""
    return identity_out(await identities.enable_identity(rt, ctx, actor, client_id=client_id))


@router.post("/identities/{client_id}/rotate-secret", response_model=RotatedSecretOut, tags=["identities"])
async def rotate_secret(
    client_id: str,
    body: RotateSecretRequest,
    rt: RuntimeDep,
    ctx: CtxDep,
    actor: ActorDep,
    response: Response,
) -> RotatedSecretOut:
    """Give an identity a new client secret, shown once; the old one works for `grace` seconds (admin)."""
    rotated = await identities.rotate_secret(rt, ctx, actor, client_id=client_id, grace=body.grace)
    response.headers.update(NO_STORE)
    return RotatedSecretOut(
        client_id=rotated.identity.client_id,
        client_secret=rotated.client_secret,
        previous_secret_valid_until=rotated.previous_valid_until,
    )


@router.delete("/identities/{client_id}", status_code=204, tags=["identities"])
async def delete_identity(client_id: str, rt: RuntimeDep, ctx: CtxDep, actor: ActorDep) -> Response:
    """Delete an identity: disabled for good and its tokens revoked; its client id stays taken (admin)."""
    await identities.delete_identity(rt, ctx, actor, client_id=client_id)
    return Response(status_code=204)
