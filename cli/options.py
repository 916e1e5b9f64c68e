"""Options and arguments shared by the commands, with the broker's name rules checked before any round trip.

The rules are those of docs/api.md; checking them here turns a typo into a usage error (exit 2) and keeps
every name one path segment.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from cli.client import BrokerClient
    from cli.session import Session

F = TypeVar("F", bound=Callable[..., Any])

SLUG_MAX = 64
NAME_MAX_BYTES = 256
_SLUG_FIRST = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")
_SLUG_REST = _SLUG_FIRST | {"-"}
_NAME_FIRST = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_")
_NAME_REST = _NAME_FIRST | frozenset("0123456789")

SLUG_RULE = (
    "must be lower-case letters, digits and '-', starting with a letter or digit, "
    f"at most {SLUG_MAX} characters"
)
NAME_RULE = (
    f"must match [A-Za-z_][A-Za-z0-9_]* (an environment variable name), at most {NAME_MAX_BYTES} bytes"
)


def is_slug(value: str) -> bool:
    """Whether `value` is a valid project or environment slug."""
    return 0 < len(value) <= SLUG_MAX and value[0] in _SLUG_FIRST and set(value) <= _SLUG_REST


def is_secret_name(value: str) -> bool:
    """Whether `value` is a valid secret name (an environment variable name)."""
    return 0 < len(value) <= NAME_MAX_BYTES and value[0] in _NAME_FIRST and set(value) <= _NAME_REST


def check_slug(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Click callback: refuse a value that is not a slug."""
    if value is not None and not is_slug(value):
        raise click.BadParameter(SLUG_RULE, ctx=ctx, param=param)
    return value


