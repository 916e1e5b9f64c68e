"""`strongroom deploy`, `deploy status`, `deploy list`, `deploy show` and `rollback`: build, push and start a
version on every host, and the ledger's view of it.

Callbacks stay short: options → cli.deploy.engine (which talks to the broker and runs docker and ssh) →
a summary. See docs/deploy.md for what happens and what it promises.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import click

from cli import output
from cli.commands.compile import MANIFEST, pick_project, read_manifest
from cli.errors import CliError
from cli.options import F, check_slug, json_option
from cli.session import Session

if TYPE_CHECKING:
    from cli.client import BrokerClient, DeployInfo, LastDeploy
    from cli.deploy.engine import DeployReport
    from cli.deploy.status import HostState

DEFAULT_TTL_SECONDS = 900


def _project_option(f: F) -> F:
    return click.option(
        "-p",
        "--project",
        envvar="STRONGROOM_PROJECT",
        metavar="PROJECT",
        callback=check_slug,
        help="Project slug [env: STRONGROOM_PROJECT; default: `project:` in strongroom.yml].",
    )(f)


def _environment_option(required: bool) -> Callable[[F], F]:
    def decorate(f: F) -> F:
        return click.option(
            "-e",
            "--environment",
            metavar="ENVIRONMENT",
            required=required,
            callback=check_slug,
            help="Environment slug, e.g. production.",
        )(f)

    return decorate


def _manifest_option(f: F) -> F:
    return click.option(
        "-f",
        "--manifest",
        "manifest_path",
        type=click.Path(dir_okay=False, path_type=Path),
        default=MANIFEST,
        show_default=True,
        help="The manifest (strongroom.yml) to deploy.",
    )(f)


def _split_hosts(ctx: click.Context, param: click.Parameter, value: str | None) -> list[str] | None:
    if value is None:
        return None
    hosts = list(dict.fromkeys(h.strip() for h in value.split(",") if h.strip()))
    if not hosts:
        raise click.BadParameter("give at least one host, e.g. web1,web2", ctx=ctx, param=param)
    return hosts


def _hosts_option(f: F) -> F:
    return click.option(
        "--hosts",
        metavar="HOST,...",
        callback=_split_hosts,
        help="Only these hosts of the manifest (comma-separated).",
    )(f)


def _common_deploy_options(f: F) -> F:
    for decorate in (
        click.option("-v", "--verbose", is_flag=True, help="Show docker's build and push output (redacted)."),
        click.option(
            "--ttl",
            "ttl_seconds",
            type=click.IntRange(60, 3600),
            default=DEFAULT_TTL_SECONDS,
            show_default=True,
            help="Seconds the deploy token lives (60-3600); the build and push must end within it, less "
            "a margin for the hosts. It is revoked when the deploy ends anyway.",
        ),
        click.option(
            "--fail-fast",
            is_flag=True,
            help="Change no host unless every host passes its host-key check and preflight, and start no "
            "new host after the first failure.",
        ),
        click.option(
            "--dry-run", is_flag=True, help="Print the plan (names, hosts, fingerprints; never a value)."
        ),
        _hosts_option,
        _manifest_option,
        _project_option,
    ):
        f = decorate(f)
    return f


def _say(line: str) -> None:
    click.echo(output.clean(line), err=True)


@click.group("deploy", invoke_without_command=True)
@_environment_option(required=False)
@_common_deploy_options
@click.option(
    "--version",
    "version",
    metavar="VERSION",
    help="Image tag to build and deploy [default: the git commit of the manifest's directory].",
)
@click.option(
    "--no-cache",
    is_flag=True,
    help="Build without docker's cache: needed after a build secret rotated, since BuildKit's cache "
    "key ignores a secret's content.",
)
@click.option(
    "--via",
    type=click.Choice(["ssh", "kamal"]),
    default="ssh",
    show_default=True,
    help="ssh: Strongroom's own driver; kamal: write the Kamal files and run `kamal deploy`.",
)
@click.pass_context
def deploy_group(
    ctx: click.Context,
    environment: str | None,
    project: str | None,
    manifest_path: Path,
    hosts: list[str] | None,
    dry_run: bool,
    fail_fast: bool,
    ttl_seconds: int,
    verbose: bool,
    version: str | None,
    no_cache: bool,
    via: str,
) -> None:
    """Build, push and start the manifest's service on every host of ENVIRONMENT, with short-lived credentials.

    The broker mints a deploy token that reads only the keys this deploy needs; build secrets go to
    BuildKit as 0600 files, the registry password on stdin, each host's env file over ssh's stdin into
    a 0600 file. The new container must become healthy before the old one stops. The token is revoked
    when the deploy ends, whatever the outcome, and the broker records what now runs where.
    """
    if ctx.invoked_subcommand is not None:
        return
    if environment is None:
        raise click.MissingParameter(ctx=ctx, param=_param(ctx, "environment"))
    session: Session = ctx.obj
    text = read_manifest(manifest_path)
    project = pick_project(project, text)
    manifest_dir = str(manifest_path.resolve().parent)
    if version is None:
        from cli.deploy.engine import default_version

        try:
            version = default_version(manifest_dir)
        except CliError:
            if not dry_run:
                raise
            version = "unversioned"  # a dry run shows the plan even outside a clean git tree
    client = session.client()
    if dry_run:
        _dry_run(client, project, environment, text, manifest_dir, version, hosts, "deploy")
        return
    if via == "kamal":
        from cli.deploy.kamal import deploy_with_kamal

        raise click.exceptions.Exit(
            deploy_with_kamal(
                client,
                project=project,
                environment=environment,
                manifest=text,
                manifest_dir=manifest_dir,
                version=version,
                ttl_seconds=ttl_seconds,
                hosts=hosts,
                say=_say,
            )
        )
    _run(
        client,
        project,
        environment,
        text,
        manifest_dir,
        version,
        "deploy",
        hosts,
        fail_fast,
        ttl_seconds,
        verbose,
        no_cache=no_cache,
    )


def _param(ctx: click.Context, name: str) -> click.Parameter:
    return next(p for p in ctx.command.params if p.name == name)


def _dry_run(
    client: BrokerClient,
    project: str,
    environment: str,
    manifest: str,
    manifest_dir: str,
    version: str,
    hosts: list[str] | None,
    kind: str,
) -> None:
    """The plan from the manifest, the keys and problems from `check`, the fingerprints from `status`."""
    import os

    from cli.client import KeyRef
    from cli.deploy import plan as plans
    from cli.deploy.engine import BUILD_NETWORK_ENVVAR, docker_binary
    from cli.deploy.localplan import local_plan

    plan = local_plan(manifest, environment, version, hosts)
    checked = client.check(project=project, environment=environment, manifest=manifest, targets=["env-file"])
    statuses = client.deploy_status(project=project, environment=environment, manifest=manifest)
    for line in plans.describe(
        plan,
        project=project,
        environment=environment,
        kind=kind,
        keys=[KeyRef(k.environment, k.name, k.version) for k in checked.keys],
        statuses=statuses,
        docker_binary=docker_binary(os.environ),
        manifest_dir=manifest_dir,
        network=os.environ.get(BUILD_NETWORK_ENVVAR) or None,
    ):
        click.echo(output.clean(line))
    for problem in checked.problems:
        label = "warning" if problem.level == "warning" else "error"
        click.echo(f"{label}: {output.clean(problem.text())}", err=True)
    click.echo("Dry run: nothing was fetched, built, pushed or started.")
    if not checked.ok:
        raise click.exceptions.Exit(1)


def _run(
    client: BrokerClient,
    project: str,
    environment: str,
    manifest: str,
    manifest_dir: str,
    version: str,
    kind: str,
    hosts: list[str] | None,
    fail_fast: bool,
    ttl_seconds: int,
    verbose: bool,
    *,
    no_cache: bool = False,
) -> None:
    from cli.deploy.engine import DeployEngine, DeployRequest

    engine = DeployEngine(client, say=_say, verbose=verbose)
    report = engine.run(
        DeployRequest(
            project=project,
            environment=environment,
            manifest=manifest,
            manifest_dir=manifest_dir,
            version=version,
            kind=kind,
            hosts=hosts,
            fail_fast=fail_fast,
            ttl_seconds=ttl_seconds,
            no_cache=no_cache,
        )
    )
    _summary(report, kind)


def _summary(report: DeployReport, kind: str) -> None:
    rows = [
        (
            o.host,
            o.role,
            o.outcome,
            o.name or o.container or "-",
            (o.error or "").splitlines()[0][:120] if o.error else "",
        )
        for o in report.hosts
    ]
    if rows:
        output.emit_table(["HOST", "ROLE", "OUTCOME", "CONTAINER", "ERROR"], rows, empty="")
    if report.error:
        click.echo(f"error: {output.clean(report.error)}", err=True)
    click.echo(f"{kind.capitalize()} {report.deploy_id} of {report.image}: {report.outcome}.")
    if report.outcome != "succeeded":
        raise click.exceptions.Exit(1)


@deploy_group.command("status")
@_environment_option(required=True)
@_project_option
@_manifest_option
@click.option(
    "--ledger-only",
    is_flag=True,
    help="Only the broker's view (ledger against what a deploy would give now): no ssh to the hosts.",
)
@json_option
@click.pass_obj
def status_command(
    session: Session,
    environment: str,
    project: str | None,
    manifest_path: Path,
    ledger_only: bool,
    as_json: bool,
) -> None:
    """Per host: what runs there (over ssh) against the ledger and what a deploy would give it now.

    States: current, deploying (a running deploy has not reported it yet), failed (its last attempt failed,
    so it runs what it ran before, or was abandoned before reporting it), behind (a newer version went to its
    role since), drift (env or version not what they should be), rotated (secrets changed since the deploy),
    missing (no running container), unreachable, never deployed. Exit 1 unless every host is current.
    """
    from cli.deploy.status import host_states

    text = read_manifest(manifest_path)
    project = pick_project(project, text)
    statuses = session.client().deploy_status(project=project, environment=environment, manifest=text)
    plan = None
    if not ledger_only:
        from cli.deploy.localplan import plan_json

        plan = plan_json(text, environment, "status")
    states = host_states(statuses, plan)
    if as_json:
        output.emit_json({"hosts": [_state_json(state) for state in states]})
    else:
        rows = []
        for state in states:
            last, running = state.status.last, state.running
            row = [state.status.host, state.status.role, _short(last.version if last else None)]
            if not ledger_only:
                row.append(_short(running.version) if running else "-")
            attempt = state.status.last_attempt
            row += [
                (last.at or "-") if last else "-",
                (last.by or "-") if last else "-",
                f"{attempt.outcome or '-'} {_short(attempt.version)}" if attempt else "-",
                state.describe(),
            ]
            rows.append(tuple(row))
        headers = ["HOST", "ROLE", "LEDGER", "RUNNING", "DEPLOYED", "BY", "LAST ATTEMPT", "STATE"]
        if ledger_only:
            headers.remove("RUNNING")
        output.emit_table(headers, rows, empty="No hosts.")
    if any(state.problem for state in states):
        raise click.exceptions.Exit(1)


def _short(version: str | None) -> str:
    return version[:12] if version else "-"


def _ledger_json(row: LastDeploy | None) -> dict[str, object] | None:
    if row is None:
        return None
    return {
        "deploy_id": row.deploy_id,
        "version": row.version,
        "image_digest": row.image_digest,
        "env_fingerprint": row.env_fingerprint,
        "at": row.at,
        "by": row.by,
        "outcome": row.outcome,
        "error": row.error,
    }


def _state_json(state: HostState) -> dict[str, object]:
    h, running = state.status, state.running
    return {
        "host": h.host,
        "role": h.role,
        "state": state.state,
        "states": list(state.states),
        "drift": state.problem,
        "inspected": state.inspected,
        "error": state.error,
        "expected_env_fingerprint": h.expected_env_fingerprint,
        "last": _ledger_json(h.last),
        "last_attempt": _ledger_json(h.last_attempt),
        "behind": _ledger_json(h.behind),
        "running": None
        if running is None
        else {
            "container": running.name,
            "id": running.id,
            "version": running.version,
            "image": running.image,
            "image_id": running.image_id,
            "repo_digests": running.repo_digests,
            "env_fingerprint": running.env_fingerprint,
            "deploy_id": running.deploy_id,
            "status": running.status,
            "health": running.health,
            "started_at": running.started_at,
        },
        "rotated": [
            {"name": r.name, "deployed_version": r.deployed_version, "current_version": r.current_version}
            for r in h.rotated
        ],
    }


@deploy_group.command("list")
@_environment_option(required=True)
@_project_option
@_manifest_option
@click.option(
    "--limit",
    type=click.IntRange(1, 100),
    default=20,
    show_default=True,
    help="How many deploys, newest first (1-100).",
)
@json_option
@click.pass_obj
def list_command(
    session: Session,
    environment: str,
    project: str | None,
    manifest_path: Path,
    limit: int,
    as_json: bool,
) -> None:
    """The ledger: ENVIRONMENT's deploys and rollbacks, newest first (see `deploy show ID` for one)."""
    if project is None:
        project = pick_project(project, read_manifest(manifest_path))
    found = session.client().list_deploys(project=project, environment=environment, limit=limit)
    if as_json:
        output.emit_json({"deploys": [_deploy_json(d) for d in found]})
        return
    rows = [
        (d.id, d.kind, _short(d.version), d.status, d.started_at, _took(d.started_at, d.finished_at), d.by)
        for d in found
    ]
    output.emit_table(
        ["ID", "KIND", "VERSION", "STATUS", "STARTED", "TOOK", "BY"],
        rows,
        empty=f"No deploys of {project}/{environment} in the ledger.",
    )


