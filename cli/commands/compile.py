"""`strongroom compile`, `check`, `diff` and `import`: strongroom.yml in, files out, values never on screen.

The manifest goes to the broker as text; the broker resolves the environment, renders and audits. Files that
hold values are written 0600, atomically; paths from the broker are checked to stay inside --out.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

import click

from cli import output
from cli.errors import CliError
from cli.options import F, check_slug, complete_project, environment_option, is_slug, json_option
from cli.session import Session

if TYPE_CHECKING:
    from cli.client import BrokerClient, Problem
    from cli.importers import Found, KamalImport, Skipped

MANIFEST = "strongroom.yml"
TARGETS = ("dotenv", "dotenv-export", "env-file", "compose", "json", "yaml", "k8s", "systemd", "kamal")
_SAFE_SEGMENT = re.compile(
    r"\.?[A-Za-z0-9_][A-Za-z0-9_.-]*"
)  # no "..", no separators, at most one leading dot
MANIFEST_MAX_BYTES = 256 * 1024


def _project_option(f: F) -> F:
    return click.option(
        "-p",
        "--project",
        envvar="STRONGROOM_PROJECT",
        metavar="PROJECT",
        callback=check_slug,
        shell_complete=complete_project,
        help="Project slug [env: STRONGROOM_PROJECT; default: `project:` in strongroom.yml].",
    )(f)


def _manifest_option(f: F) -> F:
    return click.option(
        "-f",
        "--manifest",
        "manifest_path",
        type=click.Path(dir_okay=False, path_type=Path),
        default=MANIFEST,
        show_default=True,
        help="The manifest to compile.",
    )(f)


def _targets_option(required: bool) -> Callable[[F], F]:
    def decorate(f: F) -> F:
        return click.option(
            "-t",
            "--target",
            "targets",
            multiple=True,
            required=required,
            type=click.Choice(TARGETS),
            help="A target to render (repeatable).",
        )(f)

    return decorate


def read_manifest(path: Path) -> str:
    """The manifest's text (UTF-8, at most 256 KiB), or a CliError naming the file."""
    try:
        with path.open("rb") as handle:
            data = handle.read(MANIFEST_MAX_BYTES + 1)
    except OSError as exc:
        raise CliError(f"cannot read {path}: {(exc.strerror or 'error').lower()}") from None
    if len(data) > MANIFEST_MAX_BYTES:
        raise CliError(f"{path} is larger than 256 KiB")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise CliError(f"{path} is not UTF-8 text") from None


def manifest_project(text: str) -> str | None:
    """`project:` of a manifest, if it names one (the broker validates the rest)."""
    import yaml

    try:
        data = yaml.load(text, Loader=yaml.BaseLoader)  # noqa: S506 (BaseLoader builds only strings, lists, dicts)
    except yaml.YAMLError:
        return None
    project = data.get("project") if isinstance(data, dict) else None
    return project if isinstance(project, str) and is_slug(project) else None


def pick_project(project: str | None, manifest: str) -> str:
    """-p/STRONGROOM_PROJECT, else the manifest's `project:`."""
    chosen = project or manifest_project(manifest)
    if chosen is None:
        raise CliError(
            "no project: pass -p PROJECT, set STRONGROOM_PROJECT or add project: to strongroom.yml",
            exit_code=2,
        )
    return chosen


def safe_relative(path: str) -> PurePosixPath:
    """A broker-given output path, only if it is plainly inside the output directory."""
    pure = PurePosixPath(path)
    if pure.is_absolute() or not pure.parts or not all(_SAFE_SEGMENT.fullmatch(p) for p in pure.parts):
        raise CliError(
            f"the broker sent an output path that is not a plain relative path: {output.clean(path)!r}"
        )
    return pure


def _show_problems(problems: tuple[Problem, ...], *, err: bool) -> None:
    for problem in problems:
        label = "warning" if problem.level == "warning" else "error"
        click.echo(f"{label}: {output.clean(problem.text())}", err=err)


