"""`strongroom app logs|exec|stop|start|remove`: the deployed containers, on every host of an environment.

The hosts, roles and ssh settings come from the manifest itself (cli/deploy/localplan.py): no plan is
asked of the broker and no token minted. `exec --new` starts a one-off container with the env file the last
deploy left on the host, so a console sees exactly what the service sees (what Kamal's app exec lacks, #1180).

`logs` and `exec` print what the app prints, which may hold its secrets: their output is masked with the
values of the environment's env-file keys, read with the user's own token (one audited read; a user who may
not read them is refused, naming the key). `--reveal` prints it unmasked and reads nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import click

from cli import output
from cli.commands.compile import pick_project, read_manifest
from cli.commands.deploy import _environment_option, _hosts_option, _manifest_option, _project_option
from cli.errors import CliError
from cli.options import F
from cli.session import Session

if TYPE_CHECKING:
    from cli.deploy.process import Completed
    from cli.deploy.redact import Redactor
    from cli.deploy.remote import RemoteHost


def _role_option(f: F) -> F:
    return click.option("--role", metavar="ROLE", help="Only this role's containers.")(f)


def _targets(
    environment: str, manifest_path: Path, role: str | None, hosts: list[str] | None
) -> tuple[dict[str, object], list[str]]:
    """The plan (in the broker's PlanOut shape) and the hosts to act on, from the manifest alone."""
    from cli.client import plan_from_json
    from cli.deploy.localplan import plan_json

    raw = plan_json(read_manifest(manifest_path), environment, "app", hosts)
    plan = plan_from_json(raw)
    roles = [r for r in plan.roles if role is None or r.name == role]
    if role is not None and not roles:
        raise CliError(f"role {role} is not in the manifest for {environment}", exit_code=2)
    chosen = list(dict.fromkeys(h.host for r in roles for h in r.hosts))
    return raw, chosen


def _masking(
    session: Session, manifest_path: Path, project: str | None, environment: str, action: str, reveal: bool
) -> Redactor:
    """A redactor seeded with every value the environment's env files read (empty with --reveal)."""
    from cli.deploy.redact import Redactor

    redactor = Redactor()
    if reveal:
        return redactor
    text = read_manifest(manifest_path)
    project = pick_project(project, text)
    client = session.client()
    try:
        checked = client.check(project=project, environment=environment, manifest=text, targets=["env-file"])
        by_environment: dict[str, list[str]] = {}
        for key in checked.keys:
            by_environment.setdefault(key.environment, []).append(key.name)
        for source, names in by_environment.items():
            redactor.add(
                *client.values(project=project, environment=source, names=sorted(set(names))).values()
            )
    except CliError as exc:
        raise CliError(
            f"app {action} masks the app's output with the values of {project}/{environment}'s env files, "
            f"and reading them failed: {exc.message} (a user who may read them, or --reveal to print the "
            "output unmasked, is needed)",
            exit_code=exc.exit_code,
        ) from None
    finally:
        client.close()
    return redactor


def _on_hosts(
    plan: dict[str, object],
    hosts: list[str],
    act: Callable[[RemoteHost], Completed],
    redactor: Redactor | None = None,
) -> int:
    """Connect to each host in parallel, `act` on it, print its output prefixed by the host; worst status."""
    from cli.deploy.redact import Redactor
    from cli.deploy.remote import RemoteHost

    mask = redactor if redactor is not None else Redactor()

    def one(host: str) -> tuple[str, Completed | None, str | None]:
        remote = RemoteHost(host, plan, redactor=mask)
        try:
            remote.connect()
            return host, act(remote), None
        except CliError as exc:
            return host, None, exc.message
        finally:
            remote.close()

    status = 0
    with ThreadPoolExecutor(max_workers=min(32, len(hosts))) as pool:
        results = list(pool.map(one, hosts))
    prefix = len(hosts) > 1
    for host, done, error in results:
        if error is not None:
            click.echo(f"{host}: error: {output.clean(mask(error))}", err=True)
            status = max(status, 1)
            continue
        assert done is not None
        for stream, text in ((False, done.stdout), (True, done.stderr)):
            # Masked here too: whatever RemoteHost does, nothing reaches the terminal unmasked.
            for line in mask(text).splitlines():
                click.echo(f"{host}: {line}" if prefix else line, err=stream)
        if not done.ok:
            status = max(status, done.returncode if 0 < done.returncode < 256 else 1)
    return status


@click.group("app")
def app_group() -> None:
    """The deployed containers: logs, exec, stop, start, remove, on every host (or --hosts/--role)."""


def _app_options(f: F) -> F:
    for decorate in (_hosts_option, _role_option, _manifest_option, _environment_option(True)):
        f = decorate(f)
    return f


def _output_options(f: F) -> F:
    """-p (for the masking read) and --reveal, for the commands that print the app's own output."""
    f = click.option(
        "--reveal",
        is_flag=True,
        help="Print the output unmasked (it may hold secrets); nothing is read from the broker.",
    )(f)
    return _project_option(f)


@app_group.command("logs")
@_app_options
@_output_options
@click.option("--tail", type=click.IntRange(0), default=100, show_default=True, help="Lines per container.")
@click.option("--since", metavar="WHEN", help="Only lines since WHEN (docker logs --since, e.g. 10m).")
@click.pass_obj
def logs(
    session: Session,
    environment: str,
    manifest_path: Path,
    role: str | None,
    hosts: list[str] | None,
    project: str | None,
    reveal: bool,
    tail: int,
    since: str | None,
) -> None:
    """The last lines of the service's running containers (secret values masked unless --reveal)."""
    plan, chosen = _targets(environment, manifest_path, role, hosts)
    mask = _masking(session, manifest_path, project, environment, "logs", reveal)
    raise click.exceptions.Exit(
        _on_hosts(plan, chosen, lambda r: r.app("logs", role, tail=tail, since=since), mask)
    )


@app_group.command("exec", context_settings={"ignore_unknown_options": True})
@_app_options
@_output_options
@click.option("--new", is_flag=True, help="In a new one-off container with the deployed env file.")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.pass_obj
def exec_command(
    session: Session,
    environment: str,
    manifest_path: Path,
    role: str | None,
    hosts: list[str] | None,
    project: str | None,
    reveal: bool,
    new: bool,
    command: tuple[str, ...],
) -> None:
    """Run COMMAND in the running container (or, with --new, a one-off one), e.g. app exec -e prod -- ls.

    Its output is masked with the environment's secret values unless --reveal.
    """
    if new and role is None:
        raise click.UsageError("exec --new needs --role (the role's image options and env file)")
    plan, chosen = _targets(environment, manifest_path, role, hosts)
    mask = _masking(session, manifest_path, project, environment, "exec", reveal)
    raise click.exceptions.Exit(
        _on_hosts(plan, chosen, lambda r: r.app("exec", role, argv=list(command), new=new), mask)
    )


def _simple(action: str, summary: str) -> click.Command:
    @click.command(action, help=summary)
    @_app_options
    def command(environment: str, manifest_path: Path, role: str | None, hosts: list[str] | None) -> None:
        plan, chosen = _targets(environment, manifest_path, role, hosts)
        raise click.exceptions.Exit(_on_hosts(plan, chosen, lambda r: r.app(action, role)))

    return command


app_group.add_command(_simple("stop", "Stop the service's running containers (they stay, for start)."))
app_group.add_command(_simple("start", "Start the newest stopped container of the service (per role) again."))
app_group.add_command(
    _simple("remove", "Remove the service's containers and the env files Strongroom wrote for them.")
)
