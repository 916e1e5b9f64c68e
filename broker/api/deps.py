"""Annotated dependencies: the runtime, the request context and the authenticated caller."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from broker.domain.request import Actor, RequestContext
from broker.services import auth
from broker.services.runtime import Runtime

_bearer = HTTPBearer(auto_error=False, description="An access token from POST /v1/auth/token")


# Both are `async def` on purpose: FastAPI runs a plain `def` dependency in a worker thread, and a
# thread-pool hop per request is what ARCHITECTURE rule 7 keeps off the hot path.
async def get_runtime(request: Request) -> Runtime:
    """The runtime built by create_app."""
    rt: Runtime = request.app.state.runtime
    return rt


async def get_ctx(request: Request) -> RequestContext:
    """The request context set up by the edge middleware."""
    ctx: RequestContext = request.scope["state"]["ctx"]
    return ctx


async def get_actor(
    request: Request,
    rt: Annotated[Runtime, Depends(get_runtime)],
    ctx: Annotated[RequestContext, Depends(get_ctx)],
    _creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Actor:
    """Authenticate the bearer token (the raw header, so malformed ones fail the same way)."""
    return await auth.authenticate(rt, ctx, request.headers.get("authorization"))


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
CtxDep = Annotated[RequestContext, Depends(get_ctx)]
ActorDep = Annotated[Actor, Depends(get_actor)]
