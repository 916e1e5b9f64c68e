"""The CLI reference (docs/cli.md), generated from the commands themselves.

`.venv/bin/python -m cli.reference > docs/cli.md` regenerates it; tests/unit/cli/test_cli_reference.py fails
when the file and the commands disagree.
"""

from __future__ import annotations

import inspect

import click

HEADER = """# `strongroom` command reference

Generated from the commands themselves (`.venv/bin/python -m cli.reference > docs/cli.md`); a test fails
when it is stale. Global options go before the command: `strongroom [--profile NAME] [--url URL] COMMAND`.
Every command exits 0 on success, 1 on a failure (one sentence on stderr) and 2 on a usage error.
"""


def _help_text(command: click.Command) -> str:
    lines = [line for line in inspect.cleandoc(command.help or "").splitlines() if line.strip() != "\b"]
    return "\n".join(lines).strip()


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _section(ctx: click.Context, command: click.Command, path: str) -> list[str]:
    out = [f"## `{path}`", "", "```", command.get_usage(ctx).replace("Usage: ", "", 1), "```", ""]
    text = _help_text(command)
    if text:
        out += [text, ""]
    rows = [
        record
        for param in command.get_params(ctx)
        if isinstance(param, click.Option)
        and (record := param.get_help_record(ctx)) is not None
        and record[0] not in ("-h, --help", "--help")
    ]
    if rows:
        out += ["| option | meaning |", "|---|---|"]
        out += [f"| `{_cell(opts)}` | {_cell(help_)} |" for opts, help_ in rows]
        out.append("")
    return out


def _walk(ctx: click.Context, command: click.Command, path: str) -> list[str]:
    out = _section(ctx, command, path)
    if isinstance(command, click.Group):
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is None or sub.hidden:
                continue
            sub_ctx = click.Context(sub, info_name=name, parent=ctx)
            out += _walk(sub_ctx, sub, f"{path} {name}")
    return out


def render() -> str:
    """The whole reference as Markdown."""
    from cli.root import strongroom

    ctx = click.Context(strongroom, info_name="strongroom", terminal_width=100, max_content_width=100)
    lines = [HEADER, *_walk(ctx, strongroom, "strongroom")]
    return "\n".join(lines).rstrip("\n") + "\n"


if __name__ == "__main__":
    click.echo(render(), nl=False)
