"""Offline verification of an audit export against signed checkpoints: pure, streaming, constant memory.

`strongroom audit verify` (the CLI, no broker running) and `strongroom-server audit verify` (straight
from the database) both feed records in sequence order to `ChainVerifier`, which recomputes every hash
and stops at the first bad sequence number:
- a modified record no longer matches its stored hash (or, if its hash was recomputed too, the next
  record's prev_hash, or the signed head of a checkpoint);
- a deleted record leaves a gap in the sequence; reordered records fail their own hash (the sequence
  number is part of what is hashed); an inserted record breaks the prev_hash link after it;
- a cut-off tail: a signed checkpoint vouches for more records than an export "up to now" holds.
Memory holds the checkpoints (one per N records) and one record at a time.

What an export file says about itself (its header, end line and checkpoints) is never trusted to relax
a check: an auditor's trusted checkpoints (`--checkpoints DIR`, kept outside the broker) that vouch for
a record beyond the file's last one mean the tail was cut, whatever the header says, unless the
auditor says otherwise on the command line (`partial`, `exported_at`).

Export format, JSON lines: `{"export": header}`, then checkpoint documents (see checkpoint.py), then
`{"event": record}` per record (the record plus its `hash`), then `{"end": {"events": n}}`. The CSV
export holds the records only (columns FIELDS + hash; null is an empty cell; JSON fields as canonical
JSON text; a cell starting with = + - @ tab CR or ' gets one leading ' so spreadsheets do not run it);
its header, checkpoints and end line sit beside it in FILE.checkpoints.jsonl.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from broker.audit.canonical import (
    FIELDS,
    GENESIS,
    INT_FIELDS,
    JSON_FIELDS,
    RecordError,
    canonical_json,
    check_record,
    format_time,
    record_hash,
)
from broker.audit.checkpoint import CheckpointError, PublicKey, SignedCheckpoint, parse, series_problem
from broker.audit.restore import RestoreMarker
from broker.audit.restore import accepted as accepted_restores
from broker.audit.restore import parse as parse_restore

# The CLI imports only this module of the broker (architecture rule 1); these names come with it.
__all__ = [
    "CSV_COLUMNS",
    "ChainVerifier",
    "CheckpointError",
    "ExportError",
    "PublicKey",
    "Report",
    "RestoreMarker",
    "SignedCheckpoint",
    "accepted_restores",
    "csv_row",
    "failure_line",
    "load_checkpoints",
    "load_restores",
    "parse_exported_at",
    "sidecar",
    "verify_export",
]

EXPORT_FORMAT = "strongroom-audit-export/1"
MAX_LINE = 1024 * 1024
CSV_COLUMNS: tuple[str, ...] = (*FIELDS, "hash")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "'")


class ExportError(ValueError):
    """An export file that cannot be read as one; the message names the line."""


@dataclass
class Report:
    """What verification found; `ok` only when nothing is wrong."""

    events: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    head: str | None = None
    checkpoints: int = 0
    vouched_to: int | None = None
    bad_seq: int | None = None
    problem: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return self.problem is None

    def as_json(self) -> dict[str, Any]:
        """A JSON-able summary."""
        return {
            "ok": self.ok,
            "events": self.events,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "head": self.head,
            "checkpoints": self.checkpoints,
            "vouched_to": self.vouched_to,
            "bad_seq": self.bad_seq,
            "problem": self.problem,
            "notes": self.notes,
        }


class ChainVerifier:
    """Feed records in sequence order, then call finish().

    `as_of`: the records are meant to reach the broker's head as it was at that time (an export "up to
    now" says when in its header), so a checkpoint signed by then that vouches for more records than
    were fed means the tail was cut off. Checkpoints signed later may rightly reach further.
    `from_start`: the records are meant to start where the chain starts: at seq 1, or (after a prune)
    right after a signed checkpoint; anything else means the first records were deleted.
    """

    def __init__(
        self,
        public: PublicKey,
        checkpoints: Iterable[SignedCheckpoint] = (),
        *,
        as_of: str | None = None,
        from_start: bool = False,
    ) -> None:
        self.report = Report()
        self._as_of = as_of
        self._from_start = from_start
        unique = {(c.seq, c.checkpoint.time, c.checkpoint.head, c.signature): c for c in checkpoints}
        self._checkpoints = sorted(unique.values(), key=lambda c: (c.seq, c.checkpoint.time))
        self.report.checkpoints = len(self._checkpoints)
        self._by_seq = {c.seq: c.checkpoint.head for c in self._checkpoints}
        self._prev: str | None = None
        problem = series_problem(self._checkpoints, public)
        if problem is not None:
            self.fail(None, f"checkpoints rejected: {problem}")

    def fail(self, seq: int | None, problem: str) -> None:
        if self.report.problem is None:
            self.report.bad_seq = seq
            self.report.problem = problem

    def feed(self, record: Mapping[str, Any]) -> bool:
        """Check one record; False once a problem has been found (later records are not examined)."""
        if self.report.problem is not None:
            return False
        rep = self.report
        seq = record.get("seq")
        expected = None if rep.last_seq is None else rep.last_seq + 1
        prev_hash = record.get("prev_hash")
        if type(seq) is not int or type(prev_hash) is not str:
            return self._malformed(record, expected)
        if expected is None:
            rep.first_seq = seq
            if seq == 1:
                if prev_hash != GENESIS:
                    self.fail(1, "seq 1: prev_hash is not the genesis value")
                    return False
            elif seq - 1 in self._by_seq:
                if prev_hash != self._by_seq[seq - 1]:
                    self.fail(
                        seq, f"seq {seq}: prev_hash does not match the signed checkpoint at seq {seq - 1}"
                    )
                    return False
            elif self._from_start:
                below = [c.seq for c in self._checkpoints if c.seq < seq]
                gone = (max(below) if below else 0) + 1
                self.fail(
                    gone,
                    f"seq {gone}..{seq - 1}: missing at the start of the chain (no signed checkpoint at seq "
                    f"{seq - 1} anchors a prune); the first records were deleted",
                )
                return False
            else:
                rep.notes.append(
                    f"the records start at seq {seq} with no checkpoint at seq {seq - 1}: they are vouched for "
                    "only up to the newest checkpoint they reach"
                )
        elif seq > expected:
            self.fail(
                expected, f"seq {expected}: missing (the next record is seq {seq}); a record was deleted"
            )
            return False
        elif seq < expected:
            self.fail(seq, f"seq {seq}: out of order or duplicated (after seq {expected - 1})")
            return False
        elif prev_hash != self._prev:
            self.fail(seq, f"seq {seq}: prev_hash does not match the hash of seq {seq - 1}")
            return False
        try:
            computed = record_hash(record)
        except (TypeError, ValueError):
            return self._malformed(record, expected)
        if record.get("hash") != computed:
            # Full type checks only here, off the common path: they explain a mismatch, the hash decides.
            try:
                check_record(record)
            except RecordError as exc:
                self.fail(seq, f"seq {seq}: record is malformed: {exc}")
                return False
            self.fail(seq, f"seq {seq}: the record does not match its hash (it was modified)")
            return False
        signed = self._by_seq.get(seq)
        if signed is not None:
            if signed != computed:
                self.fail(seq, f"seq {seq}: the hash differs from the signed checkpoint at seq {seq}")
                return False
            rep.vouched_to = seq
        self._prev = computed
        rep.last_seq, rep.head = seq, computed
        rep.events += 1
        return True

    def _malformed(self, record: Mapping[str, Any], expected: int | None) -> bool:
        seq = record.get("seq")
        try:
            check_record(record)
            problem = "not JSON-serialisable"
        except RecordError as exc:
            problem = str(exc)
        if type(seq) is int:
            self.fail(seq, f"seq {seq}: record is malformed: {problem}")
        elif expected is not None:
            self.fail(
                expected, f"seq {expected}: the record after seq {expected - 1} is malformed: {problem}"
            )
        else:
            self.fail(None, f"the first record is malformed: {problem}")
        return False

    def finish(self) -> Report:
        """Final checks (a cut-off tail, what the checkpoints vouch for) and the report."""
        rep = self.report
        last = rep.last_seq or 0
        beyond = [c for c in self._checkpoints if c.seq > last]
        if rep.problem is None and beyond and self._as_of is not None:
            # Checkpoint times are fixed-format UTC strings, so text order is time order.
            earlier = [c for c in beyond if c.checkpoint.time <= self._as_of]
            if earlier:
                cut = max(earlier, key=lambda c: c.seq)
                self.fail(
                    last + 1,
                    f"truncated: the checkpoint signed at {cut.checkpoint.time} vouches for seq {cut.seq}, "
                    f"but the records end at seq {last}",
                )
            else:
                rep.notes.append(
                    f"{len(beyond)} checkpoint(s) were signed after this export and reach beyond it"
                )
        if rep.problem is None and self._checkpoints:
            if rep.last_seq is not None and (rep.vouched_to or 0) < rep.last_seq:
                start = (rep.vouched_to or rep.first_seq or 1) + (1 if rep.vouched_to else 0)
                rep.notes.append(
                    f"seq {start}..{rep.last_seq} come after the newest checkpoint they reach: the chain is "
                    "intact, but no signature vouches for them yet"
                )
        elif rep.problem is None and rep.events:
            rep.notes.append(
                "no checkpoints given: the chain is consistent, but nothing signed vouches for it"
            )
        return rep


# ---- reading exports ------------------------------------------------------------------------------


@dataclass
class ExportParts:
    """The non-record parts of an export: header, checkpoints and end line."""

    header: dict[str, Any] | None = None
    checkpoints: list[SignedCheckpoint] = field(default_factory=list)
    end: dict[str, Any] | None = None


def _lines(handle: IO[bytes]) -> Iterator[tuple[int, dict[str, Any]]]:
    for number, raw in enumerate(iter(lambda: handle.readline(MAX_LINE + 1), b""), start=1):
        if len(raw) > MAX_LINE:
            raise ExportError(f"line {number}: longer than 1 MiB")
        if not raw.strip():
            continue
        try:
            item = json.loads(raw)
        except ValueError:
            raise ExportError(f"line {number}: not JSON") from None
        if not isinstance(item, dict):
            raise ExportError(f"line {number}: not a JSON object")
        yield number, item


def read_parts(path: Path) -> ExportParts:
    """Header, checkpoints and end line of a JSON-lines export or checkpoints sidecar (one pass)."""
    parts = ExportParts()
    with path.open("rb") as handle:
        for number, item in _lines(handle):
            if "export" in item and isinstance(item["export"], dict):
                parts.header = item["export"]
            elif "checkpoint" in item:
                try:
                    parts.checkpoints.append(parse(item))
                except CheckpointError as exc:
                    raise ExportError(f"line {number}: {exc}") from None
            elif "end" in item and isinstance(item["end"], dict):
                parts.end = item["end"]
    return parts


def jsonl_records(path: Path) -> Iterator[dict[str, Any]]:
    """The records of a JSON-lines export, in file order."""
    with path.open("rb") as handle:
        for number, item in _lines(handle):
            if "event" in item:
                record = item["event"]
                if not isinstance(record, dict):
                    raise ExportError(f"line {number}: event is not an object")
                yield record


def csv_escape(cell: str) -> str:
    """Defuse spreadsheet formulas reversibly: one leading ' before a risky first character."""
    return "'" + cell if cell.startswith(_FORMULA_START) else cell


