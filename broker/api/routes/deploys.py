"""Deploys: start one (plan + deploy token), its bundle, host reports and finish; the ledger and status."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from broker.api.deps import ActorDep, CtxDep, RuntimeDep
from broker.api.routes.common import NO_STORE, PROBLEMS
from broker.api.routes.lean import LeanRoute
from broker.api.schemas.deploys import (
    BuilderOut,
    BundleHostOut,
    BundleOut,
    DeployCreatedOut,
    DeployDetailOut,
    DeployFinish,
    DeployHostReport,
    DeployListOut,
    DeployOut,
    DeployRequest,
    DeployStatusOut,
    DeployStatusRequest,
    HealthcheckOut,
    HostKeyOut,
    HostOut,
    KeyRefOut,
    LastOut,
    PlanHostOut,
    PlanOut,
    PlanRoleOut,
    RegistryOut,
    RotatedOut,
    ServedKeyOut,
    SshOut,
    StatusHostOut,
)
from broker.services import deploys as svc

router = APIRouter(route_class=LeanRoute, prefix="/v1", responses=PROBLEMS, tags=["deploys"])
ENV = "/projects/{project}/environments/{environment}"


def _deploy(d: svc.DeployInfo) -> DeployOut:
    return DeployOut(
        id=d.id,
        project=d.project,
        environment=d.environment,
        service=d.service,
        version=d.version,
        kind=d.kind,
        via=d.via,
        status=d.status,
        started_at=d.started_at,
        finished_at=d.finished_at,
        by=d.by,
    )


def _host(h: svc.HostRecord) -> HostOut:
    return HostOut(
        host=h.host,
        role=h.role,
        outcome=h.outcome,
        container=h.container,
        image_digest=h.image_digest,
        env_fingerprint=h.env_fingerprint,
        error=h.error,
        at=h.at,
    )


def _served(keys: list[svc.ServedKey]) -> list[ServedKeyOut]:
    return [
        ServedKeyOut(environment=k.environment, name=k.name, version=k.version, fingerprint=k.fingerprint)
        for k in keys
    ]


def _plan(plan: svc.Plan, version: str) -> PlanOut:
    body = plan.body
    roles: dict[str, PlanRoleOut] = {}
    for target in plan.targets:
        spec = body.roles[target.role]
        if target.role not in roles:
            roles[target.role] = PlanRoleOut(
                name=target.role, cmd=spec.cmd, options=dict(spec.options), hosts=[]
            )
        roles[target.role].hosts.append(PlanHostOut(host=target.host, tags=list(target.tags)))
    hc = body.healthcheck
    return PlanOut(
        service=body.service,
        image=body.image or "",
        version=version,
        registry=RegistryOut(server=body.registry.server, username=body.registry.username)
        if body.registry is not None
        else None,
        builder=BuilderOut(
            context=body.builder.context,
            dockerfile=body.builder.dockerfile,
            target=body.builder.target,
            args=dict(body.builder.args),
            secrets=list(body.builder.secrets),
        )
        if body.builder is not None
        else None,
        roles=list(roles.values()),
        ssh=SshOut(
            # Left out unless the manifest sets them, so an ssh config alias keeps its own User and Port.
            user=body.ssh.user if "user" in body.ssh.model_fields_set else None,
            port=body.ssh.port if "port" in body.ssh.model_fields_set else None,
            host_keys={h: list(f) for h, f in body.ssh.host_keys.items()},
        ),
        healthcheck=HealthcheckOut(
            path=hc.path, port=hc.port, cmd=hc.cmd, interval=hc.interval, timeout=hc.timeout
        )
        if hc is not None
        else None,
        retain_images=body.deploy.retain_images,
        stop_timeout=body.deploy.stop_timeout,
        readiness_delay=body.deploy.readiness_delay,
    )


@router.post(ENV + "/deploys", status_code=201, response_model=DeployCreatedOut)
async def start_deploy(
    project: str,
    environment: str,
    body: DeployRequest,
    rt: RuntimeDep,
    ctx: CtxDep,
    actor: ActorDep,
    response: Response,
) -> DeployCreatedOut:
    """Start a deploy: the plan, and a deploy token that reads only the plan's keys (shown once)."""
    started = await svc.start(
        rt,
        ctx,
        actor,
        project=project,
        environment=environment,
        manifest=body.manifest,
        version=body.version,
        ttl_seconds=body.ttl_seconds,
        hosts=body.hosts,
        kind=body.kind,
        via=body.via,
    )
    response.headers.update(NO_STORE)
    return DeployCreatedOut(
        deploy=_deploy(started.deploy),
        token=started.token.token,
        accessor=started.token.info.accessor,
        expires_at=started.token.info.expires_at,
        uses=started.uses,
        keys=[KeyRefOut(environment=e, name=n) for e, n in started.plan.keys],
        plan=_plan(started.plan, started.deploy.version),
    )


