"""`strongroom login` and `strongroom logout`."""

from __future__ import annotations

from pathlib import Path

import click

from cli import output
from cli.options import RefusingCommand, refuse_positionals
from cli.secret_input import read_client_secret
from cli.session import Session

REFUSAL_ON_ARGV = (
    "refusing a client secret on the command line: it would be visible in shell history and to other users "
    "via ps; pipe it on stdin, use --secret-file, or answer the hidden prompt"
)


@click.command(cls=RefusingCommand)
@click.option("--url", metavar="URL", help="Broker URL (default: the global --url or STRONGROOM_URL).")
@click.option("--client-id", required=True, help="The client ID of your identity.")
@click.option(
    "--secret-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Read the client secret from FILE (else from stdin when piped, else a hidden prompt).",
)
@click.option(
    "--ttl", type=click.IntRange(min=1), metavar="SECONDS", help="Ask for a session this many seconds long."
)
@refuse_positionals(REFUSAL_ON_ARGV)
@click.pass_obj
def login(
    session: Session, url: str | None, client_id: str, secret_file: Path | None, ttl: int | None
) -> None:
    """Exchange a client ID and secret for a short-lived session token, cached 0600."""
    client_secret = read_client_secret(secret_file=secret_file)
    credential = session.login(url=url, client_id=client_id, client_secret=client_secret, ttl=ttl)
    principal = credential.principal
    click.echo(
        f"Logged in to {credential.url} as {output.clean(principal.name)} "
        f"({output.clean(principal.type)} {output.clean(principal.id)}); the session expires in "
        f"{output.duration(credential.expires_in)}, at {output.local_time(credential.expires_at)}."
    )


@click.command()
@click.pass_obj
def logout(session: Session) -> None:
    """Revoke the cached session at the broker and delete it."""
    credential = session.logout()
    if credential is None:
        click.echo("Not logged in; nothing to do.")
    else:
        click.echo(f"Logged out of {credential.url}.")
