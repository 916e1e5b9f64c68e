"""A manifest's deploy plan for one environment, worked out here with the compiler's own parser (offline).

`app` commands need only the hosts, roles, ssh settings and options, and a dry run only shows them, so
neither asks the broker for a plan (which would open a deploy and mint a token). The parser is the pure
`broker.compiler.parse` the broker itself uses, so both sides read a manifest the same way; the plan has
the shape of the broker's PlanOut (docs/api.md), built as the broker builds it. A real deploy always
takes the broker's plan: the broker alone decides which keys a deploy may read.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cli.client import DeployPlan, plan_from_json
from cli.errors import CliError


def plan_json(
    text: str, environment: str, version: str, hosts: Sequence[str] | None = None
) -> dict[str, Any]:
    """The PlanOut object for `environment` of the manifest `text`; CliError naming the problem."""
    from broker.compiler.parse import parse_manifest
    from broker.errors import Invalid

    try:
        body = parse_manifest(text).for_environment(environment)
    except Invalid as exc:
        raise CliError(str(exc), exit_code=2) from None
    if body.image is None:
        raise CliError("image: the manifest needs an image to deploy", exit_code=2)
    targets = [
        (role, entry.host, list(entry.tags)) for role, spec in body.roles.items() for entry in spec.hosts
    ]
    if hosts is not None:
        known = {host for _role, host, _tags in targets}
        unknown = [host for host in hosts if host not in known]
        if unknown:
            raise CliError(
                f"--hosts: {unknown[0]} is not a host of any role in the manifest for {environment}"
            )
        targets = [t for t in targets if t[1] in set(hosts)]
    if not targets:
        raise CliError(f"manifest: no role has a host to deploy to in {environment}", exit_code=2)
    roles: dict[str, dict[str, Any]] = {}
    for role, host, tags in targets:
        spec = body.roles[role]
        entry = roles.setdefault(
            role, {"name": role, "cmd": spec.cmd, "options": dict(spec.options), "hosts": []}
        )
        entry["hosts"].append({"host": host, "tags": tags})
    registry, builder, health = body.registry, body.builder, body.healthcheck
    plan: dict[str, Any] = {
        "service": body.service,
        "image": body.image,
        "version": version,
        "registry": {"server": registry.server, "username": registry.username} if registry else None,
        "builder": {
            "context": builder.context,
            "dockerfile": builder.dockerfile,
            "target": builder.target,
            "args": dict(builder.args),
            "secrets": list(builder.secrets),
        }
        if builder
        else None,
        "roles": list(roles.values()),
        "ssh": {
            # As the broker's plan: null unless the manifest sets them, so an ssh config alias keeps its
            # own User and Port (ssh gets -l/-p only for a value the manifest gives).
            "user": body.ssh.user if "user" in body.ssh.model_fields_set else None,
            "port": body.ssh.port if "port" in body.ssh.model_fields_set else None,
            "host_keys": {host: list(prints) for host, prints in body.ssh.host_keys.items()},
        },
        "healthcheck": {
            "path": health.path,
            "port": health.port,
            "cmd": health.cmd,
            "interval": health.interval,
            "timeout": health.timeout,
        }
        if health
        else None,
        "retain_images": body.deploy.retain_images,
        "stop_timeout": body.deploy.stop_timeout,
        # Seconds a container without any health check must stay up to count (Kamal's readiness_delay).
        "readiness_delay": body.deploy.readiness_delay,
    }
    return plan


def local_plan(text: str, environment: str, version: str, hosts: Sequence[str] | None = None) -> DeployPlan:
    """`plan_json` as a DeployPlan."""
    return plan_from_json(plan_json(text, environment, version, hosts))