@deploy_group.command("show")
@click.argument("deploy_id", metavar="ID")
@json_option
@click.pass_obj
def show_command(session: Session, deploy_id: str, as_json: bool) -> None:
    """One deploy from the ledger: its hosts and outcomes, image digest, env fingerprints, the secret
    versions each host got (by fingerprint, never a value), who started it and how long it took."""
    found = session.client().get_deploy(deploy_id=deploy_id.strip())
    if as_json:
        output.emit_json(_deploy_json(found, detail=True))
        return
    output.emit_fields(
        [
            ("deploy", found.id),
            (
                "what",
                f"{found.kind} of {found.service} {found.version} to {found.project}/{found.environment}",
            ),
            ("via", found.via),
            ("status", found.status),
            ("by", found.by),
            ("started", found.started_at),
            ("finished", found.finished_at or "-"),
            ("took", _took(found.started_at, found.finished_at)),
        ]
    )
    click.echo("")
    output.emit_table(
        ["HOST", "ROLE", "OUTCOME", "AT", "IMAGE DIGEST", "ENV FINGERPRINT", "ERROR"],
        [
            (
                h.host,
                h.role,
                h.outcome,
                _after(found.started_at, h.at),
                h.image_digest or "-",
                h.env_fingerprint or "-",
                (h.error or "").splitlines()[0][:120] if h.error else "",
            )
            for h in found.hosts
        ],
        empty="No host has reported yet.",
    )
    click.echo("")
    held = {(k.environment, k.name) for k in found.host_keys}
    rows = [
        (k.host, k.role, f"{k.environment}/{k.name}", f"v{k.version}", k.fingerprint or "-")
        for k in found.host_keys
    ]
    # The registry password and build secrets are served to the deploy, not to a host's env file.
    rows += [
        ("-", "-", f"{k.environment}/{k.name}", f"v{k.version}" if k.version else "-", k.fingerprint or "-")
        for k in found.keys
        if (k.environment, k.name) not in held
    ]
    output.emit_table(["HOST", "ROLE", "KEY", "VERSION", "FINGERPRINT"], rows, empty="No secret was served.")


