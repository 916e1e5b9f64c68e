"""A9: key material and plaintext never show in repr, str, error messages or tracebacks."""

from __future__ import annotations

import base64
import copy
import os
import pickle
import traceback

import pytest

from broker.crypto.aead import Aead
from broker.crypto.envelope import DekWrapper, secret_aad
from broker.crypto.kek import LocalKek
from broker.crypto.keyring import Keyring, Sealed
from broker.errors import IntegrityError, KeyUnavailable

# Canaries: random, so a match can only come from a leak, and long enough never to occur by chance.
KEY = os.urandom(32)
PLAINTEXT = os.urandom(24) + b"-canary-plaintext"
AAD = secret_aad(project_id=1, environment_id=2, name="API_TOKEN", version=1)


def _forms(secret: bytes) -> list[str]:
    """Every way a byte string tends to end up in text."""
    return [
        secret.hex(),
        secret.hex().upper(),
        secret[:8].hex(),
        base64.b64encode(secret).decode(),
        base64.urlsafe_b64encode(secret).decode(),
        base64.b64encode(secret).decode().rstrip("="),
        repr(secret),
        repr(secret)[2:-1],
        secret.decode("latin-1"),
    ]


def _assert_clean(text: str) -> None:
    for secret in (KEY, PLAINTEXT):
        for form in _forms(secret):
            assert form not in text


def _objects() -> tuple[Aead, LocalKek, Keyring, Sealed]:
    kek = LocalKek("kek-1", KEY)
    keyring = Keyring([kek], current="kek-1")
    return Aead(KEY), kek, keyring, keyring.seal(PLAINTEXT, AAD)


def test_reprs_are_redacted() -> None:
    box, kek, keyring, sealed = _objects()
    assert repr(box) == str(box) == "Aead(key=***)"
    assert repr(kek) == str(kek) == "LocalKek(key_id='kek-1', key=***)"
    assert repr(keyring) == str(keyring) == "Keyring(current='kek-1', ids=('kek-1',))"
    assert (
        repr(sealed)
        == str(sealed)
        == (f"Sealed(ciphertext=<{len(PLAINTEXT) + 29} bytes>, wrapped_dek=<61 bytes>, kek_id='kek-1')")
    )
    assert repr(DekWrapper(kek)) == "DekWrapper(LocalKek(key_id='kek-1', key=***))"


def test_no_repr_str_or_format_leaks_key_or_plaintext() -> None:
    box, kek, keyring, sealed = _objects()
    for obj in (box, kek, keyring, sealed, DekWrapper(kek)):
        _assert_clean(repr(obj))
        _assert_clean(str(obj))
        _assert_clean(f"{obj}")
        _assert_clean(repr([obj, {"k": obj}]))


def test_the_value_ciphertext_does_not_contain_the_plaintext() -> None:
    *_, sealed = _objects()
    assert PLAINTEXT not in sealed.ciphertext
    assert PLAINTEXT not in sealed.wrapped_dek
    assert KEY not in sealed.wrapped_dek


def test_key_objects_refuse_to_be_pickled_or_copied() -> None:
    box, kek, *_ = _objects()
    for obj in (box, kek):
        with pytest.raises(TypeError, match="cannot be pickled"):
            pickle.dumps(obj)
        with pytest.raises(TypeError, match="cannot be pickled"):
            copy.copy(obj)


def test_key_objects_do_not_keep_the_raw_key_as_an_attribute() -> None:
    box, kek, *_ = _objects()
    for obj in (box, kek, kek._aead):
        for slot in type(obj).__slots__:
            assert getattr(obj, slot) != KEY


def test_the_integrity_error_is_one_opaque_sentence() -> None:
    error = IntegrityError()
    assert str(error) == error.message == "stored data failed its integrity check"
    _assert_clean(repr(error))


def test_a_wrong_length_key_error_does_not_echo_the_key() -> None:
    with pytest.raises(ValueError) as caught:
        Aead(KEY[:31])
    _assert_clean(str(caught.value))
    _assert_clean("".join(traceback.format_exception(caught.value)))


