"""A deploy as pure data: the broker's plan and bundle turned into the build, the push and one step per host.

Nothing here runs a program or talks to the broker; the engine does. `describe` is what `--dry-run`
prints: names, hosts, argv shapes and fingerprints, never a value.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from cli.client import DeployBundle, DeployPlan, HostStatus, KeyRef
from cli.errors import CliError
from cli.plans import docker

DEFAULT_READINESS_DELAY = 7  # seconds, as the manifest's deploy.readiness_delay default (and Kamal's)
SECRET_FILE_PLACEHOLDER = "<0600 temp file>"  # noqa: S105 (shown instead of a path)


@dataclass(frozen=True)
class HostStep:
    """What one host of one role gets: the container's command and options, and its env file."""

    host: str
    role: str
    cmd: str | None
    options: Mapping[str, str]
    env_file: bytes = field(repr=False)
    env_fingerprint: str


def repository(plan: DeployPlan) -> str:
    """The image's full repository name (registry server in front)."""
    return docker.repository(plan.image, plan.registry.server if plan.registry else None)


def image_ref(plan: DeployPlan) -> str:
    """`repository:version`, what is built, pushed and run."""
    return docker.image_ref(repository(plan), plan.version)


def hosts(plan: DeployPlan) -> list[tuple[str, str]]:
    """Every (role, host) pair of the plan, in the plan's order."""
    return [(role.name, item.host) for role in plan.roles for item in role.hosts]


def host_steps(plan: DeployPlan, bundle: DeployBundle) -> list[HostStep]:
    """One step per (role, host) of the plan, with the bundle's env file for it; CliError if one is missing."""
    files = {(item.role, item.host): item for item in bundle.hosts}
    steps = []
    for role in plan.roles:
        for entry in role.hosts:
            item = files.get((role.name, entry.host))
            if item is None:
                raise CliError(
                    f"the broker's bundle has no env file for host {entry.host} of role {role.name}; "
                    "nothing was started"
                )
            steps.append(
                HostStep(
                    host=entry.host,
                    role=role.name,
                    cmd=role.cmd,
                    options=dict(role.options),
                    env_file=item.env_file.encode("utf-8"),
                    env_fingerprint=item.env_fingerprint,
                )
            )
    return steps


def build_paths(plan: DeployPlan, manifest_dir: str) -> tuple[str, str | None]:
    """The build context and Dockerfile, relative paths taken from the manifest's directory."""
    builder = plan.builder
    context = posixpath.join(manifest_dir, builder.context or ".") if builder else manifest_dir
    dockerfile = posixpath.join(manifest_dir, builder.dockerfile) if builder and builder.dockerfile else None
    return posixpath.normpath(context), posixpath.normpath(dockerfile) if dockerfile else None


def build_argv(
    plan: DeployPlan,
    *,
    docker_binary: str,
    manifest_dir: str,
    secret_files: Mapping[str, str],
    network: str | None = None,
) -> list[str]:
    """The `docker build` argv for the plan (secrets by file, clear args only as build args)."""
    context, dockerfile = build_paths(plan, manifest_dir)
    builder = plan.builder
    return docker.build(
        docker_binary,
        ref=image_ref(plan),
        context=context,
        service=plan.service,
        dockerfile=dockerfile,
        target=builder.target if builder else None,
        args=builder.args if builder else {},
        secret_files=secret_files,
        network=network,
    )


def _short(fingerprint: str | None) -> str:
    if not fingerprint:
        return "-"
    algorithm, _, digest = fingerprint.partition(":")
    return f"{algorithm}:{digest[:12]}" if digest else fingerprint[:24]


def describe(
    plan: DeployPlan,
    *,
    project: str,
    environment: str,
    kind: str,
    keys: Sequence[KeyRef],
    statuses: Sequence[HostStatus] = (),
    docker_binary: str = "docker",
    manifest_dir: str = ".",
    network: str | None = None,
) -> list[str]:
    """The plan as lines for a person: what would be built, pushed and started where; never a value."""
    ref = image_ref(plan)
    lines = [f"{kind.capitalize()} {plan.service} {plan.version} to {project}/{environment} ({ref})"]
    if keys:
        lines.append(f"Secrets read ({len(keys)}): " + ", ".join(f"{k.environment}/{k.name}" for k in keys))
    if kind == "deploy":
        secret_files = {
            name: SECRET_FILE_PLACEHOLDER for name in (plan.builder.secrets if plan.builder else ())
        }
        argv = build_argv(
            plan,
            docker_binary=docker_binary,
            manifest_dir=manifest_dir,
            secret_files=secret_files,
            network=network,
        )
        lines.append("Build: DOCKER_BUILDKIT=1 " + docker.argv_text(argv))
        if plan.registry is not None:
            login = docker.login(docker_binary, server=plan.registry.server, username=plan.registry.username)
            lines.append("Push:  " + docker.argv_text(login) + "  (password on stdin)")
        lines.append("       " + docker.argv_text(docker.push(docker_binary, ref)))
    else:
        lines.append(f"No build or push: the hosts pull {ref}, which the registry already holds.")
    by_host = {(item.role, item.host): item for item in statuses}
    lines.append(f"Hosts ({len(hosts(plan))}), in parallel:")
    for role_name, host in hosts(plan):
        status = by_host.get((role_name, host))
        text = f"  {role_name:<12} {host:<24}"
        if status is not None:
            text += f" env {_short(status.expected_env_fingerprint)}"
            last = status.last
            text += (
                f"; runs {last.version} (env {_short(last.env_fingerprint)})"
                if last is not None
                else "; nothing deployed yet"
            )
            if status.rotated:
                text += "; rotated since: " + ", ".join(
                    f"{r.name} v{r.deployed_version}→v{r.current_version}" for r in status.rotated
                )
        lines.append(text.rstrip())
    container = f"{plan.service}-<role>-{plan.version}"
    lines.append(
        f"On each host: env file 0600 from stdin, docker login (password on stdin), pull, run {container} "
        f"with --env-file, wait until {health_wait(plan)}, stop the old container, "
        f"keep {plan.retain_images} images."
    )
    return lines


def health_wait(plan: DeployPlan) -> str:
    """What the deploy script waits for before a new container counts as up, as the script does it."""
    from cli.plans import remote

    health = plan.healthcheck
    delay = plan.raw.get("readiness_delay", DEFAULT_READINESS_DELAY)
    if health is None:
        waits = max(remote.DEFAULT_HEALTH_TIMEOUT, int(delay) + 10)
        return (
            f"the image's own HEALTHCHECK reports healthy (up to {waits} s) or, if the image has none, "
            f"the container has stayed up for {delay} s (readiness_delay)"
        )
    # The script's own reading of the plan's check (cli/plans/remote.py), so the defaults shown are its own.
    try:
        script_check = remote.health_from_plan(plan.raw.get("healthcheck"))
    except ValueError as exc:
        return f"(the deploy would refuse this health check: {exc})"
    if script_check is None:  # pragma: no cover - health is not None here
        return "the container runs"
    if health.cmd:
        check = "the health command passes inside the container"
    else:
        port = health.port or remote.DEFAULT_APP_PORT
        check = (
            f"GET {health.path or '/up'} on 127.0.0.1:{port} inside the container answers "
            "(wget or curl in the image)"
        )
    options = script_check.options()
    grace = ""
    if "--health-start-period" in options:
        period = options[options.index("--health-start-period") + 1].removesuffix("s")
        grace = f", failures ignored during a {period} s start period"
    return (
        f"{check}, tried every {script_check.interval:g} s{grace}, giving up after {script_check.timeout} s"
    )