def _when(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _took(started: str | None, finished: str | None) -> str:
    start, end = _when(started), _when(finished)
    if start is None or end is None:
        return "-"
    return f"{(end - start).total_seconds():.1f} s"


def _after(started: str | None, at: str | None) -> str:
    """A host's report time as seconds after the deploy started (its timing), else as given."""
    start, end = _when(started), _when(at)
    if start is None or end is None:
        return at or "-"
    return f"+{(end - start).total_seconds():.1f} s"


def _deploy_json(d: DeployInfo, *, detail: bool = False) -> dict[str, object]:
    out: dict[str, object] = {
        "id": d.id,
        "project": d.project,
        "environment": d.environment,
        "service": d.service,
        "version": d.version,
        "kind": d.kind,
        "via": d.via,
        "status": d.status,
        "started_at": d.started_at,
        "finished_at": d.finished_at,
        "by": d.by,
    }
    if detail:
        out["hosts"] = [
            {
                "host": h.host,
                "role": h.role,
                "outcome": h.outcome,
                "container": h.container,
                "image_digest": h.image_digest,
                "env_fingerprint": h.env_fingerprint,
                "error": h.error,
                "at": h.at,
            }
            for h in d.hosts
        ]
        out["keys"] = [
            {"environment": k.environment, "name": k.name, "version": k.version, "fingerprint": k.fingerprint}
            for k in d.keys
        ]
        out["host_keys"] = [
            {
                "host": k.host,
                "role": k.role,
                "environment": k.environment,
                "name": k.name,
                "version": k.version,
                "fingerprint": k.fingerprint,
            }
            for k in d.host_keys
        ]
    return out


@click.command("rollback")
@_environment_option(required=True)
@_common_deploy_options
@click.option(
    "--version",
    "version",
    metavar="VERSION",
    help="The version to go back to [default: the one before the current one in the ledger].",
)
@click.pass_obj
def rollback_command(
    session: Session,
    environment: str,
    project: str | None,
    manifest_path: Path,
    hosts: list[str] | None,
    dry_run: bool,
    fail_fast: bool,
    ttl_seconds: int,
    verbose: bool,
    version: str | None,
) -> None:
    """Start an earlier version (already in the registry) on every host with today's secrets; no build, no push."""
    text = read_manifest(manifest_path)
    project = pick_project(project, text)
    manifest_dir = str(manifest_path.resolve().parent)
    client = session.client()
    if version is None:
        version = previous_version(client, project, environment)
        _say(f"Rolling back to {version}, the version before the current one in the ledger.")
    if dry_run:
        _dry_run(client, project, environment, text, manifest_dir, version, hosts, "rollback")
        return
    _run(
        client,
        project,
        environment,
        text,
        manifest_dir,
        version,
        "rollback",
        hosts,
        fail_fast,
        ttl_seconds,
        verbose,
    )


def previous_version(client: BrokerClient, project: str, environment: str) -> str:
    """The version deployed before the current one: the newest successful deploy's predecessor by version."""
    deploys = client.list_deploys(project=project, environment=environment, limit=50)
    done = [d for d in deploys if d.status in ("succeeded", "partial")]
    if not done:
        raise CliError(
            f"no earlier deploy of {project}/{environment} in the ledger: pass --version", exit_code=2
        )
    current = done[0].version
    for item in done[1:]:
        if item.version != current:
            return item.version
    raise CliError(
        f"the ledger of {project}/{environment} has no version before {current[:12]}: pass --version",
        exit_code=2,
    )
