"""Signed checkpoints: Ed25519 over (sequence, head hash, time) of the audit chain.

Document (one line of canonical JSON, as stored in the checkpoint directory and in exports):
    {"checkpoint": {"format": "strongroom-checkpoint/1", "seq": 1000, "head": "<64 hex>",
                    "time": "2026-11-26T10:49:42.719316Z", "key_id": "ed25519:<32 hex>"},
     "signature": "<base64 of the 64-byte Ed25519 signature over canonical(checkpoint)>"}
`seq` is the size of the chain the checkpoint vouches for (every record up to and including `seq`) and
`head` the hash of record `seq`. A series of checkpoints never shrinks and its time never runs backwards.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import itertools
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from broker.audit.canonical import canonical_json, is_hash, parse_time

FORMAT = "strongroom-checkpoint/1"
MAX_DOCUMENT = 4096


class CheckpointError(ValueError):
    """A checkpoint or key that cannot be used; the message never quotes key material."""


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """What is signed."""

    seq: int
    head: str
    time: str
    key_id: str

    def body(self) -> dict[str, Any]:
        """The signed object."""
        return {
            "format": FORMAT,
            "seq": self.seq,
            "head": self.head,
            "time": self.time,
            "key_id": self.key_id,
        }

    def signed_bytes(self) -> bytes:
        """The exact bytes the signature covers."""
        return canonical_json(self.body())


@dataclass(frozen=True, slots=True)
class SignedCheckpoint:
    """A checkpoint and its signature."""

    checkpoint: Checkpoint
    signature: bytes

    @property
    def seq(self) -> int:
        """The chain size it vouches for."""
        return self.checkpoint.seq

    def document(self) -> str:
        """The stored form: one line of canonical JSON."""
        doc = {"checkpoint": self.checkpoint.body(), "signature": base64.b64encode(self.signature).decode()}
        return canonical_json(doc).decode("ascii")

    def as_json(self) -> dict[str, Any]:
        """The stored form as a JSON object."""
        loaded: dict[str, Any] = json.loads(self.document())
        return loaded


def parse(data: str | bytes | dict[str, Any]) -> SignedCheckpoint:
    """Parse a checkpoint document (text or an already-parsed object); bounded, strict, no key bytes in errors."""
    if isinstance(data, bytes | str):
        if len(data) > MAX_DOCUMENT:
            raise CheckpointError("checkpoint document is larger than 4 KiB")
        try:
            data = json.loads(data)
        except ValueError:
            raise CheckpointError("checkpoint document is not JSON") from None
    if not isinstance(data, dict) or set(data) != {"checkpoint", "signature"}:
        raise CheckpointError("checkpoint document must have exactly `checkpoint` and `signature`")
    body, sig = data["checkpoint"], data["signature"]
    if not isinstance(body, dict) or set(body) != {"format", "seq", "head", "time", "key_id"}:
        raise CheckpointError("checkpoint: must have exactly format, seq, head, time and key_id")
    if body["format"] != FORMAT:
        raise CheckpointError(f"checkpoint.format: must be {FORMAT!r}")
    seq = body["seq"]
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 1:
        raise CheckpointError("checkpoint.seq: must be a positive integer")
    if not is_hash(body["head"]):
        raise CheckpointError("checkpoint.head: must be 64 lower-case hex digits")
    if not isinstance(body["time"], str) or not isinstance(body["key_id"], str) or len(body["key_id"]) > 64:
        raise CheckpointError("checkpoint.time and key_id: must be strings")
    try:
        parse_time(body["time"])
    except ValueError:
        raise CheckpointError("checkpoint.time: must be YYYY-MM-DDTHH:MM:SS.ffffffZ") from None
    try:
        signature = base64.b64decode(sig, validate=True) if isinstance(sig, str) else b""
    except (binascii.Error, ValueError):
        signature = b""
    if len(signature) != 64:
        raise CheckpointError("signature: must be the base64 of 64 bytes")
    return SignedCheckpoint(Checkpoint(seq, body["head"], body["time"], body["key_id"]), signature)


def _key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "ed25519:" + hashlib.sha256(raw).hexdigest()[:32]


class PublicKey:
    """An Ed25519 public key that verifies checkpoints."""

    def __init__(self, key: Ed25519PublicKey) -> None:
        self._key = key
        self.key_id = _key_id(key)

    @classmethod
    def from_pem(cls, pem: bytes) -> PublicKey:
        """Load a PEM SubjectPublicKeyInfo Ed25519 key."""
        try:
            key = serialization.load_pem_public_key(pem)
        except (ValueError, TypeError):
            raise CheckpointError("not a PEM public key") from None
        if not isinstance(key, Ed25519PublicKey):
            raise CheckpointError("the public key is not an Ed25519 key")
        return cls(key)

    def pem(self) -> bytes:
        """PEM SubjectPublicKeyInfo."""
        return self._key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def verifies(self, signed: SignedCheckpoint) -> bool:
        """Whether the signature is this key's over exactly this checkpoint."""
        if signed.checkpoint.key_id != self.key_id:
            return False
        try:
            self._key.verify(signed.signature, signed.checkpoint.signed_bytes())
        except InvalidSignature:
            return False
        return True

    def verifies_bytes(self, signature: bytes, data: bytes) -> bool:
        """Whether `signature` is this key's over `data` (another signed document, e.g. a restore marker)."""
        try:
            self._key.verify(signature, data)
        except InvalidSignature:
            return False
        return True


