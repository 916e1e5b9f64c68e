"""Options and arguments shared by the commands, with the broker's name rules checked before any round trip.

The rules are those of docs/api.md; checking them here turns a typo into a usage error (exit 2) and keeps
every name one path segment.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

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


def project_option(f: F) -> F:
    """`-p/--project`, also read from STRONGROOM_PROJECT."""
    return click.option(
        "-p",
        "--project",
        envvar="STRONGROOM_PROJECT",
        metavar="PROJECT",
        required=True,
        callback=check_slug,
        help="Project slug [env: STRONGROOM_PROJECT].",
    )(f)


def environment_option(f: F) -> F:
    """`-e/--environment`."""
    return click.option(
        "-e",
        "--environment",
        metavar="ENVIRONMENT",
        required=True,
        callback=check_slug,
        help="Environment slug, e.g. production.",
    )(f)


def json_option(f: F) -> F:
    """`--json`: machine-readable output."""
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")(f)


class _RefusedArgument(click.Argument):
    """Collects stray positionals so a command can refuse them; it never appears in usage or help."""

    def get_usage_pieces(self, ctx: click.Context) -> list[str]:
        return []


# For commands using `refuse_positionals`: an unknown option (a value starting with '-') must reach the
# refusal rather than click's own error, which would quote it; and `-h` must not be a known short option, or
# a value like `-shush` would be parsed as `-s -h ...` and print help with exit status 0.
REFUSING_CONTEXT: dict[str, Any] = {"ignore_unknown_options": True, "help_option_names": ["--help"]}


def refuse_positionals(sentence: str) -> Callable[[F], F]:
    """Refuse any extra positional argument or unknown option with `sentence`, never echoing it (exit 2).

    The command must use `context_settings=REFUSING_CONTEXT`.
    """

    def refuse(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> tuple[str, ...]:
        if value == ("-h",):
            click.echo(ctx.get_help(), color=ctx.color)
            ctx.exit(0)
        if value:
            raise click.UsageError(sentence, ctx=ctx)
        return value

    return click.argument(
        "refused_positionals",
        nargs=-1,
        type=click.UNPROCESSED,
        cls=_RefusedArgument,
        is_eager=True,
        expose_value=False,
        callback=refuse,
    )
