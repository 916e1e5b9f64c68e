"""`strongroom projects`."""

from __future__ import annotations

from dataclasses import asdict

import click

from cli import output
from cli.options import check_slug, json_option
from cli.session import Session


@click.group()
def projects() -> None:
    """List, create and delete projects."""


@projects.command("list")
@json_option
@click.pass_obj
def list_projects(session: Session, as_json: bool) -> None:
    """List the projects your token has a scope on."""
    items = session.client().list_projects()
    if as_json:
        output.emit_json([asdict(item) for item in items])
        return
    rows = [(item.slug, item.description, item.created_at) for item in items]
    output.emit_table(("SLUG", "DESCRIPTION", "CREATED"), rows, empty="No projects.")


@projects.command("create")
@click.argument("slug", callback=check_slug)
@click.option("--description", default="", help="What the project is.")
@json_option
@click.pass_obj
def create_project(session: Session, slug: str, description: str, as_json: bool) -> None:
    """Create project SLUG."""
    project = session.client().create_project(slug=slug, description=description)
    if as_json:
        output.emit_json(asdict(project))
        return
    click.echo(f"Created project {project.slug}.")


@projects.command("delete")
@click.argument("slug", callback=check_slug)
@json_option
@click.pass_obj
def delete_project(session: Session, slug: str, as_json: bool) -> None:
    """Delete project SLUG (admins); refused while it has environments."""
    session.client().delete_project(project=slug)
    if as_json:
        output.emit_json({"project": slug, "deleted": True})
        return
    click.echo(f"Deleted project {slug}.")
