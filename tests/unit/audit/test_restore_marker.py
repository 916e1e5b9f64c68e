"""Accepted-restore markers (broker/audit/restore.py): signed, strict to parse, and they set aside exactly
the checkpoints of the branch a restore replaced, no more, and only the one they name."""

from __future__ import annotations

import json
from typing import Any

import pytest

from broker.audit.checkpoint import CheckpointError, SignedCheckpoint, Signer, generate_private_pem
from broker.audit.restore import RestoreMarker, accepted, parse, sign, verifies

SIGNER = Signer.from_pem(generate_private_pem())


def t(minute: int) -> str:
    return f"2026-12-04T10:{minute:02d}:00.000000Z"


def cp(seq: int, minute: int, head: str | None = None) -> SignedCheckpoint:
    return SIGNER.sign(seq=seq, head=head or f"{seq:064x}", time=t(minute))


def marker(signer: Signer = SIGNER, **over: Any) -> RestoreMarker:
    fields: dict[str, Any] = {
        "seq": 13,
        "head": "a" * 64,
        "restored_seq": 12,
        "superseded_seq": 20,
        "superseded_head": f"{20:064x}",
        "superseded_time": t(3),
        "time": t(4),
        "manifest": "sha256:" + "b" * 64,
        "accepted_by": "ops@host",
        "reason": "disk lost",
    }
    return sign(signer, **{**fields, **over})


def test_a_marker_round_trips_and_verifies() -> None:
    m = marker()
    again = parse(m.document())
    assert again == m and verifies(SIGNER.public, again)
    assert again.restore.lost() == "seq 13..20"


def test_a_changed_field_or_another_key_does_not_verify() -> None:
    doc = json.loads(marker().document())
    doc["restore"]["restored_seq"] = 5
    assert not verifies(SIGNER.public, parse(json.dumps(doc)))
    other = Signer.from_pem(generate_private_pem())
    assert not verifies(SIGNER.public, marker(other))


def test_it_sets_aside_the_replaced_branch_only() -> None:
    old = [cp(5, 1), cp(10, 2), cp(16, 3, head="c" * 64), cp(20, 3)]
    after = cp(15, 5)  # the continued chain's first checkpoint, signed after the acceptance
    kept, problem = accepted([*old, after], [marker()], SIGNER.public)
    assert problem is None
    assert [c.seq for c in kept] == [5, 10, 15]


def test_without_a_marker_nothing_is_set_aside() -> None:
    kept, problem = accepted([cp(5, 1), cp(20, 3)], [], SIGNER.public)
    assert problem is None and [c.seq for c in kept] == [5, 20]


def test_a_marker_does_not_accept_a_checkpoint_past_the_one_it_names() -> None:
    _, problem = accepted([cp(5, 1), cp(20, 3), cp(25, 3)], [marker()], SIGNER.public)
    assert problem is not None and "seq 25" in problem and "not the one it accepted" in problem


def test_a_marker_does_not_accept_another_head_at_the_seq_it_names() -> None:
    _, problem = accepted([cp(5, 1), cp(20, 3, head="d" * 64)], [marker()], SIGNER.public)
    assert problem is not None and "seq 20" in problem


def test_a_marker_signed_by_another_key_is_refused() -> None:
    other = Signer.from_pem(generate_private_pem())
    kept, problem = accepted([cp(5, 1), cp(20, 3)], [marker(other)], SIGNER.public)
    assert problem is not None and "not valid for key" in problem
    assert [c.seq for c in kept] == [5, 20]


def test_checkpoints_signed_after_the_marker_are_never_set_aside() -> None:
    kept, problem = accepted([cp(5, 1), cp(20, 3), cp(30, 9)], [marker()], SIGNER.public)
    assert problem is None and [c.seq for c in kept] == [5, 30]


@pytest.mark.parametrize(
    ("edit", "says"),
    [
        (lambda d: d.update(extra=1), "exactly `restore` and `signature`"),
        (lambda d: d["restore"].update(format="x"), "restore.format"),
        (lambda d: d["restore"].update(seq=-1), "restore.seq"),
        (lambda d: d["restore"].update(head="zz"), "restore.head"),
        (lambda d: d["restore"].update(time="yesterday"), "restore.time"),
        (lambda d: d["restore"].update(reason="x" * 501), "restore.reason"),
        (lambda d: d["restore"].update(reason="ok\x1b[2J"), "restore.reason: .* printable"),
        (lambda d: d["restore"].update(accepted_by="a\nb"), "restore.accepted_by"),
        (lambda d: d.update(signature="AAAA"), "signature"),
    ],
)
def test_parse_is_strict(edit: Any, says: str) -> None:
    doc = json.loads(marker().document())
    edit(doc)
    with pytest.raises(CheckpointError, match=says):
        parse(json.dumps(doc))


def test_parse_is_bounded() -> None:
    with pytest.raises(CheckpointError, match="larger than 8 KiB"):
        parse(b"{" + b" " * 9000 + b"}")
