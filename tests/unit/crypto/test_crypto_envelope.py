"""The version-1 wire format: nonce uniqueness (A2), bit flips (A3), versions and a pinned vector (A5)."""

from __future__ import annotations

import os
import struct
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from broker.crypto import envelope
from broker.crypto.envelope import (
    DEK_AAD_PREFIX,
    MAX_WRAPPED_SIZE,
    VALUE_AAD_PREFIX,
    DekWrapper,
    dek_aad,
    secret_aad,
)
from broker.crypto.kek import LocalKek
from broker.crypto.keyring import Keyring, Sealed
from broker.errors import IntegrityError

# A5 compatibility fixture, generated once with the version-1 code and pasted here: if the wire
# format changes, this row stops reading and the change has to add a version, not edit one.
FIXTURE_KEK_ID = "fixture-1"
FIXTURE_KEK = bytes.fromhex("916a1c4c21f29182b21db96dda077fad31ee6fc63b3a802b93cbb6cb880f37d5")
FIXTURE_AAD_HEX = (
    "736563726574000000000000000007000000000000000300000000000000020000000c44415441424153455f55524c"
)
FIXTURE_WRAPPED_DEK = bytes.fromhex(
    "0195aa7420349dcebfc5ed73056a36e106a77ddc2d0b6f60263dd79c1a3751997e5dd31ea9e9cf831d3c7231a5398393"
    "b6aa5da5aa8b41dc64c79b1397"
)
FIXTURE_CIPHERTEXT = bytes.fromhex(
    "01f2cd1e7787e150330106592bf23d50f0213debb682201cbddd29d15e5c80c16ff8f7987b87751b5135722623461872"
    "a58fc29080f153408b97a9576a71f873b6e05b66a8c291f5eebaa2519db8f61cc2fd0d3329739e0f1d75e4b52c"
)
FIXTURE_PLAINTEXT = b"postgres://app:correct-horse-battery-staple@db.internal:5432/app"


def _fixture_sealed() -> Sealed:
    return Sealed(ciphertext=FIXTURE_CIPHERTEXT, wrapped_dek=FIXTURE_WRAPPED_DEK, kek_id=FIXTURE_KEK_ID)


def test_a5_committed_fixture_reads_correctly() -> None:
    keyring = Keyring([LocalKek(FIXTURE_KEK_ID, FIXTURE_KEK)], current=FIXTURE_KEK_ID)
    aad = secret_aad(project_id=7, environment_id=3, name="DATABASE_URL", version=2)
    assert aad.hex() == FIXTURE_AAD_HEX
    assert keyring.open(_fixture_sealed(), aad) == FIXTURE_PLAINTEXT


def test_a5_fixture_decodes_with_the_documented_format_and_bare_aes_gcm() -> None:
    # An independent reader built from the module docstring only, so the docstring is pinned too.
    aad = bytes.fromhex(FIXTURE_AAD_HEX)
    wrapped = FIXTURE_WRAPPED_DEK
    assert wrapped[0] == 0x01
    kek_id = FIXTURE_KEK_ID.encode("ascii")
    dek = AESGCM(FIXTURE_KEK).decrypt(
        wrapped[1:13], wrapped[13:], b"strongroom/v1/dek\x00" + bytes([len(kek_id)]) + kek_id + aad
    )
    assert len(dek) == 32
    value = FIXTURE_CIPHERTEXT
    assert value[0] == 0x01
    assert AESGCM(dek).decrypt(value[1:13], value[13:], b"strongroom/v1/value\x00" + aad) == FIXTURE_PLAINTEXT


def test_secret_aad_layout_is_the_documented_one() -> None:
    encoded = secret_aad(project_id=1, environment_id=2, name="é", version=3)
    assert encoded == b"secret\x00" + struct.pack(">QQQI", 1, 2, 3, 2) + "é".encode()


def _decode_secret_aad(raw: bytes) -> tuple[int, int, str, int]:
    # Decodability is what makes the encoding injective; a test-side decoder shows it holds.
    assert raw.startswith(b"secret\x00")
    project_id, environment_id, version, size = struct.unpack_from(">QQQI", raw, 7)
    name = raw[7 + 28 :]
    assert len(name) == size
    return project_id, environment_id, name.decode("utf-8"), version


@pytest.mark.parametrize(
    "fields",
    [
        (0, 0, "", 0),
        (1, 2, "A", 3),
        (2**64 - 1, 2**64 - 1, "x" * 300, 2**64 - 1),
        (12, 3, "a\x00b", 4),
        (1, 23, "4", 5),
    ],
)
def test_secret_aad_decodes_back_to_its_fields(fields: tuple[int, int, str, int]) -> None:
    project_id, environment_id, name, version = fields
    raw = secret_aad(project_id=project_id, environment_id=environment_id, name=name, version=version)
    assert _decode_secret_aad(raw) == fields


