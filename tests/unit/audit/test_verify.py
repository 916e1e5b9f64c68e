"""The pure offline verifier: every tampering names the first bad sequence number (B10, B11, B13), on
records in memory, in JSON-lines exports and in CSV exports. The database versions are in
tests/integration/audit/test_tamper.py."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.audit.canonical import GENESIS, canonical_json, line, record_hash
from broker.audit.checkpoint import SignedCheckpoint, Signer, generate_private_pem
from broker.audit.verify import (
    CSV_COLUMNS,
    EXPORT_FORMAT,
    ChainVerifier,
    ExportError,
    csv_row,
    sidecar,
    verify_export,
)

SIGNER = Signer.from_pem(generate_private_pem())


def t(i: int) -> str:
    return f"2026-11-26T10:{i // 60:02d}:{i % 60:02d}.000000Z"


def chain(n: int, *, start: int = 1, prev: str = GENESIS) -> list[dict[str, Any]]:
    out = []
    for seq in range(start, start + n):
        rec = {
            "seq": seq,
            "prev_hash": prev,
            "occurred_at": t(seq),
            "request_id": f"r{seq}",
            "actor_type": "user",
            "actor_name": "alice",
            "method": "GET",
            "route": f"/v1/x/{seq}",
            "action": "secret.read",
            "outcome": "ok",
            "status": 200,
        }
        rec["hash"] = record_hash(rec)
        prev = rec["hash"]
        out.append(rec)
    return out


def cp(
    records: list[dict[str, Any]], seq: int, *, time: str | None = None, signer: Signer = SIGNER
) -> SignedCheckpoint:
    rec = next(r for r in records if r["seq"] == seq)
    return signer.sign(seq=seq, head=rec["hash"], time=time or t(seq))


def run(
    records: list[dict[str, Any]],
    checkpoints: list[SignedCheckpoint] | None = None,
    as_of: str | None = None,
    from_start: bool = False,
) -> Any:
    v = ChainVerifier(SIGNER.public, checkpoints or [], as_of=as_of, from_start=from_start)
    for r in records:
        if not v.feed(r):
            break
    return v.finish()


def test_intact_chain_is_ok_and_vouched() -> None:
    recs = chain(20)
    report = run(recs, [cp(recs, 10), cp(recs, 20)], as_of=t(30))
    assert report.ok, report.problem
    assert (report.events, report.first_seq, report.last_seq, report.vouched_to) == (20, 1, 20, 20)
    assert report.head == recs[-1]["hash"]


def test_modified_record_is_named() -> None:
    recs = chain(10)
    recs[4]["actor_name"] = "mallory"
    report = run(recs)
    assert (report.ok, report.bad_seq) == (False, 5)
    assert "modified" in (report.problem or "")


def test_modified_record_with_recomputed_hash_breaks_the_next_link() -> None:
    recs = chain(10)
    recs[4]["actor_name"] = "mallory"
    recs[4]["hash"] = record_hash(recs[4])
    report = run(recs)
    assert report.bad_seq == 6 and "prev_hash" in (report.problem or "")


def test_rewritten_tail_is_caught_by_a_checkpoint() -> None:
    """An attacker who rewrites everything after a change and recomputes every hash is caught by the
    signed head of the first checkpoint after the change."""
    recs = chain(10)
    signed = cp(recs, 8)
    recs[4]["actor_name"] = "mallory"
    prev = recs[3]["hash"]
    for r in recs[4:]:
        r["prev_hash"] = prev
        r["hash"] = record_hash(r)
        prev = r["hash"]
    assert run(recs).ok  # internally consistent ...
    report = run(recs, [signed])
    assert report.bad_seq == 8 and "signed checkpoint" in (
        report.problem or ""
    )  # ... but not what was signed


def test_deleted_record_is_named() -> None:
    recs = chain(10)
    del recs[6]
    report = run(recs)
    assert report.bad_seq == 7 and "missing" in (report.problem or "")


def test_swapped_records_are_named() -> None:
    recs = chain(10)
    recs[3], recs[4] = recs[4], recs[3]
    report = run(recs)
    assert report.bad_seq == 4


def test_swapped_contents_keeping_seq_are_named() -> None:
    recs = chain(10)
    a, b = recs[3], recs[4]
    for key in ("request_id", "route", "occurred_at"):
        a[key], b[key] = b[key], a[key]
    report = run(recs)
    assert report.bad_seq == 4 and "modified" in (report.problem or "")


def test_inserted_record_is_named() -> None:
    recs = chain(10)
    forged = copy.deepcopy(recs[4])
    forged["route"] = "/v1/forged"
    for r in recs[4:]:
        r["seq"] += 1
    recs.insert(4, forged)
    report = run(recs)
    assert report.bad_seq == 5
    # Made consistent with its predecessor, the insert is found at the record it displaced.
    forged["hash"] = record_hash(forged)
    report = run(recs)
    assert report.bad_seq == 6


def test_truncated_tail_is_named_against_a_checkpoint() -> None:
    recs = chain(20)
    signed = [cp(recs, 10), cp(recs, 20)]
    report = run(recs[:15], signed, as_of=t(40))
    assert report.bad_seq == 16 and "truncated" in (report.problem or "")
    # A checkpoint signed after the export's moment may rightly reach beyond it.
    report = run(recs[:15], [cp(recs, 10), cp(recs, 20, time=t(50))], as_of=t(40))
    assert report.ok and any("after this export" in n for n in report.notes)
    # A bounded export (not "up to now") cannot be truncated.
    assert run(recs[:15], signed).ok


def test_forged_checkpoints_are_rejected() -> None:
    recs = chain(10)
    mallory = Signer.from_pem(generate_private_pem())
    report = run(recs, [cp(recs, 5, signer=mallory)])
    assert not report.ok and "checkpoints rejected" in (report.problem or "")
    report = run(recs, [cp(recs, 5, time=t(20)), cp(recs, 8, time=t(10))])
    assert not report.ok and "ran backwards" in (report.problem or "")


def test_start_anchored_by_a_checkpoint_after_a_prune() -> None:
    recs = chain(20)
    anchor = cp(recs, 10)
    report = run(recs[10:], [anchor], from_start=True)
    assert report.ok and report.first_seq == 11
    assert not any("no checkpoint" in n for n in report.notes)
    # Without the anchor the deleted start is named (from the checkpoint before it, or seq 1).
    assert run(recs[12:], [anchor], from_start=True).bad_seq == 11
    assert run(recs[12:], [], from_start=True).bad_seq == 1
    tail = copy.deepcopy(recs[10:])
    tail[0]["prev_hash"] = "1" * 64
    tail[0]["hash"] = record_hash(tail[0])
    report = run(tail, [anchor])
    assert report.bad_seq == 11
    unanchored = run(recs[10:])
    assert unanchored.ok and "no checkpoint" in unanchored.notes[0]


def test_malformed_record_is_named() -> None:
    recs = chain(5)
    recs[2]["status"] = "200"
    report = run(recs)
    assert report.bad_seq == 3 and "malformed" in (report.problem or "")


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(min_value=2, max_value=30),
    data=st.data(),
    kind=st.sampled_from(["modify", "delete", "swap", "insert", "truncate"]),
)
def test_any_single_tampering_names_the_right_seq(n: int, data: st.DataObject, kind: str) -> None:
    recs = chain(n)
    signed = [cp(recs, n)]
    i = data.draw(st.integers(min_value=0, max_value=n - 2))
    expected = i + 1
    if kind == "modify":
        recs[i]["route"] += "x"
    elif kind == "delete":
        del recs[i]
    elif kind == "swap":
        recs[i], recs[i + 1] = recs[i + 1], recs[i]
    elif kind == "insert":
        forged = {**recs[i], "route": "/forged"}
        for r in recs[i:]:
            r["seq"] += 1
        recs.insert(i, forged)
    else:
        del recs[i + 1 :]
        expected = i + 2
    report = run(recs, signed, as_of=t(10_000), from_start=True)
    assert not report.ok
    assert report.bad_seq == expected, (kind, i, report.problem)


# ---- files --------------------------------------------------------------------------------------


def write_jsonl(
    path: Path,
    recs: list[dict[str, Any]],
    checkpoints: list[SignedCheckpoint],
    *,
    to_head: bool,
    end: bool = True,
) -> None:
    header = {
        "format": EXPORT_FORMAT,
        "generated_at": t(10_000),
        "to_head": to_head,
        "since": None,
        "from_seq": recs[0]["seq"] if recs else 1,
        "to_seq": recs[-1]["seq"] if recs else 0,
    }
    with path.open("wb") as f:
        f.write(canonical_json({"export": header}) + b"\n")
        for c in checkpoints:
            f.write(c.document().encode() + b"\n")
        for r in recs:
            f.write(line({"event": r}))
        if end:
            f.write(canonical_json({"end": {"events": len(recs)}}) + b"\n")


def test_jsonl_export_file(tmp_path: Path) -> None:
    recs = chain(12)
    path = tmp_path / "export.jsonl"
    write_jsonl(path, recs, [cp(recs, 6)], to_head=True)
    assert verify_export(path, SIGNER.public).ok
    # an external checkpoint (the auditor's own copy) proves the export was cut short
    write_jsonl(path, recs[:9], [cp(recs, 6)], to_head=True)
    report = verify_export(path, SIGNER.public, trusted=[cp(recs, 12)])
    assert report.bad_seq == 10 and "truncated" in (report.problem or "")
    # a download cut short
    write_jsonl(path, recs, [], to_head=True, end=False)
    report = verify_export(path, SIGNER.public)
    assert not report.ok and "no end line" in (report.problem or "")


def test_csv_export_round_trips_and_detects_tampering(tmp_path: Path) -> None:
    import csv

    recs = chain(8)
    recs[2]["reason"] = '=HYPERLINK("http://evil")'  # a formula must not run in a spreadsheet
    recs[2]["user_agent"] = 'line one\nline two, with "quotes"'
    recs[2]["scopes"] = [{"project": "*", "environments": "*", "actions": ["audit"]}]
    prev = GENESIS
    for r in recs:
        r["prev_hash"] = prev
        r["hash"] = record_hash({k: v for k, v in r.items() if k != "hash"})
        prev = r["hash"]
    path = tmp_path / "export.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(CSV_COLUMNS)
        for r in recs:
            w.writerow(csv_row(r))
    write_jsonl(sidecar(path), [], [cp(recs, 8)], to_head=True, end=False)
    with sidecar(path).open("ab") as f:
        f.write(canonical_json({"end": {"events": 8}}) + b"\n")
    assert "'=HYPERLINK" in path.read_text()
    report = verify_export(path, SIGNER.public)
    assert report.ok, report.problem
    assert report.vouched_to == 8
    text = path.read_text().replace("alice", "mallory", 1)
    path.write_text(text)
    assert verify_export(path, SIGNER.public).bad_seq == 1


def test_unreadable_exports_say_which_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"export": {"format": "strongroom-audit-export/1"}}\nnot json\n')
    with pytest.raises(ExportError, match="line 2"):
        verify_export(path, SIGNER.public)
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("a,b\n")
    with pytest.raises(ExportError, match="header"):
        verify_export(bad_csv, SIGNER.public)
    assert json.loads(canonical_json({"a": 1})) == {"a": 1}


def test_every_failure_line_names_what_failed() -> None:
    from broker.audit.verify import failure_line

    recs = chain(3)
    bad = dict(recs[0], seq="one")
    report = run([bad])
    assert report.bad_seq is None and failure_line(report).startswith("FAILED: the first record is malformed")
    report = run([recs[0], dict(recs[1], seq=None)])
    assert failure_line(report).startswith("FAILED at seq 2: the record after seq 1 is malformed")
    report = run(recs[:1] + recs[2:])
    assert failure_line(report) == "FAILED at seq 2: missing (the next record is seq 3); a record was deleted"
    forged = cp(recs, 2, signer=Signer.from_pem(generate_private_pem()))
    report = run(recs, [forged])
    assert report.bad_seq is None and failure_line(report).startswith("FAILED: checkpoints rejected: ")
