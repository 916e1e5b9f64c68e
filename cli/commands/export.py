"""`strongroom export`: an environment's values in a file format, through the broker's pure renderers.

The renderers (broker/renderers) carry every value exactly or refuse it; this command adds the file rules:
written 0600, atomically, or printed only when --reveal says so (the broker audits that fetch as a reveal).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from cli import output
from cli.errors import CliError
from cli.files import write_private
from cli.options import environment_option, json_option, project_option, split_names
from cli.session import Session

FORMATS = ("dotenv", "dotenv-export", "env-file", "compose", "json", "yaml", "k8s", "systemd")
NEEDS_DESTINATION = (
    "export writes secret values: give --out FILE (written 0600), or --reveal to print them "
    "(the broker audits that as a reveal)"
)


@click.command()
@project_option
@environment_option
@click.option("--format", "target", type=click.Choice(FORMATS), required=True, help="The file format.")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    metavar="FILE",
    help="Write here (0600, atomically, replacing any file). A directory takes the format's own file name.",
)
@click.option("--reveal", is_flag=True, help="Print the file on stdout instead (audited as a reveal).")
@click.option(
    "--only", multiple=True, callback=split_names, metavar="K1,K2", help="Export only these variables."
)
@click.option(
    "--name",
    "service",
    metavar="NAME",
    help="The app's name in the file (k8s object names, comments); default: the project.",
)
@click.option("--namespace", metavar="NAMESPACE", help="k8s only: the namespace of the objects.")
@json_option
@click.pass_obj
def export(
    session: Session,
    *,
    project: str,
    environment: str,
    target: str,
    out: Path | None,
    reveal: bool,
    only: tuple[str, ...],
    service: str | None,
    namespace: str | None,
    as_json: bool,
) -> None:
    """Render an environment's values as a dotenv, env-file, compose, JSON, YAML, k8s or systemd file."""
    if out is None and not reveal:
        raise click.UsageError(NEEDS_DESTINATION)
    if out is not None and reveal:
        raise click.UsageError("give --out or --reveal, not both")
    if namespace is not None and target != "k8s":
        raise click.UsageError("--namespace is for --format k8s only")
    # The renderers load only here: `export` is the one command that needs them (and PyYAML).
    from broker.renderers.base import Entry, RenderError, RenderOptions
    from broker.renderers.registry import get_renderer
    from cli.commands.run import picked_values

    resolved = session.client().resolved(project=project, environment=environment, reveal=reveal)
    # Not `run`'s exec checks: whether a value fits the file (a NUL in JSON does) is the renderer's to
    # say, as it is for `compile`, so both commands accept and refuse the same values (docs/targets.md).
    values = picked_values(resolved, only)
    entries = [
        Entry(name=name, value=value, sensitive=resolved.values[name].sensitive)
        for name, value in values.items()
    ]
    options = RenderOptions(environment=environment, service=service or project, namespace=namespace)
    try:
        files = get_renderer(target).render(entries, options=options)
    except RenderError as exc:
        # One sentence naming the key, the target, the reason and the alternative; never the value.
        raise CliError(
            f"{project}/{environment}/{exc.key}: {exc.reason}; the {exc.target} target cannot carry it "
            f"({exc.alternative})"
        ) from None
    if out is None:
        sys.stdout.flush()
        for file in files:
            sys.stdout.buffer.write(file.content)
        sys.stdout.buffer.flush()
        return
    written = [_write(out, file.path, file.content, len(files)) for file in files]
    if as_json:
        output.emit_json({"format": target, "files": [str(p) for p in written], "variables": sorted(values)})
        return
    for path in written:
        click.echo(f"Wrote {len(values)} variables of {project}/{environment} to {path} (0600).")


def _write(out: Path, name: str, content: bytes, count: int) -> Path:
    """Write one rendered file: to `out`, or inside `out` when it is a directory (or there are several)."""
    path = out / name if out.is_dir() or count > 1 else out
    try:
        write_private(path, content)
    except OSError as exc:
        raise CliError(f"cannot write {path}: {(exc.strerror or 'error').lower()}") from None
    return path