@click.command("compile")
@_project_option
@environment_option
@_targets_option(required=True)
@_manifest_option
@click.option(
    "-o",
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=".",
    show_default=True,
    help="Directory to write the files into (paths such as config/deploy.yml are created below it).",
)
@click.option(
    "--role", metavar="ROLE", help="For non-Kamal targets: this role's variables over the global ones."
)
@click.pass_obj
def compile_command(
    session: Session,
    project: str | None,
    environment: str,
    targets: tuple[str, ...],
    manifest_path: Path,
    out_dir: Path,
    role: str | None,
) -> None:
    """Compile strongroom.yml for ENVIRONMENT into each --target's files.

    Files holding values are written 0600 and atomically; Kamal files hold names only.
    """
    from cli.files import write_private

    text = read_manifest(manifest_path)
    project = pick_project(project, text)
    result = session.client().compile(
        project=project, environment=environment, manifest=text, targets=list(targets), role=role
    )
    _show_problems(result.warnings, err=True)
    planned = [(out_dir.joinpath(*safe_relative(f.path).parts), f) for f in result.files]
    for path, item in planned:
        # Files holding values are owner-only whatever the broker says; others at most world-readable.
        mode = 0o600 if item.holds_values else (item.mode & 0o644) | 0o600
        try:
            write_private(path, item.content, mode=mode)
        except OSError as exc:
            raise CliError(f"cannot write {path}: {(exc.strerror or 'error').lower()}") from None
        what = "holds values, 0600" if item.holds_values else "names only"
        click.echo(f"Wrote {output.clean(str(path))} ({what}).")
    click.echo(f"Compiled {project}/{environment}: {len(planned)} files, {len(result.keys)} values read.")


@click.command("check")
@_project_option
@environment_option
@_targets_option(required=False)
@_manifest_option
@click.option(
    "--role", metavar="ROLE", help="For non-Kamal targets: this role's variables over the global ones."
)
@json_option
@click.pass_obj
def check_command(
    session: Session,
    project: str | None,
    environment: str,
    targets: tuple[str, ...],
    manifest_path: Path,
    role: str | None,
    as_json: bool,
) -> None:
    """Check strongroom.yml against ENVIRONMENT without fetching any value to this machine.

    Fails (exit 1) when a key is missing or empty, a reference is broken, the secret lint fires, or a
    value cannot be carried by one of the --target formats.
    """
    from dataclasses import asdict

    text = read_manifest(manifest_path)
    project = pick_project(project, text)
    result = session.client().check(
        project=project, environment=environment, manifest=text, targets=list(targets), role=role
    )
    if as_json:
        output.emit_json(
            {
                "ok": result.ok,
                "problems": [asdict(p) for p in result.problems],
                "keys": [asdict(k) for k in result.keys],
            }
        )
    else:
        _show_problems(result.problems, err=False)
        state = "ok" if result.ok else "failed"
        click.echo(
            f"Check of {project}/{environment} {state}: {len(result.keys)} keys found, {len(result.problems)} problems."
        )
    if not result.ok:
        raise click.exceptions.Exit(1)


@click.command("diff")
@_project_option
@click.argument("env_a", callback=check_slug)
@click.argument("env_b", callback=check_slug)
@_manifest_option
@json_option
@click.pass_obj
def diff_command(
    session: Session, project: str | None, env_a: str, env_b: str, manifest_path: Path, as_json: bool
) -> None:
    """Compare ENV_A and ENV_B: keys only in one, and keys whose values differ, by fingerprint (never values).

    A fingerprint is the audit trail's HMAC-SHA256 of the value under the broker's audit key: the same
    value gets the same fingerprint in every answer (until that key changes), and
    `strongroom audit list --fingerprint` finds the events that read or wrote it (--json shows it in full).
    """
    if project is None:
        text = read_manifest(manifest_path) if manifest_path.exists() else ""
        project = pick_project(None, text)
    diff = session.client().diff(project=project, a=env_a, b=env_b)
    if as_json:
        output.emit_json(
            {
                "a": diff.a,
                "b": diff.b,
                "only_in_a": list(diff.only_in_a),
                "only_in_b": list(diff.only_in_b),
                "different": [
                    {"name": n, "a": fa.fingerprint, "b": fb.fingerprint} for n, fa, fb in diff.different
                ],
                "same": list(diff.same),
            }
        )
        return
    rows = [(n, f"only in {env_a}", "", "") for n in diff.only_in_a]
    rows += [(n, f"only in {env_b}", "", "") for n in diff.only_in_b]
    rows += [(n, "differs", _short(fa.fingerprint), _short(fb.fingerprint)) for n, fa, fb in diff.different]
    rows.sort()
    output.emit_table(
        ("NAME", "STATE", env_a.upper(), env_b.upper()),
        rows,
        empty=f"{env_a} and {env_b} hold the same keys with the same values.",
    )
    if rows:
        click.echo(
            f"{len(diff.same)} keys are equal. Fingerprints (shortened; --json shows them in full) are the "
            "audit trail's: the same value has the same one in every answer."
        )


def _short(fingerprint: str) -> str:
    return fingerprint.removeprefix("hmac-sha256:")[:12]


# --- import ------------------------------------------------------------------------------------------------