class Signer:
    """The broker's checkpoint signing key (from configuration, never from the database)."""

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key
        self.public = PublicKey(key.public_key())

    def __repr__(self) -> str:
        return f"Signer(key_id={self.public.key_id!r}, key=***)"

    @classmethod
    def from_pem(cls, pem: bytes) -> Signer:
        """Load an unencrypted PKCS#8 PEM Ed25519 private key."""
        try:
            key = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError):
            raise CheckpointError("not an unencrypted PEM private key") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise CheckpointError("the signing key is not an Ed25519 key")
        return cls(key)

    def sign(self, *, seq: int, head: str, time: str) -> SignedCheckpoint:
        """Sign (seq, head, time)."""
        cp = Checkpoint(seq=seq, head=head, time=time, key_id=self.public.key_id)
        return SignedCheckpoint(cp, self._key.sign(cp.signed_bytes()))

    def sign_bytes(self, data: bytes) -> bytes:
        """Sign another document's canonical bytes; its own `format` field keeps it apart from a checkpoint."""
        return self._key.sign(data)


def generate_private_pem() -> bytes:
    """A new Ed25519 private key as unencrypted PKCS#8 PEM."""
    return Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def series_problem(checkpoints: Iterable[SignedCheckpoint], public: PublicKey) -> str | None:
    """Why a set of checkpoints cannot be trusted together (None: it can).

    Every signature must be the given key's; ordered by sequence, time never runs backwards and two
    checkpoints of the same sequence agree on the head (so the chain never shrinks or forks).
    """
    ordered = sorted(checkpoints, key=lambda c: (c.seq, c.checkpoint.time))
    for cp in ordered:
        if not public.verifies(cp):
            return f"checkpoint at seq {cp.seq}: the signature is not valid for key {public.key_id}"
    for before, after in itertools.pairwise(ordered):
        if after.seq == before.seq and after.checkpoint.head != before.checkpoint.head:
            return f"checkpoints at seq {after.seq} disagree on the head hash (a fork)"
        if parse_time(after.checkpoint.time) < parse_time(before.checkpoint.time):
            return (
                f"checkpoint at seq {after.seq} is older ({after.checkpoint.time}) than the one at seq "
                f"{before.seq} ({before.checkpoint.time}): the chain shrank or the time ran backwards"
            )
    return None
