"""`strongroom kamal fetch`: what `.kamal/secrets` calls to get values, in the shape `kamal secrets extract` reads.

Kamal reads `.kamal/secrets` with Ruby dotenv, runs `$(...)` commands, substitutes `${VAR}` and then runs
`kamal secrets extract KEY ${SECRETS}` in-process, splitting the command with Ruby's Shellwords. So, like
`kamal secrets fetch`, this prints a JSON object shell-escaped (Shellwords.escape). Every character of a
name or value outside [A-Za-z0-9_.,:+/@-] is written as a JSON \\u escape first, so the text has no
parenthesis, dollar sign, quote or line break left for dotenv's command and variable patterns to act on,
and JSON.parse in `extract` gives back the value.

What happens after `extract` depends on the dotenv version, which the generated file finds out and passes
as `--dotenv`: dotenv 3.1.x keeps what `extract` returns; dotenv 3.2.x (what Kamal 2.12 installs) then
runs its variable substitution over it, which expands `$NAME`, `${NAME}` and `$1` and turns `\\$` into `$`.
For 3.2 every `$` of a value not followed by `(` (which substitution leaves alone) is therefore written
`\\$`, and the substitution gives back exactly the stored value.
"""

from __future__ import annotations

import os
import re
import sys

import click

from cli.errors import CliError
from cli.options import environment_option, is_secret_name, project_option
from cli.session import Session

_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.,:+/@-")
_SHELL_SAFE = _SAFE | {"\n"}
DOTENV_VERSIONS = ("3.1", "3.2")
_SUBSTITUTED_DOLLAR = re.compile(r"\$(?!\()")  # dotenv's variable pattern never starts at "$("


def _json_text(text: str) -> str:
    out: list[str] = []
    for ch in text:
        if ch in _SAFE:
            out.append(ch)
            continue
        data = ch.encode("utf-16-be", errors="surrogatepass")
        out.extend(f"\\u{int.from_bytes(data[i : i + 2], 'big'):04x}" for i in range(0, len(data), 2))
    return "".join(out)


def kamal_json(values: dict[str, str]) -> str:
    """A JSON object of name -> value with every character outside a small safe set as a \\u escape."""
    return "{" + ",".join(f'"{_json_text(k)}":"{_json_text(v)}"' for k, v in values.items()) + "}"


def for_dotenv(value: str, dotenv: str) -> str:
    """The text `extract` must return so that Kamal and the dotenv `dotenv` (3.1 or 3.2) leave exactly `value`."""
    if dotenv == "3.2":
        value = _SUBSTITUTED_DOLLAR.sub(r"\\$", value)
    # Kamal chomps what `extract` returns (one "\r\n", "\n" or "\r"): a value ending in a line break
    # gets one more of that same character, which is all the chomp takes away (a PEM keeps its last "\n").
    if value.endswith(("\n", "\r")):
        value += value[-1]
    return value


def _check_dotenv(dotenv: str | None) -> str:
    if dotenv is None:
        raise CliError(
            "--dotenv is missing: this .kamal/secrets was written by an older strongroom, whose values "
            "dotenv 3.2 would change; run `strongroom compile --target kamal` again"
        )
    if dotenv not in DOTENV_VERSIONS:
        raise CliError(
            "--dotenv must be 3.1 or 3.2: .kamal/secrets was read by a dotenv that substitutes like neither "
            "dotenv 3.1.x nor 3.2.x (Kamal 2.12 is covered with those; see docs/targets.md); check "
            "`bundle exec ruby -e 'require \"dotenv/version\"; puts Dotenv::VERSION'` and use dotenv 3.2.x "
            "or 3.1.x"
        )
    return dotenv


# The name the generated file's fetch line reads the detected order from. dotenv 3.1.0-3.1.4 substitute a
# command's own variables from the process environment before the file's lines, so an exported one would
# decide the order instead of the file (and, set to 3.2 under 3.1, leave a backslash before each `$`).
DOTENV_ORDER_NAME = "STRONGROOM_DOTENV_ORDER"


def _check_environment() -> None:
    if DOTENV_ORDER_NAME in os.environ:
        raise CliError(
            f"{DOTENV_ORDER_NAME} is set in the environment Kamal runs in: dotenv 3.1.0-3.1.4 would take it "
            "instead of the order .kamal/secrets detects, and values with $ could change; unset it "
            "(it is a name the generated file uses for itself)"
        )


def shell_escape(text: str) -> str:
    """Ruby's Shellwords.escape: a backslash before every character not in [A-Za-z0-9_-.,:+/@\\n]."""
    if not text:
        return "''"
    escaped = "".join(ch if ch in _SHELL_SAFE else "\\" + ch for ch in text)
    return escaped.replace("\n", "'\n'")


@click.group("kamal")
def kamal_group() -> None:
    """Kamal integration: the commands generated `.kamal/secrets` files call."""


@kamal_group.command("fetch")
@project_option
@environment_option
@click.argument("names", nargs=-1, required=True)
@click.option(
    "--json", "plain_json", is_flag=True, help="Print plain JSON instead of Kamal's shell-escaped form."
)
@click.option(
    "--dotenv",
    metavar="3.1|3.2",
    help="The dotenv reading .kamal/secrets (the generated file finds it out): 3.2 gets each $ escaped.",
)
@click.option("--reveal", is_flag=True, help="Print even when standard output is a terminal.")
@click.pass_obj
def fetch(
    session: Session,
    project: str,
    environment: str,
    names: tuple[str, ...],
    plain_json: bool,
    dotenv: str | None,
    reveal: bool,
) -> None:
    """Print NAMES' values for `kamal secrets extract NAME ${SECRETS}` (as `kamal secrets fetch` does).

    Meant for `.kamal/secrets`: STRONGROOM_SECRETS=$(strongroom kamal fetch --dotenv V -p P -e ENV KEY...).
    All names or nothing: a missing one fails the command, so the deploy stops instead of running without it.
    """
    for name in names:
        if not is_secret_name(name):
            raise click.BadParameter(f"{name!r} is not a secret name", param_hint="NAMES")
    version = None if plain_json else _check_dotenv(dotenv)
    if version is not None:
        _check_environment()
    if sys.stdout.isatty() and not reveal:
        raise CliError(
            "refusing to print secret values to a terminal: this is meant for $(...) in .kamal/secrets "
            "(pass --reveal to print them anyway)"
        )
    ordered = list(dict.fromkeys(names))
    values = session.client().values(project=project, environment=environment, names=ordered)
    document = {name: values[name] for name in ordered}
    if plain_json:
        import json

        text = json.dumps(document, ensure_ascii=True)
    else:
        assert version is not None
        text = shell_escape(kamal_json({k: for_dotenv(v, version) for k, v in document.items()}))
    sys.stdout.write(text + "\n")
    sys.stdout.flush()