@click.command("import")
@_project_option
@environment_option
@click.option(
    "--dotenv",
    "dotenv_files",
    multiple=True,
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="A .env file (repeatable).",
)
@click.option(
    "--env-file",
    "env_files",
    multiple=True,
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="A docker --env-file (repeatable).",
)
@click.option(
    "--kamal",
    "kamal_dir",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="A Kamal project: config/deploy*.yml and .kamal/secrets*.",
)
@click.option(
    "--manifest-out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write strongroom.yml (default: ./strongroom.yml for a Kamal project).",
)
@click.option("--force", is_flag=True, help="Overwrite an existing manifest file.")
@click.option("--overwrite", is_flag=True, help="Replace values already in the broker (default: keep them).")
@click.option("--dry-run", is_flag=True, help="Show what would be imported; change nothing.")
@click.option("--no-input", is_flag=True, help="Never prompt for the values that could not be imported.")
@click.pass_obj
def import_command(
    session: Session,
    project: str | None,
    environment: str,
    dotenv_files: tuple[Path, ...],
    env_files: tuple[Path, ...],
    kamal_dir: Path | None,
    manifest_out: Path | None,
    force: bool,
    overwrite: bool,
    dry_run: bool,
    no_input: bool,
) -> None:
    """Bring an existing setup into ENVIRONMENT without running anything from it.

    Values computed by a command ($(...)), an expansion ($VAR) or ERB are listed as needing a value and
    never run; on a terminal you are asked for each (hidden), else run `strongroom secrets set` for them.
    Values from .kamal/secrets.<destination> go to the environment named like the destination. Every line
    that cannot be brought (a name with '-', a space, an invisible character...) is listed on stderr as
    FILE:LINE and the reason, and placeholders written into strongroom.yml (hosts computed by ERB) are
    listed with what to write there. Exit status 1 when any of those, or a value still needed, remains
    (after everything else is stored); a --dry-run lists them and exits 0.
    """
    from cli import importers

    if not (dotenv_files or env_files or kamal_dir):
        raise CliError("nothing to import: give --dotenv FILE, --env-file FILE or --kamal DIR", exit_code=2)
    found: list[tuple[str, Found]] = []  # (environment, found)
    skipped: list[Skipped] = []
    for path in dotenv_files:
        values, unreadable = importers.parse_dotenv(_read_text(path), str(path))
        found += [(environment, f) for f in values]
        skipped += unreadable
    for path in env_files:
        values, unreadable = importers.parse_env_file(_read_text(path), str(path))
        found += [(environment, f) for f in values]
        skipped += unreadable
    manifest: dict[str, object] | None = None
    kamal = importers.KamalImport(manifest={})
    if kamal_dir is not None:
        manifest, kamal_found, kamal_skipped = _import_kamal(kamal_dir, environment, kamal)
        found += kamal_found
        skipped += kamal_skipped
    if project is None:
        project = str(manifest.get("project")) if manifest and manifest.get("project") else None
    if project is None or not is_slug(project):
        raise CliError("no project: pass -p PROJECT or set STRONGROOM_PROJECT", exit_code=2)
    if manifest is not None:
        manifest = {"project": project, **{k: v for k, v in manifest.items() if k != "project"}}
    target = manifest_out or (Path(MANIFEST) if manifest is not None else None)
    if manifest is None and target is not None:
        names = sorted({f.name for _e, f in found})
        manifest = {"project": project, "service": project, "env": {"secret": names}}
    _report_import(found, kamal, skipped)
    if dry_run:
        click.echo("Dry run: nothing was written.")
        return
    if manifest is not None and target is not None:
        if target.exists() and not force:
            raise CliError(f"{target} exists; pass --force to replace it, or --manifest-out FILE")
        _write_manifest(target, manifest, kamal.to_fill)
        click.echo(f"Wrote {output.clean(str(target))} (names only).")
    client = session.client()
    remaining = _upload(client, project, found, overwrite=overwrite, no_input=no_input)
    if remaining:
        click.echo("Still needed (set each with strongroom secrets set):", err=True)
        for env, item in remaining:
            click.echo(f"  strongroom secrets set -p {project} -e {env} {item.name}", err=True)
    if skipped:
        click.echo(
            f"{len(skipped)} lines could not be brought (listed above by file, line and reason).", err=True
        )
    if kamal.to_fill and target is not None:
        click.echo(
            f"Fill in {output.clean(str(target))} before deploying (listed above), then run strongroom check "
            "-t kamal.",
            err=True,
        )
    if remaining or skipped or kamal.to_fill:
        raise click.exceptions.Exit(1)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror.lower() if isinstance(exc, OSError) and exc.strerror else "not UTF-8 text"
        raise CliError(f"cannot read {path}: {reason}") from None


