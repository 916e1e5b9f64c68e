"""`strongroom secrets`: values go in by file, pipe or hidden prompt, and come out only on --reveal."""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path

import click

from cli import output
from cli.client import MASK, BrokerClient, BrokerError, Secret, SecretMeta
from cli.options import (
    RefusingCommand,
    check_secret_name,
    environment_option,
    json_option,
    project_option,
    refuse_positionals,
)
from cli.secret_input import read_secret_value
from cli.session import Session

REFUSAL_ON_ARGV = (
    "refusing a secret value on the command line: it would be visible in shell history and to other users "
    "via ps; pipe it on stdin, use --from-file, or answer the hidden prompt"
)


GENERATE_REFUSAL = (
    "refusing a value on the command line: generate makes the value in the broker and takes none; "
    "to store one of your own use strongroom secrets set (stdin, --from-file or a hidden prompt)"
)


@click.group("secrets")
def secrets_group() -> None:
    """Read and write the secrets of one environment of a project."""


@secrets_group.command("list")
@project_option
@environment_option
@click.option(
    "--resolved",
    is_flag=True,
    help="Names the environment sees through inheritance, each with the environment it comes from "
    "(names only: no value is read).",
)
@json_option
@click.pass_obj
def list_secrets(session: Session, project: str, environment: str, resolved: bool, as_json: bool) -> None:
    """List secret names and versions (never values)."""
    client = session.client()
    if resolved:
        seen = _resolved_names(client, project=project, environment=environment)
        if as_json:
            output.emit_json([{**asdict(item), "environment": origin} for item, origin in seen])
            return
        rows = [
            (item.name, str(item.version), output.yes_no(item.sensitive), origin, item.updated_at)
            for item, origin in seen
        ]
        output.emit_table(
            ("NAME", "VERSION", "SENSITIVE", "FROM", "UPDATED"),
            rows,
            empty=f"No secrets in {project}/{environment} nor in the environments it inherits.",
        )
        return
    items = client.list_secrets(project=project, environment=environment)
    if as_json:
        output.emit_json([asdict(item) for item in items])
        return
    own = [(item.name, str(item.version), output.yes_no(item.sensitive), item.updated_at) for item in items]
    output.emit_table(
        ("NAME", "VERSION", "SENSITIVE", "UPDATED"), own, empty=f"No secrets in {project}/{environment}."
    )


def _chain(client: BrokerClient, *, project: str, environment: str) -> list[str]:
    """The environment, then its parent, and so on up (the nearest value wins); empty if there is no such one."""
    parents = {env.slug: env.parent for env in client.list_environments(project=project)}
    if environment not in parents:
        return []
    chain: list[str] = []
    cursor: str | None = environment
    # The broker refuses cycles; the bound only keeps a misbehaving answer from looping here.
    while cursor is not None and cursor not in chain and len(chain) <= len(parents):
        chain.append(cursor)
        cursor = parents.get(cursor)
    return chain


def _resolved_names(client: BrokerClient, *, project: str, environment: str) -> list[tuple[SecretMeta, str]]:
    """Each name the environment sees with the environment it comes from, nearest first, by name."""
    chain = _chain(client, project=project, environment=environment)
    if not chain:
        raise BrokerError(404, f"projects/{project}/environments/{environment}: no such environment")
    seen: dict[str, tuple[SecretMeta, str]] = {}
    for source in chain:
        # The list route reads names and versions only: no value is decrypted, none is audited as read.
        try:
            items = client.list_secrets(project=project, environment=source)
        except BrokerError as error:
            if error.status == 403 and source != environment:
                raise _needs_read(error, project=project, environment=environment, source=source) from None
            raise
        for item in items:
            seen.setdefault(item.name, (item, source))
    return [seen[name] for name in sorted(seen)]


def _needs_read(error: BrokerError, *, project: str, environment: str, source: str) -> BrokerError:
    """A refusal on an environment ENVIRONMENT inherits from, saying why that one was asked at all."""
    # The CLI reads inherited names and values where they live, so it needs read there too; `run` and
    # `export` read the broker's resolved view, which needs read on ENVIRONMENT only.
    return BrokerError(
        error.status,
        f"{project}/{environment} inherits from {source}, and reading there needs read on "
        f"{project}/{source}: {error.message}",
    )


