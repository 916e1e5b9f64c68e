"""Catalogue 61, header-independent truncation: a real export (SQLite and PostgreSQL) whose tail is cut,
with its header and end line edited or removed the way a forger would. `strongroom audit verify` with
the trusted checkpoint directory fails whenever that directory holds a checkpoint past the file's last
record, whatever the file says; the auditor's own `--partial` and `--exported-at` are what relax it,
and without `--checkpoints` the verdict says nothing outside the file was trusted."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from broker.audit.canonical import canonical_json
from tests.integration.audit.conftest import broker, cli_verify, lines

Lines = list[dict[str, Any]]


@dataclass
class Cut:
    """An export up to now whose records after `keep` a forger dropped, and what verify needs."""

    items: Lines
    keep: int
    checkpoint_seq: int
    checkpoint_time: str
    public_key: Path
    directory: Path
    tmp: Path

    def write(self, edit: Callable[[Lines], Lines] = lambda x: x) -> Path:
        """The cut export: records and the file's checkpoints past `keep` gone, the end line fixed, then `edit`."""
        kept: Lines = []
        for item in self.items:
            if "event" in item and item["event"]["seq"] > self.keep:
                continue
            if "checkpoint" in item and item["checkpoint"]["seq"] > self.keep:
                continue
            if "end" in item:
                item = {"end": {"events": sum(1 for i in kept if "event" in i)}}
            kept.append(item)
        path = self.tmp / "cut.jsonl"
        path.write_bytes(b"".join(canonical_json(i) + b"\n" for i in edit(kept)))
        return path

    def verify(self, path: Path, *extra: str, trusted: bool = True) -> Any:
        directories = (self.directory,) if trusted else ()
        return cli_verify(path, self.public_key, *directories, extra=extra)


@pytest.fixture
def cut(db_url: str, tmp_path: Path) -> Iterator[Cut]:
    """Traffic, a checkpoint at C, more traffic; the export up to now; the forger keeps records up to C - 3."""
    with broker(db_url, tmp_path) as api:
        api.traffic(4)
        signed = api.checkpoint()
        assert signed is not None
        api.traffic(2)
        items = lines(api.export())
        assert items[0]["export"]["to_head"] is True and items[-1]["end"]["events"] > signed.seq
        yield Cut(
            items,
            signed.seq - 3,
            signed.seq,
            signed.checkpoint.time,
            api.public_key_file(),
            api.checkpoint_dir,
            tmp_path,
        )


def header(edit: Callable[[dict[str, Any]], None]) -> Callable[[Lines], Lines]:
    def apply(items: Lines) -> Lines:
        edit(items[0]["export"])
        return items

    return apply


def assert_truncated(cut: Cut, done: Any) -> None:
    assert done.exit_code == 1, done.output
    assert f"FAILED at seq {cut.keep + 1}: truncated: the trusted checkpoint" in done.output
    assert f"vouches for seq {cut.checkpoint_seq}, but the records end at seq {cut.keep}" in done.output


def test_the_cut_alone_fails(cut: Cut) -> None:
    assert_truncated(cut, cut.verify(cut.write()))


def test_to_head_false_does_not_hide_the_cut(cut: Cut) -> None:
    path = cut.write(header(lambda h: h.update(to_head=False)))
    assert_truncated(cut, cut.verify(path))


def test_a_backdated_generated_at_does_not_hide_the_cut(cut: Cut) -> None:
    path = cut.write(header(lambda h: h.update(generated_at="2000-01-01T00:00:00.000000Z")))
    assert_truncated(cut, cut.verify(path))


def test_an_until_before_the_checkpoint_does_not_hide_the_cut(cut: Cut) -> None:
    path = cut.write(header(lambda h: h.update(until="2000-01-01T00:00:00.000000Z", to_head=False)))
    assert_truncated(cut, cut.verify(path))


def test_removing_header_and_end_line_does_not_hide_the_cut(cut: Cut) -> None:
    path = cut.write(lambda items: [i for i in items if "export" not in i and "end" not in i])
    assert_truncated(cut, cut.verify(path))


def test_a_checkpoint_left_in_the_file_past_the_cut_fails_even_untrusted(cut: Cut) -> None:
    dropped = [i for i in cut.items if "event" not in i or i["event"]["seq"] <= cut.keep]
    own = [i for i in dropped if "checkpoint" in i]
    assert any(i["checkpoint"]["seq"] == cut.checkpoint_seq for i in own)
    path = cut.tmp / "sloppy.jsonl"
    path.write_bytes(
        b"".join(canonical_json(i) + b"\n" for i in dropped if "end" not in i and "export" not in i)
    )
    done = cut.verify(path, trusted=False)
    assert done.exit_code == 1 and f"FAILED at seq {cut.keep + 1}: truncated: the checkpoint in the file" in (
        done.output
    )


def test_the_auditors_own_exported_at_keeps_the_cut_failing(cut: Cut) -> None:
    # The export was made after the checkpoint was signed: saying so on the command line changes nothing.
    assert_truncated(cut, cut.verify(cut.write(), "--exported-at", "2999-01-01T00:00:00Z"))
    # Said to be made before it, the checkpoint may reach further: a note, not a failure.
    done = cut.verify(cut.write(), "--exported-at", "2000-01-01")
    assert done.exit_code == 0 and "signed after --exported-at" in done.output, done.output


def test_partial_on_the_command_line_notes_instead_of_failing(cut: Cut) -> None:
    done = cut.verify(cut.write(), "--partial")
    assert done.exit_code == 0, done.output
    assert f"this file stops at seq {cut.keep} (--partial" in done.output


def test_without_checkpoints_the_verdict_says_nothing_outside_was_trusted(cut: Cut) -> None:
    done = cut.verify(cut.write(), trusted=False)
    assert done.exit_code == 0, done.output
    assert "note: nothing outside the file was trusted (no --checkpoints)" in done.output
    done = cut.verify(cut.write(), "--json", trusted=False)
    assert any("nothing outside the file was trusted" in n for n in json.loads(done.output)["notes"])


def test_failures_with_no_record_at_fault_name_what_failed(cut: Cut) -> None:
    path = cut.write()
    forged = cut.tmp / "forged-checkpoints"
    forged.mkdir()
    document = json.loads((cut.directory / f"checkpoint-{cut.checkpoint_seq:020d}.json").read_text())
    document["checkpoint"]["seq"] += 1  # the signature no longer matches
    (forged / "x.json").write_text(json.dumps(document))
    done = cli_verify(path, cut.public_key, forged)
    assert done.exit_code == 1 and "seq None" not in done.output
    assert done.output.startswith("FAILED: checkpoints rejected: "), done.output