def _import_kamal(
    root: Path, environment: str, result: KamalImport
) -> tuple[dict[str, object], list[tuple[str, Found]], list[Skipped]]:
    import yaml

    from cli import importers

    config_dir = root / "config"
    base_file = config_dir / "deploy.yml"
    if not base_file.is_file():
        raise CliError(f"{base_file} not found: is {root} a Kamal project?")

    def load(path: Path) -> dict[str, object]:
        text = importers.strip_erb(_read_text(path), str(path))
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError:
            raise CliError(f"{path} is not valid YAML") from None
        if not isinstance(data, dict):
            raise CliError(f"{path} is not a mapping")
        return data

    try:
        body = importers.map_deploy(load(base_file), str(base_file), result)
        environments: dict[str, object] = {}
        for path in sorted(config_dir.glob("deploy.*.yml")):
            dest = path.name.removeprefix("deploy.").removesuffix(".yml")
            if is_slug(dest):
                environments[dest] = importers.map_deploy(load(path), str(path), result, base=False)
            else:
                result.not_brought.append(f"{path}: the destination name is not an environment slug")
    except importers.ImportError_ as exc:
        raise CliError(str(exc)) from None
    manifest: dict[str, object] = dict(body)
    if environments:
        manifest["environments"] = environments
    found: list[tuple[str, Found]] = [(environment, f) for f in result.values]
    skipped: list[Skipped] = []
    secrets_dir = root / ".kamal"
    names = [p.name for p in secrets_dir.iterdir()] if secrets_dir.is_dir() else []
    for name, destination in importers.secrets_files(names):
        if destination is not None and not is_slug(destination):
            result.not_brought.append(f".kamal/{name}: the destination name is not an environment slug")
            continue
        path = secrets_dir / name
        values, unreadable = importers.parse_dotenv(_read_text(path), str(path), kamal=True)
        found += [(destination or environment, item) for item in values]
        skipped += unreadable
    return manifest, found, skipped


def _report_import(found: list[tuple[str, Found]], kamal: KamalImport, skipped: list[Skipped]) -> None:
    # Names, files, lines and reasons only: a line that cannot be brought is never shown, it may hold a value.
    for env, item in found:
        if item.written_by_compile:
            state = "written by strongroom compile --target kamal; skipped"
        elif item.value is not None:
            state = "import"
        else:
            state = f"needs a value: {item.reason}"
        click.echo(f"{env}/{item.name} ({output.clean(item.source)}): {state}")
    for line in kamal.not_brought:
        click.echo(f"not brought: {output.clean(line)}")
    for line in kamal.notes:
        click.echo(f"note: {output.clean(line)}")
    for line_skipped in skipped:
        click.echo(f"cannot bring {output.clean(line_skipped.text())}", err=True)
    for line in kamal.to_fill:
        click.echo(f"fill in: {output.clean(line)}", err=True)


def _write_manifest(path: Path, manifest: dict[str, object], to_fill: list[str]) -> None:
    import yaml

    from cli.files import write_private

    header = "# Written by strongroom import; it names secrets and holds no value. Check it with strongroom check.\n"
    if to_fill:
        header += "# FILL IN before deploying (strongroom check names each until it is done):\n"
        header += "".join(f"#   {output.clean(line)}\n" for line in to_fill)
    text = header + yaml.safe_dump(manifest, sort_keys=False, allow_unicode=False, default_flow_style=False)
    try:
        write_private(path, text.encode("utf-8"), mode=0o644)
    except OSError as exc:
        raise CliError(f"cannot write {path}: {(exc.strerror or 'error').lower()}") from None


def _upload(
    client: BrokerClient, project: str, found: list[tuple[str, Found]], *, overwrite: bool, no_input: bool
) -> list[tuple[str, Found]]:
    from cli.client import BrokerError
    from cli.secret_input import stdin_is_terminal

    latest: dict[tuple[str, str], Found] = {}
    for env, item in found:
        if item.written_by_compile:
            continue
        latest[(env, item.name)] = item  # later files win, as Kamal's merge of secrets files does
    remaining: list[tuple[str, Found]] = []
    ask = not no_input and stdin_is_terminal()
    for (env, name), item in sorted(latest.items()):
        value = item.value
        if value is None and ask:
            value = click.prompt(
                f"Value for {env}/{name} ({item.reason})", hide_input=True, default="", show_default=False
            )
            value = value or None
        if value is None:
            remaining.append((env, item))
            continue
        try:
            client.put_secret(
                project=project, environment=env, name=name, value=value, cas=None if overwrite else 0
            )
            click.echo(f"Stored {project}/{env}/{name}.")
        except BrokerError as exc:
            if exc.status == 409:
                click.echo(
                    f"Kept {project}/{env}/{name}: already in the broker (pass --overwrite to replace it)."
                )
            else:
                raise
    return remaining
