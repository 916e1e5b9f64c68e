"""`strongroom envs`."""

from __future__ import annotations

from dataclasses import asdict

import click

from cli import output
from cli.options import check_slug, complete_environment, json_option, project_option
from cli.session import Session


@click.group()
def envs() -> None:
    """List, create, reparent and delete the environments of a project."""


@envs.command("list")
@project_option
@json_option
@click.pass_obj
def list_environments(session: Session, project: str, as_json: bool) -> None:
    """List a project's environments and what each inherits from."""
    items = session.client().list_environments(project=project)
    if as_json:
        output.emit_json([asdict(item) for item in items])
        return
    rows = [(item.slug, item.parent or "-", item.created_at) for item in items]
    output.emit_table(("SLUG", "PARENT", "CREATED"), rows, empty=f"No environments in {project}.")


@envs.command("create")
@project_option
@click.argument("slug", callback=check_slug)
@click.option(
    "--parent",
    callback=check_slug,
    shell_complete=complete_environment,
    metavar="ENVIRONMENT",
    help="Inherit the values of this environment.",
)
@json_option
@click.pass_obj
def create_environment(session: Session, project: str, slug: str, parent: str | None, as_json: bool) -> None:
    """Create environment SLUG in a project."""
    environment = session.client().create_environment(project=project, slug=slug, parent=parent)
    if as_json:
        output.emit_json(asdict(environment))
        return
    inherits = f", inheriting from {environment.parent}" if environment.parent else ""
    click.echo(f"Created environment {project}/{environment.slug}{inherits}.")


@envs.command("set-parent")
@project_option
@click.argument("slug", callback=check_slug)
@click.option(
    "--parent",
    callback=check_slug,
    shell_complete=complete_environment,
    metavar="ENVIRONMENT",
    help="Inherit the values of this environment.",
)
@click.option("--no-parent", is_flag=True, help="Inherit nothing.")
@json_option
@click.pass_obj
def set_parent(
    session: Session, project: str, slug: str, parent: str | None, no_parent: bool, as_json: bool
) -> None:
    """Change what environment SLUG inherits from (admins): --parent ENVIRONMENT or --no-parent."""
    if (parent is None) == (not no_parent):
        raise click.UsageError("give exactly one of --parent ENVIRONMENT and --no-parent")
    environment = session.client().set_environment_parent(project=project, environment=slug, parent=parent)
    if as_json:
        output.emit_json(asdict(environment))
        return
    inherits = f"inherits from {environment.parent}" if environment.parent else "inherits nothing"
    click.echo(f"{project}/{environment.slug} now {inherits}.")


@envs.command("delete")
@project_option
@click.argument("slug", callback=check_slug)
@json_option
@click.pass_obj
def delete_environment(session: Session, project: str, slug: str, as_json: bool) -> None:
    """Delete environment SLUG (admins); refused while it has secrets or environments inheriting from it."""
    session.client().delete_environment(project=project, environment=slug)
    if as_json:
        output.emit_json({"project": project, "environment": slug, "deleted": True})
        return
    click.echo(f"Deleted environment {project}/{slug}.")