@router.post("/deploys/{deploy_id}/bundle", response_model=BundleOut)
async def deploy_bundle(
    deploy_id: str, rt: RuntimeDep, ctx: CtxDep, actor: ActorDep, response: Response
) -> BundleOut:
    """The deploy's env files and secrets (deploy token of this deploy only); never cached."""
    got = await svc.bundle(rt, ctx, actor, deploy_id=deploy_id)
    response.headers.update(NO_STORE)
    return BundleOut(
        hosts=[
            BundleHostOut(host=f.host, role=f.role, env_file=f.env_file, env_fingerprint=f.env_fingerprint)
            for f in got.hosts
        ],
        registry_password=got.registry_password,
        build_secrets=got.build_secrets,
        keys=_served(got.keys),
    )


@router.post("/deploys/{deploy_id}/hosts", status_code=201, response_model=HostOut)
async def report_host(
    deploy_id: str, body: DeployHostReport, rt: RuntimeDep, ctx: CtxDep, actor: ActorDep
) -> HostOut:
    """Record what happened on one host (deploy token of this deploy only)."""
    return _host(
        await svc.report_host(
            rt,
            ctx,
            actor,
            deploy_id=deploy_id,
            host=body.host,
            role=body.role,
            outcome=body.outcome,
            container=body.container,
            image_digest=body.image_digest,
            env_fingerprint=body.env_fingerprint,
            error=body.error,
        )
    )


@router.post("/deploys/{deploy_id}/finish", response_model=DeployOut)
async def finish_deploy(
    deploy_id: str, body: DeployFinish, rt: RuntimeDep, ctx: CtxDep, actor: ActorDep
) -> DeployOut:
    """End the deploy and revoke its token (deploy token of this deploy only)."""
    return _deploy(await svc.finish(rt, ctx, actor, deploy_id=deploy_id, outcome=body.outcome))


@router.get(ENV + "/deploys", response_model=DeployListOut)
async def list_deploys(
    project: str,
    environment: str,
    rt: RuntimeDep,
    ctx: CtxDep,
    actor: ActorDep,
    limit: Annotated[int, Query(ge=1, le=svc.LIST_MAX)] = 20,
) -> DeployListOut:
    """The environment's deploys, newest first."""
    found = await svc.list_deploys(rt, ctx, actor, project=project, environment=environment, limit=limit)
    return DeployListOut(deploys=[_deploy(d) for d in found])


@router.get("/deploys/{deploy_id}", response_model=DeployDetailOut)
async def get_deploy(deploy_id: str, rt: RuntimeDep, ctx: CtxDep, actor: ActorDep) -> DeployDetailOut:
    """One deploy with its host outcomes and the secret versions it was served (by fingerprint)."""
    got = await svc.get_deploy(rt, ctx, actor, deploy_id=deploy_id)
    return DeployDetailOut(
        **_deploy(got.deploy).model_dump(),
        hosts=[_host(h) for h in got.hosts],
        keys=_served(got.keys),
        host_keys=[
            HostKeyOut(
                host=k.host,
                role=k.role,
                environment=k.environment,
                name=k.name,
                version=k.version,
                fingerprint=k.fingerprint,
            )
            for k in got.host_keys
        ],
    )


def _last(entry: svc.LedgerEntry | None) -> LastOut | None:
    if entry is None:
        return None
    record = entry.record
    return LastOut(
        deploy=entry.deploy_id,
        version=entry.version,
        image_digest=record.image_digest,
        env_fingerprint=record.env_fingerprint,
        at=record.at,
        by=entry.by,
        outcome=record.outcome,
        error=record.error,
    )


@router.post(ENV + "/deploys/status", response_model=DeployStatusOut)
async def deploy_status(
    project: str,
    environment: str,
    body: DeployStatusRequest,
    rt: RuntimeDep,
    ctx: CtxDep,
    actor: ActorDep,
) -> DeployStatusOut:
    """Per host: what the ledger says runs there against what would be compiled now (drift, rotations)."""
    found = await svc.status(rt, ctx, actor, project=project, environment=environment, manifest=body.manifest)
    hosts = [
        StatusHostOut(
            host=h.host,
            role=h.role,
            last=_last(h.last),
            last_attempt=_last(h.attempt),
            behind=_last(h.behind),
            expected_env_fingerprint=h.expected_env_fingerprint,
            rotated=[
                RotatedOut(
                    name=r.name, deployed_version=r.deployed_version, current_version=r.current_version
                )
                for r in h.rotated
            ],
        )
        for h in found
    ]
    return DeployStatusOut(hosts=hosts)
