"""`strongroom run`: one round trip for the resolved values, then exec the command with them.

With `--watch` the values are fetched again every `--interval` seconds and the command is restarted when
they change; only then does a Strongroom process stay alive (holding the values) beside the command.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import click

from cli.client import Resolved
from cli.errors import CliError
from cli.options import environment_option, is_secret_name, project_option, split_names
from cli.runner import replace_process
from cli.session import TOKEN_ENVVAR, Session

# What a program started with --no-inherit-env still gets from the caller's environment: what any program
# needs to find other programs, a home, a locale and a terminal; nothing that could be a credential.
BASELINE_VARIABLES = ("PATH", "HOME", "USER", "LOGNAME", "SHELL", "TERM", "TZ", "TMPDIR", "LANG", "LANGUAGE")
BASELINE_PREFIXES = ("LC_",)


def picked_values(resolved: Resolved, only: Sequence[str]) -> dict[str, str]:
    """All the values, or only the `only` names (each of which must exist), with valid names."""
    if only:
        missing = [name for name in only if name not in resolved.values]
        if missing:
            raise CliError(
                f"{resolved.project}/{resolved.environment} has no {', '.join(missing)}: "
                f"fix --only or check strongroom secrets list -p {resolved.project} -e {resolved.environment}"
            )
        items = [(name, resolved.values[name]) for name in only]
    else:
        items = list(resolved.values.items())
    values: dict[str, str] = {}
    for name, item in items:
        if not is_secret_name(name):
            raise CliError(f"the broker sent a value named {name!r}, which is not a valid variable name")
        values[name] = item.value
    return values


def selected_values(resolved: Resolved, only: Sequence[str]) -> dict[str, str]:
    """The values to inject (as picked_values), checked for exec: an environment cannot hold a NUL."""
    values = picked_values(resolved, only)
    for name, value in values.items():
        if "\x00" in value:
            raise CliError(
                f"{name}: the value has a NUL character, which an environment variable cannot carry"
            )
    return values


def child_environment(
    caller: Mapping[str, str], values: Mapping[str, str], *, inherit: bool
) -> dict[str, str]:
    """The program's environment: the caller's (or only its baseline) without the broker token, plus the values."""
    if inherit:
        environ = dict(caller)
    else:
        environ = {
            name: value
            for name, value in caller.items()
            if name in BASELINE_VARIABLES or name.startswith(BASELINE_PREFIXES)
        }
    # The program gets the environment's values, not the credential that fetched them.
    environ.pop(TOKEN_ENVVAR, None)
    environ.update(values)
    return environ


@click.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@project_option
@environment_option
@click.option(
    "--only",
    multiple=True,
    callback=split_names,
    metavar="K1,K2",
    help="Inject only these variables (comma-separated, repeatable); one the environment lacks is an error.",
)
@click.option(
    "--no-inherit-env",
    is_flag=True,
    help="Do not pass your environment on: COMMAND gets the values plus only PATH, HOME, USER, LOGNAME, "
    "SHELL, TERM, TZ, TMPDIR, LANG, LANGUAGE and LC_*.",
)
@click.option(
    "--watch",
    is_flag=True,
    help="Keep running: fetch the values every --interval seconds and restart COMMAND (SIGTERM, then SIGKILL "
    "after 10 s) when one changes. Each fetch is an audited read.",
)
@click.option(
    "--interval",
    type=click.IntRange(min=2, max=3600),
    default=30,
    show_default=True,
    metavar="SECONDS",
    help="With --watch: seconds between fetches.",
)
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.pass_obj
def run(
    session: Session,
    *,
    project: str,
    environment: str,
    only: tuple[str, ...],
    no_inherit_env: bool,
    watch: bool,
    interval: int,
    command: tuple[str, ...],
) -> None:
    """Run COMMAND with an environment's values added to its environment variables.

    Use `--` before the command: strongroom run -p PROJECT -e ENVIRONMENT -- COMMAND [ARGS]...
    Values win over variables already set; STRONGROOM_TOKEN is not passed on. Nothing is written to disk.
    Without --watch, strongroom makes one request and then becomes COMMAND (same process: its exit status
    and the signals sent to it are COMMAND's own).
    """
    # Exactly one round trip: renewal is left to the other commands so `run` stays as fast as it can be.
    resolved = session.client(renew=False).resolved(project=project, environment=environment)
    values = selected_values(resolved, only)
    caller = dict(os.environ)
    if watch:
        _watch(session, project, environment, only, caller, values, not no_inherit_env, interval, command)
    else:
        replace_process(command, child_environment(caller, values, inherit=not no_inherit_env))


def _watch(
    session: Session,
    project: str,
    environment: str,
    only: tuple[str, ...],
    caller: dict[str, str],
    values: dict[str, str],
    inherit: bool,
    interval: int,
    command: tuple[str, ...],
) -> None:
    """Supervise COMMAND, restarting it when the values change; end as it ends."""
    from cli import output
    from cli.runner import exit_like, supervise

    def fetch() -> dict[str, str]:
        fresh = session.client(progress=False).resolved(project=project, environment=environment)
        return selected_values(fresh, only)

    status = supervise(
        command,
        lambda current: child_environment(caller, current, inherit=inherit),
        values,
        fetch,
        interval=interval,
        note=lambda message: click.echo(f"strongroom: {output.clean(message)}", err=True),
    )
    exit_like(status)
