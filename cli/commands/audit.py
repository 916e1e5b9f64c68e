"""`strongroom audit`: who did what to which secret, when, from where, with what outcome; and proof it is intact.

`list`, `export` and `fingerprint` ask the broker (a token with the `audit` action; each look is itself
audited). `verify` works offline on an export plus the signed checkpoints and the public key, with no broker
running and no login: it is the one place the CLI imports broker code, the pure verifier
(broker.audit.verify), so the auditor runs exactly the checks the broker's own `audit verify` runs.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, BinaryIO

import click

from cli import output
from cli.errors import CliError
from cli.options import json_option
from cli.session import Session

OUTCOMES = ("ok", "denied", "invalid", "error")


def _resource(event: dict[str, Any]) -> str:
    parts = [event.get(k) for k in ("project", "environment", "secret_name")]
    text = "/".join(str(p) for p in parts if p)
    if event.get("version") is not None:
        text += f"@v{event['version']}"
    return text or str(event.get("route", "-"))


def _actor(event: dict[str, Any]) -> str:
    name = event.get("actor_name")
    kind = event.get("actor_type") or "anonymous"
    return f"{name} ({kind})" if name else kind


def _rows(events: list[dict[str, Any]]) -> list[tuple[str, ...]]:
    return [
        (
            str(e.get("seq", "")),
            str(e.get("occurred_at", ""))[:23] + "Z",
            _actor(e),
            str(e.get("action") or "-"),
            _resource(e),
            str(e.get("outcome", "")),
            str(e.get("source_addr") or "-"),
            str(e.get("client_kind") or "-"),
        )
        for e in events
    ]


HEADERS = ("SEQ", "TIME (UTC)", "ACTOR", "ACTION", "RESOURCE", "OUTCOME", "SOURCE", "CLIENT")


@click.group("audit")
def audit_group() -> None:
    """Read, export and verify the audit trail (needs a token with the audit action, except verify)."""


@audit_group.command("list")
@click.option("--actor", metavar="NAME", help="Only this actor (identity name).")
@click.option("--accessor", metavar="ACCESSOR", help="Only this token (by accessor, sra_...).")
@click.option("-p", "--project", metavar="PROJECT", help="Only this project.")
@click.option(
    "-e",
    "--environment",
    metavar="ENVIRONMENT",
    help="Only this environment (with --name: the key where it lives, or read through this environment).",
)
@click.option(
    "--name",
    metavar="NAME",
    help="Every event that touched this key, by any route: read, reveal, run, export, compile, kamal fetch, "
    "deploy bundle, write, refusal.",
)
@click.option(
    "--action",
    metavar="ACTION",
    help="An action (secret.read), a family (secret: all of secret.*) or a prefix (secret.*).",
)
@click.option("--outcome", type=click.Choice(OUTCOMES), help="Only this outcome.")
@click.option("--since", metavar="WHEN", help="ISO 8601 date or time (UTC), or an age: 90d, 12h, 30m.")
@click.option("--until", metavar="WHEN", help="Before this time (same forms as --since).")
@click.option("--source", metavar="ADDR", help="Source address or CIDR block.")
@click.option(
    "--fingerprint", metavar="FP", help="Only events that read or wrote the value with this fingerprint."
)
@click.option("--limit", type=click.IntRange(1, 500), default=50, show_default=True, help="Events per page.")
@click.option(
    "--cursor", type=click.IntRange(min=0), help="Continue after this sequence number (from a page)."
)
@click.option("--all", "every", is_flag=True, help="Follow the pages to the end.")
@click.option("--oldest-first", is_flag=True, help="Oldest first (default: newest first).")
@json_option
@click.pass_obj
def list_events(
    session: Session, /, *, every: bool, oldest_first: bool, as_json: bool, **filters: Any
) -> None:
    """List audit events, newest first: who, what, when, from where, outcome."""
    query = {k: str(v) for k, v in filters.items() if v is not None and k != "limit"}
    query["limit"] = str(filters["limit"])
    if oldest_first:
        query["order"] = "oldest"
    client = session.client()
    events: list[dict[str, Any]] = []
    while True:
        page = client.audit_events(query)
        batch = page.get("events")
        if not isinstance(batch, list):
            raise CliError("the broker sent an unexpected response: events is not a list")
        events += [e for e in batch if isinstance(e, dict)]
        cursor = page.get("next_cursor")
        if not every or not isinstance(cursor, int):
            break
        query["cursor"] = str(cursor)
    if as_json:
        output.emit_json({"events": events, "next_cursor": None if every else page.get("next_cursor")})
        return
    output.emit_table(HEADERS, _rows(events), empty="No audit events match.")
    if not every and isinstance(page.get("next_cursor"), int):
        click.echo(f"(more: --cursor {page['next_cursor']}, or --all)", err=True)


def _create(path: Path) -> BinaryIO:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise CliError(f"{path} exists; refusing to overwrite it") from None
    except OSError as exc:
        raise CliError(f"cannot create {path}: {exc.strerror or exc}") from None
    return os.fdopen(fd, "wb")


class _Splitter:
    """Turns the streamed JSON lines of an export into a CSV file plus its sidecar, one line at a time."""

    def __init__(self, records: BinaryIO, parts: BinaryIO) -> None:
        import csv
        import io

        from broker.audit.verify import CSV_COLUMNS

        self._records = records
        self._parts = parts
        self._pending = b""
        self._buf = io.StringIO()
        self._csv = csv.writer(self._buf, lineterminator="\r\n")
        self._csv.writerow(CSV_COLUMNS)
        self._flush()

    def _flush(self) -> None:
        self._records.write(self._buf.getvalue().encode("utf-8"))
        self._buf.seek(0)
        self._buf.truncate()

    def __call__(self, chunk: bytes) -> None:
        from broker.audit.verify import csv_row

        self._pending += chunk
        *lines, self._pending = self._pending.split(b"\n")
        for line in lines:
            if not line.strip():
                continue
            item = json.loads(line)
            if isinstance(item, dict) and "event" in item:
                self._csv.writerow(csv_row(item["event"]))
            else:
                self._parts.write(line + b"\n")
        self._flush()


@audit_group.command("export")
@click.option("--since", metavar="WHEN", help="ISO 8601 date or time (UTC), or an age: 90d, 12h, 30m.")
@click.option(
    "--until", metavar="WHEN", help="Up to this time (default: now, so truncation can be detected)."
)
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv"]), default="jsonl", show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="File to create.")
@click.pass_obj
def export(session: Session, since: str | None, until: str | None, fmt: str, out: Path) -> None:
    """Export a time range with the checkpoints that cover it, for `strongroom audit verify`.

    JSON lines hold everything in one file; CSV puts the records in OUT and the header, checkpoints and end
    line in OUT.checkpoints.jsonl beside it.
    """
    client = session.client()
    query = {"since": since or "", "until": until or ""}
    if fmt == "csv":
        from broker.audit.verify import sidecar

        with _create(out) as records, _create(sidecar(out)) as parts:
            splitter = _Splitter(records, parts)
            client.audit_export({**query, "format": "jsonl"}, splitter)
            records.flush()
            os.fsync(records.fileno())
        summary = sidecar(out)
    else:
        with _create(out) as handle:
            client.audit_export({**query, "format": "jsonl"}, handle.write)
            handle.flush()
            os.fsync(handle.fileno())
        summary = out
    end, header, checkpoints = None, {}, 0
    with summary.open("rb") as handle:
        for line in handle:
            item = json.loads(line) if line.strip() else {}
            if "end" in item:
                end = item["end"]
            elif "export" in item:
                header = item["export"]
            elif "checkpoint" in item:
                checkpoints += 1
    if end is None:
        raise CliError(f"the export was cut short (no end line); {out} is incomplete, export again")
    click.echo(
        f"wrote {end.get('events', 0)} records (seq {header.get('from_seq')}..{header.get('to_seq')}) and "
        f"{checkpoints} checkpoints to {out}"
    )
    # What the broker just said about this export is trustworthy now, not once the file has left this
    # machine: the verify command carries it on the auditor's command line, never from the file.
    when = header.get("generated_at")
    vouch = (
        f" --exported-at {when}"
        if header.get("to_head") and isinstance(when, str) and re.fullmatch(r"[0-9T:.Z-]{1,40}", when)
        else " --partial"
    )
    click.echo(
        f"verify offline: strongroom audit verify {out} --public-key KEY.pem --checkpoints CHECKPOINT_DIR{vouch}"
    )
    click.echo("(keep that command with your records: the file's own header is not trusted to say it)")


@audit_group.command("verify")
@click.argument("export_file", metavar="EXPORT", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--public-key",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="The broker's checkpoint public key (PEM), from your operator.",
)
@click.option(
    "--checkpoints",
    "checkpoint_paths",
    multiple=True,
    type=click.Path(exists=True, path_type=Path),
    help="A checkpoint directory or file kept outside the broker (repeatable); these are trusted, and so are "
    "a directory's accepted-restore markers (restore-*.marker, signed by the same key), which explain a gap.",
)
@click.option(
    "--partial",
    is_flag=True,
    help="The file is a stretch of the chain by your own request (an export with --until in the past): "
    "trusted checkpoints beyond its last record are noted instead of failing.",
)
@click.option(
    "--exported-at",
    metavar="TIME",
    help="When the export was made, from your own records (ISO 8601, UTC unless it says otherwise): "
    "trusted checkpoints signed after it may reach beyond the file. The file's own header is never "
    "trusted for this.",
)
@json_option
def verify(
    export_file: Path,
    public_key: Path,
    checkpoint_paths: tuple[Path, ...],
    partial: bool,
    exported_at: str | None,
    as_json: bool,
) -> None:
    """Verify an export offline: exit 0 when intact, 1 naming what failed (the first bad sequence number).

    Finds modified, deleted, reordered and inserted records, and a tail cut off before a checkpoint in
    --checkpoints, whatever the file's header says. Without --checkpoints only the file's consistency
    with itself is checked, and a note says so (exit 0 when consistent). No broker is needed.
    """
    from broker.audit.verify import (
        CheckpointError,
        ExportError,
        PublicKey,
        accepted_restores,
        failure_line,
        load_checkpoints,
        load_restores,
        parse_exported_at,
        verify_export,
    )

    since: str | None = None
    if exported_at is not None:
        try:
            since = parse_exported_at(exported_at)
        except ValueError:
            raise click.BadParameter("must be an ISO 8601 date or time", param_hint="--exported-at") from None
    try:
        public = PublicKey.from_pem(public_key.read_bytes()[:16384])
        trusted = [c for path in checkpoint_paths for c in load_checkpoints(path)]
        restores = [(path, m) for path in checkpoint_paths for m in load_restores(path)]
        # An accepted restore (signed by the same key) sets aside the checkpoints of the branch it replaced.
        trusted, problem = accepted_restores(trusted, [m for _, m in restores], public)
        if problem is not None:
            raise CliError(f"cannot verify: --checkpoints: {problem}")
        report = verify_export(export_file, public, trusted=trusted, partial=partial, exported_at=since)
        report.notes += [m.explain(str(path)) for path, m in restores]
    except (CheckpointError, ExportError) as exc:
        raise CliError(f"cannot verify: {exc}") from None
    if as_json:
        output.emit_json(report.as_json())
    elif report.ok:
        click.echo(
            f"ok: {report.events} records (seq {report.first_seq}..{report.last_seq}) intact; "
            f"{report.checkpoints} checkpoints valid, signed up to seq {report.vouched_to or 'none'}"
        )
    else:
        click.echo(output.clean(failure_line(report)))
    if not as_json:
        for note in report.notes:
            click.echo(f"note: {output.clean(note)}")
    if not report.ok:
        raise click.exceptions.Exit(1)


@audit_group.command("fingerprint")
@click.option(
    "--from-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Read the candidate value from FILE, byte for byte (else stdin when piped, else a hidden prompt).",
)
@json_option
@click.pass_obj
def fingerprint(session: Session, from_file: Path | None, as_json: bool) -> None:
    """Was this exact value ever read or written? Its fingerprint and the events that touched it.

    The value never goes on the command line; the look-up is audited and rate limited.
    """
    from cli.secret_input import read_secret_value

    value = read_secret_value(name="the candidate", from_file=from_file)
    result = session.client().audit_fingerprint(value=value)
    events = [e for e in result.get("events", []) if isinstance(e, dict)]
    if as_json:
        output.emit_json(result)
        return
    click.echo(f"fingerprint: {output.clean(str(result.get('fingerprint', '')))}")
    output.emit_table(HEADERS, _rows(events), empty="No event read or wrote this value.")
