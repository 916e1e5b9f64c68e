"""`strongroom login` and `strongroom logout`."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import click

from cli import output
from cli.options import RefusingCommand, json_option, refuse_positionals
from cli.secret_input import read_client_secret
from cli.session import Session

REFUSAL_ON_ARGV = (
    "refusing a client secret on the command line: it would be visible in shell history and to other users "
    "via ps; pipe it on stdin, use --secret-file, or answer the hidden prompt"
)


@click.command(cls=RefusingCommand)
@click.option(
    "--url", metavar="URL", help="Broker URL (default: the global --url, STRONGROOM_URL, or the profile's)."
)
@click.option("--client-id", help="The client ID of your identity (default: the profile's).")
@click.option(
    "--secret-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Read the client secret from FILE (else from stdin when piped, else a hidden prompt).",
)
@click.option(
    "--ttl", type=click.IntRange(min=1), metavar="SECONDS", help="Ask for a session this many seconds long."
)
@click.option(
    "--oidc",
    "oidc_role",
    metavar="ROLE",
    help="In CI: log in as ROLE with the platform's OIDC ID token instead of a client secret.",
)
@click.option(
    "--id-token-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="With --oidc: read the ID token from FILE (else STRONGROOM_ID_TOKEN, GitHub Actions, CI_JOB_JWT_V2).",
)
@click.option(
    "--audience",
    metavar="AUD",
    help="With --oidc on GitHub Actions: the audience to ask for (default: the broker URL).",
)
@json_option
@refuse_positionals(REFUSAL_ON_ARGV)
@click.pass_obj
def login(
    session: Session,
    url: str | None,
    client_id: str | None,
    secret_file: Path | None,
    ttl: int | None,
    oidc_role: str | None,
    id_token_file: Path | None,
    audience: str | None,
    as_json: bool,
) -> None:
    """Exchange a client ID and secret (or, in CI, an OIDC ID token) for a short-lived session token,
    cached 0600 for the profile."""
    if oidc_role is not None:
        if client_id is not None or secret_file is not None or ttl is not None:
            raise click.UsageError(
                "--oidc logs in with the CI platform's ID token: drop --client-id, --secret-file and --ttl"
            )
        from cli.oidc_token import ci_id_token

        broker_url, _ = session.login_target(url=url, client_id="-")  # no client id is used
        id_token, _source = ci_id_token(
            id_token_file=id_token_file, environ=session.environ, audience=audience or broker_url
        )
        credential = session.login_oidc(url=broker_url, role=oidc_role, id_token=id_token)
    else:
        if id_token_file is not None or audience is not None:
            raise click.UsageError("--id-token-file and --audience go with --oidc ROLE")
        broker_url, client_id = session.login_target(url=url, client_id=client_id)
        client_secret = read_client_secret(secret_file=secret_file)
        credential = session.login(url=broker_url, client_id=client_id, client_secret=client_secret, ttl=ttl)
    principal = credential.principal
    if as_json:
        output.emit_json(
            {
                "profile": session.profile_name,
                "url": credential.url,
                "principal": asdict(principal),
                "accessor": credential.accessor,
                "expires_in": credential.expires_in,
            }
        )
        return
    click.echo(
        f"Logged in to {credential.url} as {output.clean(principal.name)} "
        f"({output.clean(principal.type)} {output.clean(principal.id)}); the session expires in "
        f"{output.duration(credential.expires_in)}, at {output.local_time(credential.expires_at)}."
    )


@click.command()
@json_option
@click.pass_obj
def logout(session: Session, as_json: bool) -> None:
    """Revoke the cached session at the broker and delete it."""
    credential = session.logout()
    if as_json:
        output.emit_json(
            {"profile": session.profile_name, "logged_out": credential is not None}
            | ({"url": credential.url} if credential is not None else {})
        )
        return
    if credential is None:
        click.echo("Not logged in; nothing to do.")
    else:
        click.echo(f"Logged out of {credential.url}.")