def _csv_unescape(cell: str) -> str:
    return cell[1:] if cell.startswith("'") else cell


def csv_row(record: Mapping[str, Any]) -> list[str]:
    """A record as CSV cells (null: empty cell)."""
    cells = []
    for key in CSV_COLUMNS:
        value = record.get(key)
        if value is None:
            cells.append("")
        elif key in JSON_FIELDS:
            cells.append(csv_escape(canonical_json(value).decode("ascii")))
        else:
            cells.append(csv_escape(str(value)))
    return cells


def csv_records(path: Path) -> Iterator[dict[str, Any]]:
    """The records of a CSV export, converted back to their JSON types."""
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None or tuple(header) != CSV_COLUMNS:
            raise ExportError("line 1: the CSV header is not the audit export's columns")
        for number, row in enumerate(reader, start=2):
            if len(row) != len(CSV_COLUMNS):
                raise ExportError(f"line {number}: expected {len(CSV_COLUMNS)} cells, got {len(row)}")
            record: dict[str, Any] = {}
            for key, raw in zip(CSV_COLUMNS, row, strict=True):
                if raw == "":
                    continue
                cell = _csv_unescape(raw)
                try:
                    if key in INT_FIELDS:
                        record[key] = int(cell)
                    elif key in JSON_FIELDS:
                        record[key] = json.loads(cell)
                    else:
                        record[key] = cell
                except ValueError:
                    raise ExportError(f"line {number}: {key} is not well formed") from None
            yield record


