"""`strongroom kamal fetch`: what `.kamal/secrets` calls to get values, in the shape `kamal secrets extract` reads.

Kamal reads `.kamal/secrets` with Ruby dotenv, runs `$(...)` commands, substitutes `${VAR}` and then runs
`kamal secrets extract KEY ${SECRETS}` in-process, splitting the command with Ruby's Shellwords. So, like
`kamal secrets fetch`, this prints a JSON object shell-escaped (Shellwords.escape). Every character of a
name or value outside [A-Za-z0-9_.,:+/@-] is written as a JSON \\u escape first, so the text has no
parenthesis, dollar sign, quote or line break left for dotenv's command and variable patterns to act on,
and JSON.parse in `extract` gives back the exact value.
"""

from __future__ import annotations

import sys

import click

from cli.errors import CliError
from cli.options import environment_option, is_secret_name, project_option
from cli.session import Session

_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.,:+/@-")
_SHELL_SAFE = _SAFE | {"\n"}


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
@click.option("--reveal", is_flag=True, help="Print even when standard output is a terminal.")
@click.pass_obj
def fetch(
    session: Session, project: str, environment: str, names: tuple[str, ...], plain_json: bool, reveal: bool
) -> None:
    """Print NAMES' values for `kamal secrets extract NAME ${SECRETS}` (as `kamal secrets fetch` does).

    Meant for `.kamal/secrets`: STRONGROOM_SECRETS=$(strongroom kamal fetch -p P -e ENV KEY...). All names
    or nothing: a missing one fails the command, so the deploy stops instead of running without it.
    """
    for name in names:
        if not is_secret_name(name):
            raise click.BadParameter(f"{name!r} is not a secret name", param_hint="NAMES")
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
        text = shell_escape(kamal_json(document))
    sys.stdout.write(text + "\n")
    sys.stdout.flush()
