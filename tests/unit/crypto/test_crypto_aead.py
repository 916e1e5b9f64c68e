"""Aead: key checked in the constructor, nonce made inside, one opaque error for every failure."""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from broker.crypto import aead
from broker.crypto.aead import KEY_SIZE, NONCE_SIZE, TAG_SIZE, Aead, open_once, seal_once
from broker.errors import IntegrityError


@pytest.mark.parametrize("size", [0, 16, 24, 31, 33, 64])
def test_constructor_refuses_a_key_that_is_not_32_bytes(size: int) -> None:
    with pytest.raises(ValueError, match=r"^key must be 32 bytes$"):
        Aead(b"k" * size)


@pytest.mark.parametrize("size", [16, 31, 33])
def test_seal_once_refuses_a_key_that_is_not_32_bytes(size: int) -> None:
    with pytest.raises(ValueError, match=r"^key must be 32 bytes$"):
        seal_once(b"k" * size, b"plaintext", b"aad")


def test_round_trip_and_blob_layout() -> None:
    box = Aead(os.urandom(KEY_SIZE))
    blob = box.seal(b"hello", b"aad")
    assert len(blob) == NONCE_SIZE + len(b"hello") + TAG_SIZE
    assert box.open(blob, b"aad") == b"hello"


def test_the_blob_is_plain_aes_256_gcm_with_the_nonce_in_front() -> None:
    key = os.urandom(KEY_SIZE)
    blob = Aead(key).seal(b"hello", b"aad")
    assert AESGCM(key).decrypt(blob[:NONCE_SIZE], blob[NONCE_SIZE:], b"aad") == b"hello"


def test_seal_once_and_open_once_share_the_aead_blob_format() -> None:
    key = os.urandom(KEY_SIZE)
    assert Aead(key).open(seal_once(key, b"v", b"a"), b"a") == b"v"
    assert open_once(key, b"\x07" + Aead(key).seal(b"v", b"a"), b"a", 1) == b"v"


def test_no_function_or_method_accepts_a_nonce() -> None:
    assert list(inspect.signature(Aead.seal).parameters) == ["self", "plaintext", "aad"]
    assert list(inspect.signature(seal_once).parameters) == ["key", "plaintext", "aad"]
    targets: list[Callable[..., object]] = []
    for _, member in inspect.getmembers(aead, callable):
        if getattr(member, "__module__", None) == aead.__name__:
            targets.append(member)
            targets.extend(m for _, m in inspect.getmembers(member, inspect.isfunction))
    names = {target.__qualname__ for target in targets}
    assert {"Aead.seal", "Aead.open", "seal_once", "open_once"} <= names
    for target in targets:
        assert "nonce" not in inspect.signature(target).parameters, target.__qualname__


def test_two_seals_of_the_same_input_differ() -> None:
    box = Aead(os.urandom(KEY_SIZE))
    first, second = box.seal(b"same", b"aad"), box.seal(b"same", b"aad")
    assert first[:NONCE_SIZE] != second[:NONCE_SIZE]
    assert first != second


@pytest.mark.parametrize("nonce_size", [8, 11, 13, 16, 32])
def test_a_blob_made_with_another_nonce_length_is_rejected(nonce_size: int) -> None:
    key = os.urandom(KEY_SIZE)
    nonce = os.urandom(nonce_size)
    foreign = nonce + AESGCM(key).encrypt(nonce, b"value", b"aad")
    with pytest.raises(IntegrityError):
        Aead(key).open(foreign, b"aad")
    with pytest.raises(IntegrityError):
        open_once(key, foreign, b"aad")


def test_the_same_construction_with_a_12_byte_nonce_is_accepted() -> None:
    # Control for the test above: the construction itself is sound, only the nonce length differs.
    key = os.urandom(KEY_SIZE)
    nonce = os.urandom(NONCE_SIZE)
    blob = nonce + AESGCM(key).encrypt(nonce, b"value", b"aad")
    assert Aead(key).open(blob, b"aad") == b"value"


@pytest.mark.parametrize("size", range(NONCE_SIZE + TAG_SIZE))
def test_a_blob_shorter_than_nonce_and_tag_is_rejected(size: int) -> None:
    with pytest.raises(IntegrityError):
        Aead(os.urandom(KEY_SIZE)).open(b"\x00" * size, b"aad")


def test_wrong_key_and_wrong_aad_are_rejected() -> None:
    key = os.urandom(KEY_SIZE)
    blob = Aead(key).seal(b"value", b"aad")
    with pytest.raises(IntegrityError):
        Aead(os.urandom(KEY_SIZE)).open(blob, b"aad")
    with pytest.raises(IntegrityError):
        Aead(key).open(blob, b"aae")


def test_open_once_rejects_a_bad_key_or_offset_with_the_opaque_error() -> None:
    key = os.urandom(KEY_SIZE)
    blob = seal_once(key, b"value", b"aad")
    for bad_key in (key[:16], key + b"\x00"):
        with pytest.raises(IntegrityError):
            open_once(bad_key, blob, b"aad")
    for start in (-1, 1, len(blob)):
        with pytest.raises(IntegrityError):
            open_once(key, blob, b"aad", start)