def _flip_last(data: bytes) -> bytes:
    # Flipping a bit always changes the byte; overwriting it with a constant leaves it as it was
    # whenever the random tag already ended with that constant (1 run in 256).
    return data[:-1] + bytes([data[-1] ^ 1])


@pytest.mark.parametrize("damage", ["aad", "ciphertext", "wrapped_dek", "kek_id"])
def test_a_failed_open_leaves_no_key_or_plaintext_in_the_traceback(damage: str) -> None:
    _, _, keyring, sealed = _objects()
    aad = AAD
    if damage == "aad":
        aad = secret_aad(project_id=1, environment_id=2, name="API_TOKEN", version=2)
    elif damage == "ciphertext":
        sealed = Sealed(_flip_last(sealed.ciphertext), sealed.wrapped_dek, sealed.kek_id)
    elif damage == "wrapped_dek":
        sealed = Sealed(sealed.ciphertext, _flip_last(sealed.wrapped_dek), sealed.kek_id)
    else:
        # Malformed: damage. (A well-formed id the keyring lacks is KeyUnavailable: the next test.)
        sealed = Sealed(sealed.ciphertext, sealed.wrapped_dek, "kek 2!")
    try:
        keyring.open(sealed, aad)
    except IntegrityError as error:
        formatted = traceback.format_exc()
        assert error.message == "stored data failed its integrity check"
    else:
        pytest.fail("open() returned despite the damage")
    assert formatted.rstrip().endswith("IntegrityError: stored data failed its integrity check")
    # The library's InvalidTag is suppressed, so the trace names no check that failed.
    assert "InvalidTag" not in formatted
    assert "During handling" not in formatted
    _assert_clean(formatted)


def test_a_missing_key_names_the_key_and_leaves_no_key_or_plaintext_in_the_traceback() -> None:
    _, _, keyring, sealed = _objects()
    try:
        keyring.open(Sealed(sealed.ciphertext, sealed.wrapped_dek, "kek-2"), AAD)
    except KeyUnavailable as error:
        formatted = traceback.format_exc()
        assert error.key_id == "kek-2" and "kek-2" in error.message
    else:
        pytest.fail("open() returned without the key")
    _assert_clean(formatted)


def _failed_open(keyring: Keyring, sealed: Sealed, aad: bytes) -> IntegrityError:
    # Caught here rather than in the test, so the traceback's outermost frame holds no DEK of ours.
    try:
        keyring.open(sealed, aad)
    except IntegrityError as error:
        return error
    raise AssertionError("open() returned despite the damage")


@pytest.mark.parametrize("damage", ["flipped_tag", "swapped_ciphertext"])
def test_a_failed_open_leaves_no_dek_in_captured_frame_locals(damage: str) -> None:
    # Error reporters such as Sentry record every frame's locals; the DEK of the failing row, with
    # its stored ciphertext, would decrypt it.
    kek = LocalKek("kek-1", KEY)
    keyring = Keyring([kek], current="kek-1")
    sealed = keyring.seal(PLAINTEXT, AAD)
    dek = kek.unwrap(sealed.wrapped_dek[1:], b"strongroom/v1/dek\x00\x05kek-1" + AAD)
    if damage == "flipped_tag":
        sealed = Sealed(
            sealed.ciphertext[:-1] + bytes([sealed.ciphertext[-1] ^ 1]), sealed.wrapped_dek, "kek-1"
        )
    else:
        sealed = Sealed(keyring.seal(b"other", AAD).ciphertext, sealed.wrapped_dek, "kek-1")
    error = _failed_open(keyring, sealed, AAD)
    captured = traceback.TracebackException.from_exception(error, capture_locals=True)
    text = "".join(captured.format())
    # The DEK did reach these frames; the check below is about what they still hold.
    assert "in open_once" in text
    assert "in open_value" in text
    for form in _forms(dek):
        assert form not in text
    _assert_clean(text)