def check_secret_name(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """Click callback: refuse a value that is not a secret name."""
    if not is_secret_name(value):
        raise click.BadParameter(NAME_RULE, ctx=ctx, param=param)
    return value


def _project_or_profile_default(ctx: click.Context, param: click.Parameter, value: str | None) -> str:
    """Click callback: the given project slug, else the profile's `project`, else a missing-option error."""
    if value is None:
        value = getattr(ctx.obj, "default_project", None)
        if value is None:
            raise click.MissingParameter(ctx=ctx, param=param)
    checked = check_slug(ctx, param, value)
    assert checked is not None
    return checked


# Completion runs on every TAB: a broker that does not answer at once is given up on, silently.
COMPLETION_TIMEOUT_SECONDS = 1.0


def _completion_session(ctx: click.Context) -> Session:
    """The invocation's Session, or (as during completion, where the root callback does not run) a new one."""
    import os

    from cli.session import Session

    if isinstance(ctx.obj, Session):
        return ctx.obj
    params = ctx.find_root().params
    return Session(
        url=params.get("url"),
        insecure=bool(params.get("insecure")),
        ca_file=params.get("ca_file"),
        environ=os.environ,
        profile=params.get("profile"),
    )


def _names(
    ctx: click.Context, incomplete: str, read: Callable[[Session, BrokerClient], list[str]]
) -> list[str]:
    """Names from the broker that start with `incomplete`; none (and no output) on any failure."""
    from cli.errors import CliError

    try:
        session = _completion_session(ctx)
        client = session.client(renew=False, progress=False, timeout=COMPLETION_TIMEOUT_SECONDS)
        try:
            names = read(session, client)
        finally:
            client.close()
    except (CliError, OSError, ValueError):
        return []
    return sorted(name for name in names if name.startswith(incomplete))


def complete_project(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
    """Shell completion: the projects the session's token can see."""
    return _names(ctx, incomplete, lambda _session, client: [p.slug for p in client.list_projects()])


def complete_environment(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
    """Shell completion: the environments of the project given so far (or the profile's project)."""

    def read(session: Session, client: BrokerClient) -> list[str]:
        project = ctx.params.get("project") or session.default_project
        if not project or not is_slug(project):
            return []
        return [env.slug for env in client.list_environments(project=project)]

    return _names(ctx, incomplete, read)


def project_option(f: F) -> F:
    """`-p/--project`, also read from STRONGROOM_PROJECT, else the profile's `project`."""
    return click.option(
        "-p",
        "--project",
        envvar="STRONGROOM_PROJECT",
        metavar="PROJECT",
        callback=_project_or_profile_default,
        shell_complete=complete_project,
        help="Project slug [env: STRONGROOM_PROJECT; default: the profile's project].",
    )(f)


def environment_option(f: F) -> F:
    """`-e/--environment`."""
    return click.option(
        "-e",
        "--environment",
        metavar="ENVIRONMENT",
        required=True,
        callback=check_slug,
        shell_complete=complete_environment,
        help="Environment slug, e.g. production.",
    )(f)


# ctx.meta key (shared by every context of one invocation): JSON was asked for, globally or by the command.
JSON_META = "strongroom.json"


def wants_json(ctx: click.Context) -> bool:
    """Whether this invocation asked for JSON, by the root's `--json` or the command's own."""
    return bool(ctx.meta.get(JSON_META))


def json_flag(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
    """Click callback of every `--json`: remember it for the whole invocation; on when asked anywhere."""
    # Eager, so a later option's usage error already knows to come out as JSON.
    if value:
        ctx.meta[JSON_META] = True
    return wants_json(ctx)


def json_option(f: F) -> F:
    """`--json`: machine-readable output (also on with the global `strongroom --json`)."""
    return click.option(
        "--json",
        "as_json",
        is_flag=True,
        is_eager=True,
        callback=json_flag,
        help="Print JSON for scripts (errors too, on stderr).",
    )(f)


def split_names(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> tuple[str, ...]:
    """Click callback: `K1,K2` (the option repeatable too) as secret names, each checked, in order, once."""
    names: list[str] = []
    for value in values:
        for raw in value.split(","):
            name = raw.strip()
            if not name:
                continue
            if not is_secret_name(name):
                raise click.BadParameter(f"{name!r} {NAME_RULE}", ctx=ctx, param=param)
            if name not in names:
                names.append(name)
    if values and not names:
        raise click.BadParameter("give at least one name, e.g. DATABASE_URL,REDIS_URL", ctx=ctx, param=param)
    return tuple(names)


class _RefusedArgument(click.Argument):
    """Collects stray positionals so a command can refuse them; it never appears in usage or help."""

    def __init__(self, *args: Any, refusal: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.refusal = refusal

    def get_usage_pieces(self, ctx: click.Context) -> list[str]:
        return []


class RefusingCommand(click.Command):
    """A command that reads a secret, and so refuses one typed on its command line (see refuse_positionals).

    A value starting with '-' must be refused too, without click's own error, which would quote it: so any
    word that is not one of this command's options is refused before click parses. `-h` is not a short
    option here, or a value like `-hush` would parse as `-h` and print help with exit status 0; a lone `-h`
    still means help.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        settings = dict(kwargs.pop("context_settings", None) or {})
        settings.update(ignore_unknown_options=True, help_option_names=["--help"])
        kwargs["context_settings"] = settings
        super().__init__(*args, **kwargs)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        end = args.index("--") if "--" in args else len(args)
        args = ["--help" if arg == "-h" else arg for arg in args[:end]] + args[end:]
        refusals = [p.refusal for p in self.get_params(ctx) if isinstance(p, _RefusedArgument)]
        if refusals and self._has_foreign_option(ctx, args[:end]):
            raise click.UsageError(refusals[0], ctx=ctx)
        return super().parse_args(ctx, args)

    def _has_foreign_option(self, ctx: click.Context, args: list[str]) -> bool:
        options = {
            name: param
            for param in self.get_params(ctx)
            if isinstance(param, click.Option)
            for name in (*param.opts, *param.secondary_opts)
        }
        skip_next = False
        for arg in args:
            if skip_next:
                skip_next = False
                continue
            if arg.startswith("--"):
                name, equals, _ = arg.partition("=")
                option = options.get(name)
                if option is None:
                    return True
                skip_next = not option.is_flag and not equals
            elif arg.startswith("-") and arg != "-":
                # Only the first letter is checked: `-pshop` is a legitimate way to write `-p shop`.
                option = options.get(arg[:2])
                if option is None:
                    return True
                skip_next = not option.is_flag and len(arg) == 2
        return False


def refuse_positionals(sentence: str) -> Callable[[F], F]:
    """Refuse any extra positional argument or unknown option with `sentence`, never echoing it (exit 2).

    Use it on a `RefusingCommand`.
    """

    def refuse(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> tuple[str, ...]:
        if value:
            raise click.UsageError(sentence, ctx=ctx)
        return value

    return click.argument(
        "refused_positionals",
        nargs=-1,
        type=click.UNPROCESSED,
        cls=_RefusedArgument,
        refusal=sentence,
        is_eager=True,
        expose_value=False,
        callback=refuse,
    )
