"""The `strongroom` root command group: global options, lazily loaded subcommands, errors as sentences.

Subcommand modules are imported only when their command runs (or for --help), so `strongroom run` does not
pay for the modules of every other command.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

import click

from cli import __version__
from cli.errors import CliError

# name -> "module:attribute"
SUBCOMMANDS = {
    "login": "cli.commands.auth:login",
    "logout": "cli.commands.auth:logout",
    "projects": "cli.commands.projects:projects",
    "envs": "cli.commands.envs:envs",
    "secrets": "cli.commands.secrets:secrets_group",
    "run": "cli.commands.run:run",
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use."""

    def __init__(self, *args: Any, lazy_commands: dict[str, str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lazy_commands = lazy_commands

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self._lazy_commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = self._lazy_commands.get(cmd_name)
        if target is None:
            return super().get_command(ctx, cmd_name)
        module_name, attribute = target.split(":")
        command = getattr(importlib.import_module(module_name), attribute)
        assert isinstance(command, click.Command)
        return command

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CliError as error:
            from cli.output import clean

            # Same shape as click's own errors: `Error: <sentence>` on stderr, then the error's exit status.
            click.echo(f"Error: {clean(error.message)}", err=True)
            raise click.exceptions.Exit(error.exit_code) from None


@click.group(
    cls=LazyGroup,
    lazy_commands=SUBCOMMANDS,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.version_option(__version__, "--version", prog_name="strongroom", message="%(prog)s %(version)s")
@click.option("--url", envvar="STRONGROOM_URL", metavar="URL", help="Broker URL [env: STRONGROOM_URL].")
@click.option(
    "--insecure",
    is_flag=True,
    envvar="STRONGROOM_INSECURE",
    help="Allow plain http to a host other than loopback (TLS verification is never turned off).",
)
@click.option(
    "--ca-file",
    envvar="STRONGROOM_CA_FILE",
    metavar="FILE",
    help="Trust only this CA certificate for the broker's TLS [env: STRONGROOM_CA_FILE].",
)
@click.pass_context
def strongroom(ctx: click.Context, url: str | None, insecure: bool, ca_file: str | None) -> None:
    """Strongroom: keep secrets in the broker, hand them to programs, never to shell history.

    The token comes from STRONGROOM_TOKEN if set, else from the session cached by `strongroom login`.
    """
    # Imported here so that --help and --version do not load the HTTP stack.
    from cli.session import Session

    ctx.obj = Session(url=url, insecure=insecure, ca_file=ca_file, environ=os.environ)
