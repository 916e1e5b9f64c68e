"""B13: signed checkpoints. A wrong key, any changed field, a shrinking size or time running backwards
is rejected; parsing is strict and bounded and never echoes key material."""

from __future__ import annotations

import base64
import json

import pytest

from broker.audit.checkpoint import (
    FORMAT,
    CheckpointError,
    PublicKey,
    Signer,
    generate_private_pem,
    parse,
    series_problem,
)

HEAD = "ab" * 32


@pytest.fixture(scope="module")
def signer() -> Signer:
    return Signer.from_pem(generate_private_pem())


def test_sign_and_verify_round_trip(signer: Signer) -> None:
    signed = signer.sign(seq=10, head=HEAD, time="2026-11-26T10:00:00.000000Z")
    again = parse(signed.document())
    assert again == signed
    assert signer.public.verifies(again)
    assert again.checkpoint.key_id == signer.public.key_id.lower()
    assert PublicKey.from_pem(signer.public.pem()).verifies(again)


def test_wrong_key_is_rejected(signer: Signer) -> None:
    other = Signer.from_pem(generate_private_pem())
    signed = other.sign(seq=10, head=HEAD, time="2026-11-26T10:00:00.000000Z")
    assert not signer.public.verifies(signed)
    # Even claiming the right key id does not help.
    doc = json.loads(signed.document())
    doc["checkpoint"]["key_id"] = signer.public.key_id
    assert not signer.public.verifies(parse(doc))
    assert "not valid" in (series_problem([parse(doc)], signer.public) or "")


@pytest.mark.parametrize(
    ("field", "value"),
    [("seq", 11), ("head", "cd" * 32), ("time", "2026-11-26T10:00:00.000001Z")],
)
def test_every_signed_field_is_covered(signer: Signer, field: str, value: object) -> None:
    doc = json.loads(signer.sign(seq=10, head=HEAD, time="2026-11-26T10:00:00.000000Z").document())
    doc["checkpoint"][field] = value
    assert not signer.public.verifies(parse(doc))


def test_signature_bit_flips_are_rejected(signer: Signer) -> None:
    signed = signer.sign(seq=3, head=HEAD, time="2026-11-26T10:00:00.000000Z")
    for i in range(64):
        sig = bytearray(signed.signature)
        sig[i] ^= 1
        doc = json.loads(signed.document())
        doc["signature"] = base64.b64encode(bytes(sig)).decode()
        assert not signer.public.verifies(parse(doc))


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d.update(extra=1),
        lambda d: d["checkpoint"].update(format="other"),
        lambda d: d["checkpoint"].update(seq=0),
        lambda d: d["checkpoint"].update(seq="10"),
        lambda d: d["checkpoint"].update(head="xyz"),
        lambda d: d["checkpoint"].update(time="yesterday"),
        lambda d: d["checkpoint"].pop("key_id"),
        lambda d: d.update(signature="!!"),
        lambda d: d.update(signature=base64.b64encode(b"short").decode()),
    ],
)
def test_malformed_documents_are_refused(signer: Signer, mutate: object) -> None:
    doc = json.loads(signer.sign(seq=10, head=HEAD, time="2026-11-26T10:00:00.000000Z").document())
    mutate(doc)  # type: ignore[operator]
    with pytest.raises(CheckpointError):
        parse(doc)


def test_oversized_and_non_json_documents_are_refused() -> None:
    with pytest.raises(CheckpointError, match="4 KiB"):
        parse("x" * 5000)
    with pytest.raises(CheckpointError, match="not JSON"):
        parse("{")


def test_shrinking_size_and_time_running_backwards_are_rejected(signer: Signer) -> None:
    a = signer.sign(seq=10, head=HEAD, time="2026-11-26T10:00:00.000000Z")
    b = signer.sign(seq=20, head="cd" * 32, time="2026-11-26T11:00:00.000000Z")
    assert series_problem([a, b], signer.public) is None
    # A later checkpoint that vouches for fewer records (the chain shrank) ...
    shrunk = signer.sign(seq=5, head="ef" * 32, time="2026-11-26T12:00:00.000000Z")
    assert "shrank or the time ran backwards" in (series_problem([a, b, shrunk], signer.public) or "")
    # ... or a bigger one signed earlier (time ran backwards).
    earlier = signer.sign(seq=30, head="ef" * 32, time="2026-11-26T09:00:00.000000Z")
    assert "shrank or the time ran backwards" in (series_problem([a, b, earlier], signer.public) or "")
    fork = signer.sign(seq=20, head="ee" * 32, time="2026-11-26T11:00:00.000000Z")
    assert "fork" in (series_problem([a, b, fork], signer.public) or "")


def test_keys_never_appear_in_errors_or_repr(signer: Signer) -> None:
    pem = generate_private_pem()
    assert pem.decode() not in repr(Signer.from_pem(pem))
    with pytest.raises(CheckpointError) as err:
        Signer.from_pem(pem[:-40])
    assert "PRIVATE" not in str(err.value)
    with pytest.raises(CheckpointError):
        PublicKey.from_pem(b"not a key")
    assert FORMAT in signer.sign(seq=1, head=HEAD, time="2026-11-26T10:00:00.000000Z").document()
