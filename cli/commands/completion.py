"""`strongroom completion SHELL`: print the shell completion script (click's own) for bash, zsh or fish."""

from __future__ import annotations

import click

INSTALL = {
    "bash": 'eval "$(strongroom completion bash)"  # in ~/.bashrc',
    "zsh": 'eval "$(strongroom completion zsh)"  # in ~/.zshrc',
    "fish": "strongroom completion fish > ~/.config/fish/completions/strongroom.fish",
}


@click.command()
@click.argument("shell", type=click.Choice(sorted(INSTALL)))
@click.pass_context
def completion(ctx: click.Context, shell: str) -> None:
    """Print the completion script for SHELL: bash, zsh or fish.

    \b
    bash:  eval "$(strongroom completion bash)"   (in ~/.bashrc)
    zsh:   eval "$(strongroom completion zsh)"    (in ~/.zshrc)
    fish:  strongroom completion fish > ~/.config/fish/completions/strongroom.fish
    """
    from click.shell_completion import get_completion_class

    root = ctx.find_root()
    cls = get_completion_class(shell)
    assert cls is not None  # the choice only lists shells click supports
    script = cls(root.command, {}, "strongroom", "_STRONGROOM_COMPLETE").source()
    click.echo(script)