def load_checkpoints(path: Path) -> list[SignedCheckpoint]:
    """Checkpoints from a directory of documents, a JSON-lines file of them, or one document."""
    if path.is_dir():
        found = []
        for item in sorted(path.glob("*.json")):
            try:
                found.append(parse(item.read_bytes()[: 2 * 4096]))
            except CheckpointError as exc:
                raise ExportError(f"{item.name}: {exc}") from None
        return found
    return read_parts(path).checkpoints


def load_restores(path: Path) -> list[RestoreMarker]:
    """The accepted-restore markers (`restore-*.marker`) of a checkpoint directory; none for a file."""
    if not path.is_dir():
        return []
    found = []
    for item in sorted(path.glob("restore-*.marker")):
        try:
            found.append(parse_restore(item.read_bytes()[:16384]))
        except CheckpointError as exc:
            raise ExportError(f"{item.name}: {exc}") from None
    return found


def sidecar(path: Path) -> Path:
    """Where a CSV export's header, checkpoints and end line live."""
    return path.with_name(path.name + ".checkpoints.jsonl")


def parse_exported_at(text: str) -> str:
    """An ISO 8601 time (naive means UTC) in the checkpoints' own format; ValueError when it is not one."""
    from datetime import UTC, datetime

    moment = datetime.fromisoformat(text) if len(text) <= 40 else None
    if moment is None:
        raise ValueError("too long for a time")
    return format_time(moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment)


