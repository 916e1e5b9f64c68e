"""`strongroom identities`: user and machine identities (admins): create, list, show, disable, enable,
delete, and rotate a client secret with an optional grace period.

A client secret is shown once: alone on stdout (the summary goes to stderr), or written 0600 atomically to
`--secret-file` and then never printed. The broker stores only its keyed hash and audits every change.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click

from cli import output
from cli.client import IdentityInfo, IdentitySecret
from cli.commands.tokens import SCOPE_FORMAT, describe_scopes, parse_duration, scope_values
from cli.errors import CliError
from cli.files import write_private
from cli.options import json_option
from cli.session import Session

CLIENT_ID_HELP = "1-128 letters, digits, '.', '_', '@', '-' (default: a random sri_...)."


def _check_client_id(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    if value.startswith(("srs_", "srt_")):
        # Never echoed: it is a credential, and one typed on a command line should be treated as leaked.
        raise click.BadParameter(
            "that is a client secret or a token, not a client id; treat it as leaked", ctx, param
        )
    if not value or len(value) > 128 or not value.isprintable() or "/" in value:
        raise click.BadParameter("a client id is " + CLIENT_ID_HELP, ctx, param)
    return value


def _check_secret_file(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path | None:
    # Checked before the broker is asked: a secret that cannot be written after the change is lost.
    if value is None:
        return None
    if value.is_dir():
        raise click.BadParameter(f"{value} is a directory", ctx, param)
    parent = value.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise click.BadParameter(f"cannot write a file in {parent}", ctx, param)
    return value


def _secret_out(secret: IdentitySecret, secret_file: Path | None, *, what: str) -> None:
    """Print the secret alone on stdout, or write it 0600 to `secret_file`."""
    if secret_file is None:
        click.echo(f"The client secret of {secret.client_id} is shown once, on stdout:", err=True)
        click.echo(secret.client_secret)
        return
    try:
        write_private(secret_file, (secret.client_secret + "\n").encode())
    except OSError as exc:
        raise CliError(
            f"{what}, but its client secret could not be written to {secret_file} ({exc.strerror}); "
            f"get a new one with: strongroom identities rotate-secret {secret.client_id} --secret-file PATH"
        ) from None
    click.echo(f"Wrote the client secret of {secret.client_id} to {secret_file} (mode 0600).", err=True)


def _status(info: IdentityInfo) -> str:
    if info.deleted:
        return "deleted"
    return "disabled" if info.disabled else "active"


def _json(info: IdentityInfo) -> dict[str, Any]:
    return {**asdict(info), "status": _status(info)}


secret_file_option = click.option(
    "--secret-file",
    type=click.Path(dir_okay=False, path_type=Path),
    callback=_check_secret_file,
    metavar="PATH",
    help="Write the client secret to PATH (0600, atomically) instead of printing it.",
)


@click.group()
def identities() -> None:
    """Create and manage user and machine identities (admins); client secrets are shown once."""


@identities.command("create")
@click.argument("name")
@click.option(
    "--kind",
    type=click.Choice(["machine", "user"]),
    default="machine",
    show_default=True,
    help="A machine (CI, a service) or a person.",
)
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    callback=scope_values,
    metavar="SCOPE",
    help=f"Grant {SCOPE_FORMAT} (repeatable; at least one).",
)
@click.option("--deny", "denies", multiple=True, callback=scope_values, metavar="SCOPE", help="Refuse SCOPE.")
@click.option(
    "--cidr",
    "cidrs",
    multiple=True,
    metavar="CIDR",
    help="Let it log in only from this network, e.g. 10.0.0.0/8 (repeatable).",
)
@click.option("--client-id", callback=_check_client_id, metavar="ID", help=CLIENT_ID_HELP)
@click.option(
    "--token-ttl",
    callback=parse_duration,
    metavar="DURATION",
    help="Its tokens' lifetime (default: the broker's).",
)
@click.option(
    "--token-max-ttl",
    callback=parse_duration,
    metavar="DURATION",
    help="How long its tokens can be renewed for (default: the broker's).",
)
@secret_file_option
@json_option
@click.pass_obj
def create_identity(
    session: Session,
    *,
    name: str,
    kind: str,
    scopes: list[dict[str, Any]],
    denies: list[dict[str, Any]],
    cidrs: tuple[str, ...],
    client_id: str | None,
    token_ttl: int | None,
    token_max_ttl: int | None,
    secret_file: Path | None,
    as_json: bool,
) -> None:
    """Create identity NAME and show its client secret once (admins)."""
    if not scopes:
        raise click.UsageError("give at least one --scope: an identity without scopes can do nothing")
    info, secret = session.client().create_identity(
        name=name,
        kind=kind,
        scopes=[*scopes, *denies],
        bound_cidrs=list(cidrs),
        client_id=client_id,
        token_ttl=token_ttl,
        token_max_ttl=token_max_ttl,
    )
    if as_json:
        data = _json(info)
        if secret_file is None:
            data["client_secret"] = secret.client_secret
        else:
            _secret_out(secret, secret_file, what=f"created identity {info.client_id}")
            data["secret_file"] = str(secret_file)
        output.emit_json(data)
        return
    where = f"; only from {', '.join(info.bound_cidrs)}" if info.bound_cidrs else ""
    click.echo(
        f"Created {info.kind} identity {output.clean(info.name)} with client id {output.clean(info.client_id)}: "
        f"{output.clean(describe_scopes(info.scopes))}{where}.",
        err=True,
    )
    _secret_out(secret, secret_file, what=f"created identity {info.client_id}")


@identities.command("list")
@click.option("--all", "include_deleted", is_flag=True, help="Include deleted identities.")
@json_option
@click.pass_obj
def list_identities(session: Session, include_deleted: bool, as_json: bool) -> None:
    """List identities, oldest first (admins); never their secrets."""
    items = session.client().list_identities(include_deleted=include_deleted)
    if as_json:
        output.emit_json([_json(item) for item in items])
        return
    output.emit_table(
        ("CLIENT ID", "NAME", "KIND", "STATUS", "SCOPES", "CIDRS", "CREATED"),
        [
            (
                item.client_id,
                item.name,
                item.kind,
                _status(item),
                describe_scopes(item.scopes),
                ",".join(item.bound_cidrs) or "-",
                item.created_at,
            )
            for item in items
        ],
        empty="No identities.",
    )


def _show(info: IdentityInfo) -> None:
    rows = [
        ("client id", info.client_id),
        ("name", info.name),
        ("kind", info.kind),
        ("status", _status(info)),
        ("scopes", describe_scopes(info.scopes)),
        ("cidrs", ", ".join(info.bound_cidrs) or "any"),
        ("token ttl", output.duration(info.token_ttl)),
        ("token max ttl", output.duration(info.token_max_ttl)),
        ("created", info.created_at),
    ]
    if info.previous_secret_expires_at is not None:
        rows.append(("previous secret accepted until", info.previous_secret_expires_at))
    for label, value in rows:
        click.echo(f"{label + ':':<32}{output.clean(value)}")


client_id_argument = click.argument("client_id", callback=_check_client_id)


@identities.command("show")
@client_id_argument
@json_option
@click.pass_obj
def show_identity(session: Session, client_id: str, as_json: bool) -> None:
    """Show the identity with CLIENT_ID (admins), deleted or not."""
    info = session.client().show_identity(client_id=client_id)
    if as_json:
        output.emit_json(_json(info))
        return
    _show(info)


@identities.command("disable")
@client_id_argument
@json_option
@click.pass_obj
def disable_identity(session: Session, client_id: str, as_json: bool) -> None:
    """Disable CLIENT_ID and revoke its tokens (admins); `enable` lets it log in again."""
    info = session.client().disable_identity(client_id=client_id)
    if as_json:
        output.emit_json(_json(info))
        return
    click.echo(f"Disabled {output.clean(client_id)} and revoked its tokens.")


@identities.command("enable")
@client_id_argument
@json_option
@click.pass_obj
def enable_identity(session: Session, client_id: str, as_json: bool) -> None:
    """Let the disabled identity CLIENT_ID log in again (admins); revoked tokens stay revoked."""
    info = session.client().enable_identity(client_id=client_id)
    if as_json:
        output.emit_json(_json(info))
        return
    click.echo(f"Enabled {output.clean(client_id)}: it can log in again.")


@identities.command("delete")
@client_id_argument
@json_option
@click.pass_obj
def delete_identity(session: Session, client_id: str, as_json: bool) -> None:
    """Delete CLIENT_ID for good (admins): disabled, tokens revoked, hidden from `list`; the id stays taken."""
    session.client().delete_identity(client_id=client_id)
    if as_json:
        output.emit_json({"client_id": client_id, "deleted": True})
        return
    click.echo(f"Deleted {output.clean(client_id)} and revoked its tokens.")


@identities.command("rotate-secret")
@client_id_argument
@click.option(
    "--grace",
    callback=parse_duration,
    metavar="DURATION",
    help="Keep accepting the old secret this long, e.g. 1h (default: refuse it at once).",
)
@secret_file_option
@json_option
@click.pass_obj
def rotate_secret(
    session: Session, client_id: str, grace: int | None, secret_file: Path | None, as_json: bool
) -> None:
    """Give CLIENT_ID a new client secret, shown once (admins); tokens already issued are untouched."""
    secret = session.client().rotate_identity_secret(client_id=client_id, grace=grace)
    what = f"rotated the secret of {client_id}"
    if as_json:
        data: dict[str, Any] = {
            "client_id": secret.client_id,
            "previous_valid_until": secret.previous_valid_until,
        }
        if secret_file is None:
            data["client_secret"] = secret.client_secret
        else:
            _secret_out(secret, secret_file, what=what)
            data["secret_file"] = str(secret_file)
        output.emit_json(data)
        return
    if secret.previous_valid_until is None:
        click.echo(
            f"Rotated the client secret of {output.clean(client_id)}; the old one is refused from now.",
            err=True,
        )
    else:
        click.echo(
            f"Rotated the client secret of {output.clean(client_id)}; the old one is accepted until "
            f"{secret.previous_valid_until}.",
            err=True,
        )
    _secret_out(secret, secret_file, what=what)
