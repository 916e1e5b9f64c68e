"""Accepted restores: a signed marker that lets the checkpoint series continue on a restored chain.

A database restored from a backup is behind the checkpoints signed after the backup; the start-up check
refuses it. `strongroom-server audit accept-restore` records an audit event and signs a marker, kept in
the checkpoint directory beside the checkpoints (file `restore-<seq>.marker`, one line of canonical JSON):
    {"restore": {"format": "strongroom-restore/1", "seq": 13, "head": "<64 hex>", "restored_seq": 12,
                 "superseded_seq": 20, "superseded_head": "<64 hex>", "superseded_time": "...Z",
                 "time": "...Z", "manifest": "sha256:<64 hex>", "accepted_by": "...", "reason": "...",
                 "key_id": "ed25519:<32 hex>"},
     "signature": "<base64 of the Ed25519 signature over canonical(restore)>"}
`seq`/`head` is the acceptance event itself; `restored_seq` the restored chain's head before it. The
marker supersedes exactly the checkpoints signed before it (`time`) that reach past `restored_seq`, and
only when the newest of them is the one it names (`superseded_seq`, `superseded_head`): a later rollback,
or a directory holding other checkpoints than the ones accepted, is refused again. Pure: no I/O.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from broker.audit.canonical import canonical_json, is_hash, parse_time
from broker.audit.checkpoint import CheckpointError, PublicKey, SignedCheckpoint, Signer

FORMAT = "strongroom-restore/1"
MAX_DOCUMENT = 8192
MAX_REASON = 500


@dataclass(frozen=True, slots=True)
class Restore:
    """What a restore marker vouches for."""

    seq: int
    head: str
    restored_seq: int
    superseded_seq: int
    superseded_head: str
    superseded_time: str
    time: str
    manifest: str
    accepted_by: str
    reason: str
    key_id: str

    def body(self) -> dict[str, Any]:
        """The signed object."""
        return {"format": FORMAT, **asdict(self)}

    def lost(self) -> str:
        """The sequence numbers of the replaced branch that the restored chain does not hold."""
        return f"seq {self.restored_seq + 1}..{self.superseded_seq}"


@dataclass(frozen=True, slots=True)
class RestoreMarker:
    """A restore and its signature."""

    restore: Restore
    signature: bytes

    @property
    def seq(self) -> int:
        """The sequence number of the acceptance event."""
        return self.restore.seq

    def document(self) -> str:
        """The stored form: one line of canonical JSON."""
        doc = {"restore": self.restore.body(), "signature": base64.b64encode(self.signature).decode()}
        return canonical_json(doc).decode("ascii")

    def explain(self, where: str) -> str:
        """One sentence for `audit verify`: the gap, when and by whom it was accepted, and why."""
        r = self.restore
        return (
            f"restore accepted at {r.time} by {r.accepted_by} (reason: {r.reason}): the chain continues from "
            f"seq {r.restored_seq}, the backup's head (backup manifest {r.manifest}); {r.lost()} of the "
            f"branch it replaced were lost (the checkpoint at seq {r.superseded_seq} signed at "
            f"{r.superseded_time} is kept in {where}/superseded-{r.seq:020d}); events after it were not "
            "checkpointed and are unknown"
        )


def sign(signer: Signer, **fields: Any) -> RestoreMarker:
    """Sign a restore marker (fields as `Restore`'s, without key_id)."""
    restore = Restore(**fields, key_id=signer.public.key_id)
    return RestoreMarker(restore, signer.sign_bytes(canonical_json(restore.body())))


def parse(data: str | bytes) -> RestoreMarker:
    """Parse a marker document; bounded and strict (CheckpointError names what is wrong)."""
    if len(data) > MAX_DOCUMENT:
        raise CheckpointError("restore marker is larger than 8 KiB")
    try:
        doc = json.loads(data)
    except ValueError:
        raise CheckpointError("restore marker is not JSON") from None
    if not isinstance(doc, dict) or set(doc) != {"restore", "signature"}:
        raise CheckpointError("restore marker must have exactly `restore` and `signature`")
    body = doc["restore"]
    names = {"format", *Restore.__dataclass_fields__}
    if not isinstance(body, dict) or set(body) != names:
        raise CheckpointError(f"restore: must have exactly {', '.join(sorted(names))}")
    if body["format"] != FORMAT:
        raise CheckpointError(f"restore.format: must be {FORMAT!r}")
    for name in ("seq", "restored_seq", "superseded_seq"):
        value = body[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise CheckpointError(f"restore.{name}: must be a non-negative integer")
    if not (is_hash(body["head"]) and is_hash(body["superseded_head"])):
        raise CheckpointError("restore.head and superseded_head: must be 64 lower-case hex digits")
    for name in ("superseded_time", "time", "manifest", "accepted_by", "reason", "key_id"):
        if not isinstance(body[name], str) or len(body[name]) > MAX_REASON or not body[name].isprintable():
            # Printed to terminals by both verifies: no control characters, whoever wrote the file.
            raise CheckpointError(
                f"restore.{name}: must be a string of at most {MAX_REASON} printable characters"
            )
    try:
        parse_time(body["time"])
        parse_time(body["superseded_time"])
    except ValueError:
        raise CheckpointError("restore.time: must be YYYY-MM-DDTHH:MM:SS.ffffffZ") from None
    sig = doc["signature"]
    try:
        signature = base64.b64decode(sig, validate=True) if isinstance(sig, str) else b""
    except (binascii.Error, ValueError):
        signature = b""
    if len(signature) != 64:
        raise CheckpointError("signature: must be the base64 of 64 bytes")
    fields = {k: v for k, v in body.items() if k != "format"}
    return RestoreMarker(Restore(**fields), signature)


def verifies(public: PublicKey, marker: RestoreMarker) -> bool:
    """Whether the marker is signed by `public`."""
    body = marker.restore
    return body.key_id == public.key_id and public.verifies_bytes(
        marker.signature, canonical_json(body.body())
    )


def accepted(
    checkpoints: Iterable[SignedCheckpoint], markers: Iterable[RestoreMarker], public: PublicKey
) -> tuple[list[SignedCheckpoint], str | None]:
    """The checkpoints that still count once every accepted restore is applied, and why the markers
    cannot be trusted (None: they can).

    A marker drops the checkpoints signed no later than it that reach past its restored head (the
    replaced branch); the newest dropped must be the one it names, so it accepts that gap and no other.
    """
    kept = sorted(checkpoints, key=lambda c: (c.seq, c.checkpoint.time))
    for marker in sorted(markers, key=lambda m: (parse_time(m.restore.time), m.seq)):
        r = marker.restore
        if not verifies(public, marker):
            return kept, f"restore marker at seq {r.seq}: the signature is not valid for key {public.key_id}"
        when = parse_time(r.time)
        old = [c for c in kept if c.seq > r.restored_seq and parse_time(c.checkpoint.time) <= when]
        if old:
            newest = max(old, key=lambda c: (c.seq, c.checkpoint.time))
            if (newest.seq, newest.checkpoint.head) != (r.superseded_seq, r.superseded_head):
                return kept, (
                    f"the checkpoint at seq {newest.seq} predates the restore accepted at {r.time} but is "
                    f"not the one it accepted to lose (seq {r.superseded_seq}); a rollback that was not "
                    "accepted"
                )
        gone = {id(c) for c in old}
        kept = [c for c in kept if id(c) not in gone]
    return kept, None
