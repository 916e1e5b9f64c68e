"""Health routes: no data, not audited."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from broker.api.deps import RuntimeDep
from broker.api.routes.lean import LeanRoute
from broker.api.schemas import Health
from broker.services import health

router = APIRouter(route_class=LeanRoute, tags=["health"])


@router.get("/up", response_model=Health)
async def up() -> Health:
    """The process is up (liveness)."""
    return Health(status="ok")


@router.get("/healthz", response_model=Health, responses={503: {"model": Health}})
async def healthz(rt: RuntimeDep) -> Health | JSONResponse:
    """The broker can reach its database (readiness)."""
    if await health.database_ok(rt):
        return Health(status="ok")
    return JSONResponse({"status": "database unavailable"}, status_code=503)