@secrets_group.command("get")
@project_option
@environment_option
@click.argument("name", callback=check_secret_name)
@click.option(
    "--reveal", is_flag=True, help="Print only the value, raw, with nothing added (the read is audited)."
)
@click.option(
    "--version", type=click.IntRange(min=1), metavar="N", help="Read this version instead of the current one."
)
@json_option
@click.pass_obj
def get_secret(
    session: Session,
    *,
    project: str,
    environment: str,
    name: str,
    reveal: bool,
    version: int | None,
    as_json: bool,
) -> None:
    """Show a secret, read through inheritance when ENVIRONMENT has none of its own; masked unless --reveal."""
    client = session.client()
    try:
        secret = client.get_secret(
            project=project, environment=environment, name=name, version=version, reveal=reveal
        )
    except BrokerError as error:
        # --version names a version of this environment's own secret, so it never reads a parent's.
        if error.status != 404 or version is not None:
            raise
        secret = _inherited(
            client, project=project, environment=environment, name=name, reveal=reveal, missing=error
        )
    inherited = secret.environment != environment
    if as_json:
        output.emit_json(
            {**asdict(secret), "value": secret.value if reveal else MASK, "inherited": inherited}
        )
        return
    if reveal:
        if inherited:
            # On stderr: stdout is exactly the value.
            click.echo(f"{name}: version {secret.version} from {project}/{secret.environment}", err=True)
        # Raw, with no newline added, so `$(strongroom secrets get --reveal ...)` and redirects are exact.
        sys.stdout.flush()
        sys.stdout.buffer.write(secret.value.encode("utf-8"))
        sys.stdout.buffer.flush()
        return
    output.emit_fields(
        [
            ("name", secret.name),
            ("value", MASK),
            ("version", str(secret.version)),
            ("environment", secret.environment + (f" (inherited by {environment})" if inherited else "")),
            ("sensitive", output.yes_no(secret.sensitive)),
            ("created", secret.created_at),
        ]
    )


def _inherited(
    client: BrokerClient, *, project: str, environment: str, name: str, reveal: bool, missing: BrokerError
) -> Secret:
    """The secret from the nearest environment ENVIRONMENT inherits from that has it (one value read)."""
    chain = _chain(client, project=project, environment=environment)
    if len(chain) < 2:
        raise missing  # no such environment, or it inherits nothing: the broker's own answer stands
    for source in chain[1:]:
        try:
            return client.get_secret(project=project, environment=source, name=name, reveal=reveal)
        except BrokerError as error:
            if error.status == 403:
                raise _needs_read(error, project=project, environment=environment, source=source) from None
            if error.status != 404:
                raise
    raise BrokerError(
        404,
        f"projects/{project}/environments/{environment}: no secret {name} "
        f"(nor in the environments it inherits: {', '.join(chain[1:])})",
    )


@secrets_group.command("set", cls=RefusingCommand)
@project_option
@environment_option
@click.argument("name", callback=check_secret_name)
@click.option(
    "--from-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Read the value from FILE, byte for byte (else from stdin when piped, else a hidden prompt).",
)
@click.option(
    "--cas",
    type=click.IntRange(min=0),
    metavar="N",
    help="Only if the current version is N (0: only if new).",
)
@click.option("--not-sensitive", is_flag=True, help="Mark the value as not sensitive (e.g. a public URL).")
@json_option
@refuse_positionals(REFUSAL_ON_ARGV)
@click.pass_obj
def set_secret(
    session: Session,
    *,
    project: str,
    environment: str,
    name: str,
    from_file: Path | None,
    cas: int | None,
    not_sensitive: bool,
    as_json: bool,
) -> None:
    """Store a new version of secret NAME; the value never goes on the command line."""
    value = read_secret_value(name=name, from_file=from_file)
    meta = session.client().put_secret(
        project=project, environment=environment, name=name, value=value, sensitive=not not_sensitive, cas=cas
    )
    if as_json:
        output.emit_json(asdict(meta))
        return
    click.echo(f"Set {project}/{environment}/{meta.name}: version {meta.version}.")


@secrets_group.command("delete")
@project_option
@environment_option
@click.argument("name", callback=check_secret_name)
@json_option
@click.pass_obj
def delete_secret(session: Session, project: str, environment: str, name: str, as_json: bool) -> None:
    """Delete secret NAME (its history is kept)."""
    session.client().delete_secret(project=project, environment=environment, name=name)
    if as_json:
        output.emit_json({"project": project, "environment": environment, "name": name, "deleted": True})
        return
    click.echo(f"Deleted {project}/{environment}/{name}.")


@secrets_group.command("undelete")
@project_option
@environment_option
@click.argument("name", callback=check_secret_name)
@json_option
@click.pass_obj
def undelete_secret(session: Session, project: str, environment: str, name: str, as_json: bool) -> None:
    """Bring back secret NAME after `secrets delete`."""
    meta = session.client().undelete_secret(project=project, environment=environment, name=name)
    if as_json:
        output.emit_json(asdict(meta))
        return
    click.echo(f"Undeleted {project}/{environment}/{meta.name}: version {meta.version}.")