def test_secret_aad_separates_tuples_that_concatenate_alike() -> None:
    assert secret_aad(project_id=1, environment_id=23, name="x", version=1) != secret_aad(
        project_id=12, environment_id=3, name="x", version=1
    )
    assert secret_aad(project_id=1, environment_id=2, name="ab", version=3) != secret_aad(
        project_id=1, environment_id=2, name="a", version=3
    )


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(project_id=-1, environment_id=0, name="n", version=0),
        dict(project_id=0, environment_id=2**64, name="n", version=0),
        dict(project_id=0, environment_id=0, name="n", version=-5),
        dict(project_id=True, environment_id=0, name="n", version=0),
        dict(project_id=0, environment_id=0, name="\ud800", version=0),
    ],
)
def test_secret_aad_refuses_values_it_cannot_encode_canonically(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        secret_aad(**kwargs)  # type: ignore[arg-type]


def test_a2_nonce_uniqueness_over_100k_seals(old_kek: LocalKek, keyring: Keyring, aad: bytes) -> None:
    count = 100_000
    plaintext = b"the same value every time"
    triples: set[tuple[str, bytes, bytes]] = set()
    deks: set[bytes] = set()
    nonces: set[bytes] = set()
    wrap_aad = dek_aad(old_kek.key_id, aad)
    seal = keyring.seal
    for _ in range(count):
        sealed = seal(plaintext, aad)
        # Fixed lengths mean each nonce occupies exactly bytes 1..12 of its blob.
        assert len(sealed.wrapped_dek) == 1 + 12 + 32 + 16
        assert len(sealed.ciphertext) == 1 + 12 + len(plaintext) + 16
        dek_nonce, value_nonce = sealed.wrapped_dek[1:13], sealed.ciphertext[1:13]
        triples.add((sealed.kek_id, dek_nonce, value_nonce))
        nonces.add(dek_nonce)
        nonces.add(value_nonce)
        deks.add(old_kek.unwrap(sealed.wrapped_dek[1:], wrap_aad))
    assert len(triples) == count
    assert len(nonces) == 2 * count
    assert len(deks) == count


@pytest.mark.parametrize("nonce_size", [8, 16])
def test_a2_value_blob_with_another_nonce_length_is_rejected(
    nonce_size: int, old_kek: LocalKek, keyring: Keyring, aad: bytes
) -> None:
    sealed = keyring.seal(b"value", aad)
    dek = old_kek.unwrap(sealed.wrapped_dek[1:], dek_aad(old_kek.key_id, aad))

    def forge(size: int) -> Sealed:
        nonce = os.urandom(size)
        body = AESGCM(dek).encrypt(nonce, b"value", VALUE_AAD_PREFIX + aad)
        return Sealed(ciphertext=b"\x01" + nonce + body, wrapped_dek=sealed.wrapped_dek, kek_id=sealed.kek_id)

    assert keyring.open(forge(12), aad) == b"value"
    with pytest.raises(IntegrityError):
        keyring.open(forge(nonce_size), aad)


@pytest.mark.parametrize("nonce_size", [8, 16])
def test_a2_wrapped_dek_with_another_nonce_length_is_rejected(
    nonce_size: int, old_key: bytes, old_kek: LocalKek, keyring: Keyring, aad: bytes
) -> None:
    sealed = keyring.seal(b"value", aad)
    dek = old_kek.unwrap(sealed.wrapped_dek[1:], dek_aad("kek-2024", aad))

    def forge(size: int) -> Sealed:
        nonce = os.urandom(size)
        body = AESGCM(old_key).encrypt(nonce, dek, dek_aad("kek-2024", aad))
        return Sealed(ciphertext=sealed.ciphertext, wrapped_dek=b"\x01" + nonce + body, kek_id="kek-2024")

    assert keyring.open(forge(12), aad) == b"value"
    with pytest.raises(IntegrityError):
        keyring.open(forge(nonce_size), aad)


# One tamper test per field, as in tink's envelope tests: every bit of every byte of the field.
FIELDS = [
    ("ciphertext", "version", 0, 1),
    ("ciphertext", "nonce", 1, 13),
    ("ciphertext", "body", 13, -16),
    ("ciphertext", "tag", -16, None),
    ("wrapped_dek", "version", 0, 1),
    ("wrapped_dek", "nonce", 1, 13),
    ("wrapped_dek", "body", 13, -16),
    ("wrapped_dek", "tag", -16, None),
]


def _replace(sealed: Sealed, blob_name: str, blob: bytes) -> Sealed:
    if blob_name == "ciphertext":
        return Sealed(ciphertext=blob, wrapped_dek=sealed.wrapped_dek, kek_id=sealed.kek_id)
    return Sealed(ciphertext=sealed.ciphertext, wrapped_dek=blob, kek_id=sealed.kek_id)


@pytest.mark.parametrize(
    ("blob_name", "field", "start", "stop"), FIELDS, ids=[f"{b}-{f}" for b, f, *_ in FIELDS]
)
def test_a3_flipping_any_bit_of_any_field_is_refused(
    blob_name: str, field: str, start: int, stop: int | None, keyring: Keyring, aad: bytes
) -> None:
    sealed = keyring.seal(b"a 24-byte secret value!!", aad)
    blob: bytes = getattr(sealed, blob_name)
    positions = range(len(blob))[start:stop]
    assert len(positions) > 0
    flips = 0
    for position in positions:
        for bit in range(8):
            tampered = bytearray(blob)
            tampered[position] ^= 1 << bit
            with pytest.raises(IntegrityError):
                keyring.open(_replace(sealed, blob_name, bytes(tampered)), aad)
            flips += 1
    assert flips == 8 * len(positions)
    assert keyring.open(sealed, aad) == b"a 24-byte secret value!!"


@pytest.mark.parametrize("blob_name", ["ciphertext", "wrapped_dek"])
def test_a3_every_truncation_and_an_extension_is_refused(
    blob_name: str, keyring: Keyring, aad: bytes
) -> None:
    sealed = keyring.seal(b"value", aad)
    blob: bytes = getattr(sealed, blob_name)
    for size in range(len(blob)):
        with pytest.raises(IntegrityError):
            keyring.open(_replace(sealed, blob_name, blob[:size]), aad)
        with pytest.raises(IntegrityError):
            keyring.open(_replace(sealed, blob_name, blob[len(blob) - size :]), aad)
    with pytest.raises(IntegrityError):
        keyring.open(_replace(sealed, blob_name, blob + b"\x00"), aad)


@pytest.mark.parametrize("blob_name", ["ciphertext", "wrapped_dek"])
def test_a5_every_unknown_version_byte_is_refused(blob_name: str, keyring: Keyring, aad: bytes) -> None:
    sealed = keyring.seal(b"value", aad)
    blob: bytes = getattr(sealed, blob_name)
    for version in range(256):
        if version == 0x01:
            continue
        with pytest.raises(IntegrityError):
            keyring.open(_replace(sealed, blob_name, bytes([version]) + blob[1:]), aad)


def test_a5_unknown_version_byte_is_refused_before_any_decryption(aad: bytes) -> None:
    # A version-2 blob that is otherwise valid must not be read as version 1.
    dek = envelope.new_dek()
    good = envelope.seal_value(dek, b"value", aad)
    assert envelope.open_value(dek, good, aad) == b"value"
    with pytest.raises(IntegrityError):
        envelope.open_value(dek, b"\x02" + good[1:], aad)


class _FakeRemoteKek:
    """A stand-in for a KMS/transit KEK whose wrap output is whatever the test wants."""

    def __init__(
        self, key_id: str, wrap: Callable[[bytes, bytes], bytes], unwrap: Callable[[bytes, bytes], bytes]
    ):
        self.key_id = key_id
        self.wrap = wrap
        self.unwrap = unwrap


def test_a_dek_that_is_not_32_bytes_after_unwrap_is_refused(old_key: bytes, aad: bytes) -> None:
    kek = LocalKek("kek-2024", old_key)
    keyring = Keyring([kek], current="kek-2024")
    sealed = keyring.seal(b"value", aad)
    for size in (0, 16, 24, 31, 33):
        short = b"\x01" + kek.wrap(os.urandom(size), dek_aad("kek-2024", aad))
        with pytest.raises(IntegrityError):
            keyring.open(_replace(sealed, "wrapped_dek", short), aad)


def test_an_oversized_wrapped_dek_is_refused_without_calling_the_kek(aad: bytes) -> None:
    calls: list[int] = []

    def unwrap(wrapped: bytes, _aad: bytes) -> bytes:
        calls.append(len(wrapped))
        return b"\x00" * 32

    kek = _FakeRemoteKek("remote", wrap=lambda dek, _aad: dek, unwrap=unwrap)
    wrapper = DekWrapper(kek)
    assert len(wrapper.unwrap(b"\x01" + b"x" * MAX_WRAPPED_SIZE, aad)) == 32
    with pytest.raises(IntegrityError):
        wrapper.unwrap(b"\x01" + b"x" * (MAX_WRAPPED_SIZE + 1), aad)
    assert calls == [MAX_WRAPPED_SIZE]


def test_a_kek_whose_output_is_too_large_is_refused_at_write_time(aad: bytes) -> None:
    kek = _FakeRemoteKek("remote", wrap=lambda dek, _aad: dek * 64, unwrap=lambda w, _aad: w[:32])
    keyring = Keyring([kek], current="remote")
    with pytest.raises(ValueError, match="larger than the format allows"):
        keyring.seal(b"value", aad)


def test_the_kek_sees_the_documented_dek_aad(aad: bytes) -> None:
    seen: list[bytes] = []

    def wrap(dek: bytes, wrap_aad: bytes) -> bytes:
        seen.append(wrap_aad)
        return dek

    keyring = Keyring([_FakeRemoteKek("remote.k_1", wrap=wrap, unwrap=lambda w, _a: w)], current="remote.k_1")
    keyring.seal(b"value", aad)
    assert seen == [DEK_AAD_PREFIX + b"\x0a" + b"remote.k_1" + aad]
