"""Health routes: no data, not audited."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from broker.api.deps import RuntimeDep
from broker.api.routes.lean import LeanRoute
from broker.api.schemas import Health
from broker.services import health

router = APIRouter(route_class=LeanRoute, tags=["health"])


class Readiness(BaseModel):
    """Each readiness check and its result; `failing` names the checks that did not pass."""

    status: Literal["ok", "unavailable"]
    checks: dict[str, Literal["ok", "failing"]]
    failing: list[str]


@router.get("/up", response_model=Health)
async def up() -> Health:
    """The process is up (liveness)."""
    return Health(status="ok")


@router.get("/healthz", response_model=Health, responses={503: {"model": Health}})
async def healthz(rt: RuntimeDep) -> Health | JSONResponse:
    """The broker can reach its database."""
    if await health.database_ok(rt):
        return Health(status="ok")
    return JSONResponse({"status": "database unavailable"}, status_code=503)


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}})
async def readyz(rt: RuntimeDep) -> JSONResponse:
    """Ready to serve: the database answers, the current key seals and opens, the audit sinks and the
    checkpoint directory are writable; 503 naming the failing checks otherwise."""
    results = await health.readiness(rt)
    failing = [name for name, ok in results.items() if not ok]
    body = Readiness(
        status="unavailable" if failing else "ok",
        checks={name: "ok" if ok else "failing" for name, ok in results.items()},
        failing=failing,
    )
    return JSONResponse(
        body.model_dump(), status_code=503 if failing else 200, headers={"Cache-Control": "no-store"}
    )
