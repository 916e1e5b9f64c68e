"""`strongroom run`: one round trip for the resolved values, then exec the command with them."""

from __future__ import annotations

import os

import click

from cli.errors import CliError
from cli.options import environment_option, is_secret_name, project_option
from cli.runner import replace_process
from cli.session import Session


@click.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@project_option
@environment_option
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.pass_obj
def run(session: Session, project: str, environment: str, command: tuple[str, ...]) -> None:
    """Run COMMAND with an environment's values added to its environment variables.

    Use `--` before the command: strongroom run -p PROJECT -e ENVIRONMENT -- COMMAND [ARGS]...
    Values win over variables already set; STRONGROOM_TOKEN is not passed on. Nothing is written to disk.
    """
    # Exactly one round trip: renewal is left to the other commands so `run` stays as fast as it can be.
    resolved = session.client(renew=False).resolved(project=project, environment=environment)
    environ = dict(os.environ)
    # The program gets the environment's values, not the credential that fetched them.
    environ.pop("STRONGROOM_TOKEN", None)
    for name, item in resolved.values.items():
        if not is_secret_name(name):
            raise CliError(f"the broker sent a value named {name!r}, which is not a valid variable name")
        if "\x00" in item.value:
            raise CliError(
                f"{name}: the value has a NUL character, which an environment variable cannot carry"
            )
        environ[name] = item.value
    replace_process(command, environ)
