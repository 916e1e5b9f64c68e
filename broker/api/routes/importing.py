"""Import from Vault or AWS Secrets Manager into a database environment (admin)."""

from __future__ import annotations

from fastapi import APIRouter

from broker.api.deps import ActorDep, CtxDep, RuntimeDep
from broker.api.routes.common import PROBLEMS
from broker.api.routes.lean import LeanRoute
from broker.api.schemas.importing import ImportChangeOut, ImportOut, ImportRequest
from broker.services import importing as svc

router = APIRouter(
    route_class=LeanRoute,
    prefix="/v1/projects/{project}/environments/{environment}",
    responses=PROBLEMS,
    tags=["secrets"],
)


@router.post("/import", response_model=ImportOut)
async def import_secrets(
    project: str, environment: str, body: ImportRequest, rt: RuntimeDep, ctx: CtxDep, actor: ActorDep
) -> ImportOut:
    """Copy an upstream's secrets into this environment; `dry_run` lists what would change."""
    report = await svc.import_into(
        rt,
        ctx,
        actor,
        project=project,
        environment=environment,
        source=body.source,
        backend=body.backend,
        dry_run=body.dry_run,
        overwrite=body.overwrite,
    )
    return ImportOut(
        source=report.source,
        backend=report.backend,
        dry_run=report.dry_run,
        changes=[
            ImportChangeOut(
                name=c.name,
                action=c.action,
                reason=c.reason,
                upstream_path=c.upstream_path,
                upstream_version=c.upstream_version,
            )
            for c in report.changes
        ],
    )