def failure_line(report: Report) -> str:
    """The one line that says what failed: `FAILED at seq N: …`, or `FAILED: …` when no record is at fault."""
    problem = report.problem or "unknown problem"
    if report.bad_seq is None:
        return f"FAILED: {problem}"
    return f"FAILED at seq {report.bad_seq}: {problem.removeprefix(f'seq {report.bad_seq}: ')}"


NOTHING_TRUSTED = (
    "nothing outside the file was trusted (no --checkpoints): the file is consistent with itself, but a "
    "file whose tail was cut, or whose history was rewritten with its checkpoints left out, is consistent "
    "too; give the checkpoint directory kept outside the broker to rule that out"
)


def verify_export(
    path: Path,
    public: PublicKey,
    *,
    trusted: Iterable[SignedCheckpoint] = (),
    partial: bool = False,
    exported_at: str | None = None,
) -> Report:
    """Verify a JSON-lines or CSV export file against its own checkpoints and the `trusted` ones.

    A trusted checkpoint that vouches for a seq beyond the file's last record fails verification (the
    tail was cut), whatever the file's header or end line say, except when the auditor says, from their
    own records, that the file is a stretch of the chain (`partial`) or when it was made (`exported_at`,
    an ISO 8601 UTC time as checkpoints carry it: checkpoints signed after it may reach further).
    A checkpoint inside the file beyond its last record always fails (an export holds only checkpoints
    up to its last record). Without trusted checkpoints the report carries NOTHING_TRUSTED as a note.
    """
    trusted = list(trusted)
    is_csv = path.suffix.lower() == ".csv"
    parts_path = sidecar(path) if is_csv else path
    parts = read_parts(parts_path) if parts_path.exists() else ExportParts()
    header = parts.header or {}
    if header and header.get("format") != EXPORT_FORMAT:
        raise ExportError(f"the export's format is not {EXPORT_FORMAT!r}")
    # The header only ever makes the check stricter (from_start, the end line); the tail is judged below
    # from signed checkpoints alone.
    verifier = ChainVerifier(
        public, [*parts.checkpoints, *trusted], from_start=bool(header) and header.get("since") is None
    )
    records = csv_records(path) if is_csv else jsonl_records(path)
    for record in records:
        if not verifier.feed(record):
            break
    report = verifier.finish()
    last = report.last_seq or 0
    if report.ok:
        _check_tail(verifier, parts.checkpoints, trusted, last, partial=partial, exported_at=exported_at)
    if report.ok and header:
        if parts.end is None:
            verifier.fail(last + 1, "the export has no end line: the download was cut short")
        elif parts.end.get("events") != report.events:
            verifier.fail(
                last + 1,
                f"the export's end line counts {parts.end.get('events')} records but it holds {report.events}",
            )
    if report.ok and not header:
        report.notes.append(
            "the export has no header or end line: only its records and checkpoints were checked"
        )
    if not trusted:
        report.notes.append(NOTHING_TRUSTED)
    return report


def _check_tail(
    verifier: ChainVerifier,
    own: list[SignedCheckpoint],
    trusted: list[SignedCheckpoint],
    last: int,
    *,
    partial: bool,
    exported_at: str | None,
) -> None:
    """Fail when a signed checkpoint vouches for records the file does not hold (see verify_export)."""
    report = verifier.report
    inside = [c for c in own if c.seq > last]
    if inside:
        cut = max(inside, key=lambda c: c.seq)
        verifier.fail(
            last + 1,
            f"truncated: the checkpoint in the file signed at {cut.checkpoint.time} vouches for seq "
            f"{cut.seq}, but the records end at seq {last}",
        )
        return
    beyond = [c for c in trusted if c.seq > last]
    if not beyond:
        return
    if partial:
        report.notes.append(
            f"the trusted checkpoints reach seq {max(c.seq for c in beyond)}; this file stops at seq {last} "
            "(--partial: it holds a stretch of the chain, not its end)"
        )
        return
    # Checkpoint times are fixed-format UTC strings, so text order is time order.
    later = [c for c in beyond if exported_at is not None and c.checkpoint.time > exported_at]
    earlier = [c for c in beyond if c not in later]
    if earlier:
        cut = max(earlier, key=lambda c: c.seq)
        verifier.fail(
            last + 1,
            f"truncated: the trusted checkpoint signed at {cut.checkpoint.time} vouches for seq {cut.seq}, "
            f"but the records end at seq {last} (whatever the file's header says; if the file is a stretch "
            "of the chain by your own request, say --partial; if it was made before that checkpoint, say "
            "when with --exported-at)",
        )
        return
    report.notes.append(
        f"{len(later)} trusted checkpoint(s) signed after --exported-at {exported_at} reach beyond this file"
    )
