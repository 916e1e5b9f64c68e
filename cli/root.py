"""The `strongroom` root command group: global options, lazily loaded subcommands, errors as sentences.

Subcommand modules are imported only when their command runs (or for --help), so `strongroom run` does not
pay for the modules of every other command.
"""

from __future__ import annotations

import importlib
import os
from typing import Any, NoReturn

import click

from cli import __version__
from cli.errors import CliError
from cli.options import JSON_META, json_flag, wants_json

# name -> "module:attribute"
SUBCOMMANDS = {
    "login": "cli.commands.auth:login",
    "logout": "cli.commands.auth:logout",
    "projects": "cli.commands.projects:projects",
    "envs": "cli.commands.envs:envs",
    "secrets": "cli.commands.secrets:secrets_group",
    "run": "cli.commands.run:run",
    "export": "cli.commands.export:export",
    "tokens": "cli.commands.tokens:tokens",
    "identities": "cli.commands.identities:identities",
    "profiles": "cli.commands.profiles:profiles_group",
    "completion": "cli.commands.completion:completion",
    "import-backend": "cli.commands.importing:import_backend",
    "compile": "cli.commands.compile:compile_command",
    "check": "cli.commands.compile:check_command",
    "diff": "cli.commands.compile:diff_command",
    "import": "cli.commands.compile:import_command",
    "kamal": "cli.commands.kamal:kamal_group",
    "audit": "cli.commands.audit:audit_group",
    "deploy": "cli.commands.deploy:deploy_group",
    "rollback": "cli.commands.deploy:rollback_command",
    "app": "cli.commands.app:app_group",
}


# name -> the command's one-line help, so that `strongroom --help` need not import every command module.
# A command missing here is imported for --help; tests/unit/cli/test_cli_main.py keeps these in step.
SHORT_HELP = {
    "login": "Exchange a client ID and secret (or, in CI, an OIDC ID token) for a short-lived session token, cached 0600 for the profile.",
    "logout": "Revoke the cached session at the broker and delete it.",
    "projects": "List, create and delete projects.",
    "envs": "List, create, reparent and delete the environments of a project.",
    "secrets": "Read and write the secrets of one environment of a project.",
    "run": "Run COMMAND with an environment's values added to its environment variables.",
    "export": "Render an environment's values as a dotenv, env-file, compose, JSON, YAML, k8s or systemd file.",
    "tokens": "Create tokens for CI (printed once); list and revoke tokens (admins).",
    "identities": "Create and manage user and machine identities (admins); client secrets are shown once.",
    "profiles": "List profiles and pick the default one (profiles live in $XDG_CONFIG_HOME/strongroom/config.toml).",
    "completion": "Print the completion script for SHELL: bash, zsh or fish.",
    "audit": "Read, export and verify the audit trail (needs a token with the audit action, except verify).",
    "deploy": "Build, push and start the manifest's service on every host of ENVIRONMENT, with short-lived credentials.",
    "rollback": "Start an earlier version (already in the registry) on every host with today's secrets; no build, no push.",
    "app": "The deployed containers: logs, exec, stop, start, remove, on every host (or --hosts/--role).",
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use."""

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list, from SHORT_HELP where it has the command, else from the imported command."""
        names = [name for name in self.list_commands(ctx) if name in SHORT_HELP or self._shown(ctx, name)]
        if not names:
            return
        limit = formatter.width - 6 - max(len(name) for name in names)
        rows = []
        for name in names:
            if name in SHORT_HELP:
                text = click.Command(name, help=SHORT_HELP[name]).get_short_help_str(limit)
            else:
                command = self.get_command(ctx, name)
                text = command.get_short_help_str(limit) if command is not None else ""
            rows.append((name, text))
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def _shown(self, ctx: click.Context, name: str) -> bool:
        command = self.get_command(ctx, name)
        return command is not None and not command.hidden

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

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        given = list(args)  # click's parser consumes the list it is given
        try:
            return super().parse_args(ctx, args)
        except click.ClickException as error:
            # The root's own options failed to parse, so --json was never seen as a flag: look for it.
            if "--json" in given[: given.index("--") if "--" in given else len(given)]:
                ctx.meta[JSON_META] = True
            _fail(ctx, error)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CliError as error:
            _fail(ctx, error)
        except click.UsageError as error:
            # click quotes stray arguments back; one of them may be a secret typed in the wrong place.
            if error.message.startswith("Got unexpected extra argument"):
                error = click.UsageError(
                    "got unexpected extra arguments (not shown, in case one is a secret); see --help",
                    error.ctx,
                )
            _fail(ctx, error)
        except click.ClickException as error:
            _fail(ctx, error)


def _fail(ctx: click.Context, error: CliError | click.ClickException) -> NoReturn:
    """End with the error: one sentence on stderr (as click shows its own), or JSON under --json."""
    if not wants_json(ctx):
        if isinstance(error, click.ClickException):
            raise error from None
        from cli import output

        # Same shape as click's own errors: `Error: <sentence>` on stderr, then the error's exit status.
        output.error(error.message)
        raise click.exceptions.Exit(error.exit_code) from None
    from cli import output

    if isinstance(error, CliError):
        output.error_json(error.message, field=error.field, status=getattr(error, "status", None))
    else:
        output.error_json(output.clean(error.format_message()), field=_field(error), status=None)
    raise click.exceptions.Exit(error.exit_code) from None


def _field(error: click.ClickException) -> str | None:
    """The option or argument a usage error is about, by its parameter name."""
    param = getattr(error, "param", None)
    if isinstance(param, click.Parameter) and param.name:
        return param.name
    option = getattr(error, "option_name", None)
    return option.lstrip("-").replace("-", "_") if isinstance(option, str) and option else None


def _complete_profile(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
    """Profile names from the config file, for shell completion."""
    from cli import profiles

    try:
        names = profiles.load(os.environ).profiles
    except CliError:
        return []
    return [name for name in sorted(names) if name.startswith(incomplete)]


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
@click.option(
    "--profile",
    envvar="STRONGROOM_PROFILE",
    metavar="NAME",
    shell_complete=_complete_profile,
    help="Use this profile of the config file [env: STRONGROOM_PROFILE].",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    is_eager=True,
    callback=json_flag,
    help="JSON output from every command that has a JSON form, and errors as JSON on stderr "
    '({"error": ..., "field": ..., "status": ...}; same exit status).',
)
@click.pass_context
def strongroom(
    ctx: click.Context,
    url: str | None,
    insecure: bool,
    ca_file: str | None,
    profile: str | None,
    as_json: bool,
) -> None:
    """Strongroom: keep secrets in the broker, hand them to programs, never to shell history.

    The token comes from STRONGROOM_TOKEN if set, else from the session cached by `strongroom login` for
    the profile. Profiles (several brokers and identities) live in $XDG_CONFIG_HOME/strongroom/config.toml.
    """
    # Imported here so that --help and --version do not load the HTTP stack.
    from cli import output
    from cli.session import Session

    ctx.obj = Session(
        url=url,
        insecure=insecure,
        ca_file=ca_file,
        environ=os.environ,
        profile=profile,
        progress=output.progress,
    )