@secrets_group.command("destroy")
@project_option
@environment_option
@click.argument("name", callback=check_secret_name)
@click.argument("version", type=click.IntRange(min=1))
@json_option
@click.pass_obj
def destroy_secret(
    session: Session, project: str, environment: str, name: str, version: int, as_json: bool
) -> None:
    """Erase VERSION of secret NAME for good (its ciphertext; the history keeps that it existed)."""
    session.client().destroy_secret_version(
        project=project, environment=environment, name=name, version=version
    )
    if as_json:
        output.emit_json(
            {
                "project": project,
                "environment": environment,
                "name": name,
                "version": version,
                "destroyed": True,
            }
        )
        return
    click.echo(f"Destroyed version {version} of {project}/{environment}/{name}; it cannot be read again.")


@secrets_group.command("history")
@project_option
@environment_option
@click.argument("name", callback=check_secret_name)
@json_option
@click.pass_obj
def secret_history(session: Session, project: str, environment: str, name: str, as_json: bool) -> None:
    """List the versions of secret NAME (never values)."""
    history = session.client().secret_history(project=project, environment=environment, name=name)
    if as_json:
        output.emit_json(asdict(history))
        return
    rows = [
        (
            str(item.version),
            item.created_at,
            item.author or "-",
            _state(item.version == history.current_version, item.deleted, item.destroyed),
        )
        for item in history.versions
    ]
    output.emit_table(("VERSION", "CREATED", "AUTHOR", "STATE"), rows, empty=f"No versions of {name}.")


def _state(current: bool, deleted: bool, destroyed: bool) -> str:
    states = [
        word for word, on in (("current", current), ("deleted", deleted), ("destroyed", destroyed)) if on
    ]
    return ", ".join(states) or "-"


@secrets_group.command("rollback")
@project_option
@environment_option
@click.argument("name", callback=check_secret_name)
@click.argument("version", type=click.IntRange(min=1))
@json_option
@click.pass_obj
def rollback_secret(
    session: Session, project: str, environment: str, name: str, version: int, as_json: bool
) -> None:
    """Store the value of VERSION of secret NAME as a new version."""
    meta = session.client().rollback_secret(
        project=project, environment=environment, name=name, version=version
    )
    if as_json:
        output.emit_json(asdict(meta))
        return
    click.echo(f"Rolled {project}/{environment}/{meta.name} back to the value of version {version}.")
    click.echo(f"It is now version {meta.version}.")


@secrets_group.command("generate", cls=RefusingCommand)
@project_option
@environment_option
@click.argument("name", callback=check_secret_name)
@click.option(
    "--bytes",
    "size",
    type=click.IntRange(min=16, max=1024),
    default=64,
    show_default=True,
    metavar="N",
    help="Randomness of the value, in bytes (64: what `rails secret` gives).",
)
@click.option(
    "--format",
    "encoding",
    type=click.Choice(("hex", "base64", "alnum")),
    default="hex",
    show_default=True,
    help="hex: 2N characters; base64: standard, padded; alnum: [A-Za-z0-9], long enough for 8N bits.",
)
@click.option("--rotate", is_flag=True, help="Replace an existing value with a newly generated version.")
@click.option("--reveal", is_flag=True, help="Then print the stored value, raw (the read is audited).")
@json_option
@refuse_positionals(GENERATE_REFUSAL)
@click.pass_obj
def generate_secret(
    session: Session,
    *,
    project: str,
    environment: str,
    name: str,
    size: int,
    encoding: str,
    rotate: bool,
    reveal: bool,
    as_json: bool,
) -> None:
    """Have the broker generate and store NAME once; an existing value is left alone unless --rotate."""
    client = session.client()
    done = client.generate_secret(
        project=project, environment=environment, name=name, size=size, encoding=encoding, rotate=rotate
    )
    where = f"{project}/{environment}/{name}"
    value = None
    if reveal:
        value = client.get_secret(project=project, environment=environment, name=name, reveal=True).value
    if as_json:
        output.emit_json(
            {
                "generated": done.generated,
                "rotated": done.rotated,
                "secret": asdict(done.secret),
                **({"value": value} if value is not None else {}),
            }
        )
        return
    if done.rotated:
        message = f"Rotated {where}: the broker generated version {done.secret.version}."
    elif done.generated:
        message = f"Generated {where} in the broker (version {done.secret.version}); the value was not shown."
    else:
        deleted = " (deleted: undelete it or pass --rotate)" if done.secret.deleted else ""
        message = f"{where} already exists (version {done.secret.version}){deleted}; left unchanged (--rotate replaces it)."
    if value is None:
        click.echo(message)
        return
    # The message goes to stderr so that stdout is exactly the value, as with `secrets get --reveal`.
    click.echo(message, err=True)
    sys.stdout.flush()
    sys.stdout.buffer.write(value.encode("utf-8"))
    sys.stdout.buffer.flush()
