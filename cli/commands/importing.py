"""`strongroom import-backend`: copy secrets from Vault KV v2 or AWS Secrets Manager into the database.

A separate name from `strongroom import` (which reads .env and Kamal files): this one asks the broker to
read an upstream it is configured for; the CLI never talks to Vault or AWS and never sees their
credentials, and it prints names and actions, never values.
"""

from __future__ import annotations

from dataclasses import asdict

import click

from cli import output
from cli.options import environment_option, json_option, project_option
from cli.session import Session


@click.command("import-backend")
@project_option
@environment_option
@click.option(
    "--from",
    "source",
    required=True,
    metavar="SOURCE",
    help="vault://MOUNT/PATH or aws-sm://PREFIX (or aws-sm://ARN); must lie under a prefix the broker is "
    "configured for.",
)
@click.option("--backend", metavar="NAME", help="Which configured upstream, if several could serve SOURCE.")
@click.option("--dry-run", is_flag=True, help="List what would change; write nothing.")
@click.option("--overwrite", is_flag=True, help="Replace existing values that differ.")
@json_option
@click.pass_obj
def import_backend(
    session: Session,
    project: str,
    environment: str,
    source: str,
    backend: str | None,
    dry_run: bool,
    overwrite: bool,
    as_json: bool,
) -> None:
    """Copy the secrets under SOURCE into a database environment (needs admin on it)."""
    if not source.startswith(("vault://", "aws-sm://")):
        raise click.BadParameter("must start with vault:// or aws-sm://", param_hint="--from")
    result = session.client().import_from_backend(
        project=project,
        environment=environment,
        source=source,
        backend=backend,
        dry_run=dry_run,
        overwrite=overwrite,
    )
    if as_json:
        output.emit_json(asdict(result))
        return
    rows = [
        (c.name, c.action, c.reason or "", c.upstream_path or "", c.upstream_version or "")
        for c in result.changes
    ]
    output.emit_table(
        ("NAME", "ACTION", "REASON", "UPSTREAM PATH", "UPSTREAM VERSION"),
        rows,
        empty=f"Nothing under {source}.",
    )
    written = sum(1 for c in result.changes if c.action in ("create", "update"))
    if result.dry_run:
        click.echo(f"Dry run: {written} would be written to {project}/{environment}; nothing changed.")
    else:
        click.echo(f"Imported {written} into {project}/{environment} from {result.backend}.")
