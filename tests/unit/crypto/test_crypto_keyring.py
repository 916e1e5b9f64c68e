"""Keyring: construction rules, AAD binding (A4), rotation without re-encryption (A6), mixed state (A7)."""

from __future__ import annotations

import os
from dataclasses import FrozenInstanceError

import pytest

from broker.crypto.envelope import secret_aad
from broker.crypto.kek import LocalKek
from broker.crypto.keyring import Keyring, Sealed
from broker.errors import IntegrityError, KeyUnavailable

ROW = dict(project_id=7, environment_id=3, name="DATABASE_URL", version=2)


def _aad(**changes: object) -> bytes:
    return secret_aad(**{**ROW, **changes})  # type: ignore[arg-type]


@pytest.mark.parametrize("key_id", ["", "-lead", ".lead", "a" * 65, "a/b", "a b", "ké", "a\n", "a:b"])
def test_local_kek_refuses_a_bad_id(key_id: str) -> None:
    with pytest.raises(ValueError, match="kek id must match"):
        LocalKek(key_id, os.urandom(32))


@pytest.mark.parametrize("key_id", ["a", "0", "a" * 64, "kek-2025.prod_1"])
def test_local_kek_accepts_a_good_id(key_id: str) -> None:
    assert LocalKek(key_id, os.urandom(32)).key_id == key_id


def test_local_kek_refuses_a_bad_key() -> None:
    with pytest.raises(ValueError, match=r"^key must be 32 bytes$"):
        LocalKek("k", os.urandom(16))


def test_keyring_refuses_duplicate_ids_and_an_unknown_current(old_kek: LocalKek) -> None:
    with pytest.raises(ValueError, match="duplicate kek id 'kek-2024'"):
        Keyring([old_kek, LocalKek("kek-2024", os.urandom(32))], current="kek-2024")
    with pytest.raises(ValueError, match="current kek id 'kek-2025' is not among"):
        Keyring([old_kek], current="kek-2025")
    with pytest.raises(ValueError, match="current kek id"):
        Keyring([], current="kek-2024")


def test_keyring_properties(old_kek: LocalKek, new_kek: LocalKek) -> None:
    keyring = Keyring([old_kek, new_kek], current="kek-2025")
    assert keyring.current_id == "kek-2025"
    assert keyring.ids == ("kek-2024", "kek-2025")
    assert keyring.get("kek-2024") is old_kek
    with pytest.raises(KeyUnavailable) as missing:
        keyring.get("kek-1999")
    assert "kek-1999" in missing.value.message and missing.value.key_id == "kek-1999"


def test_sealed_is_frozen(keyring: Keyring, aad: bytes) -> None:
    sealed = keyring.seal(b"value", aad)
    with pytest.raises(FrozenInstanceError):
        sealed.kek_id = "other"  # type: ignore[misc]


def test_round_trip_and_fresh_dek_per_seal(keyring: Keyring, aad: bytes) -> None:
    first, second = keyring.seal(b"value", aad), keyring.seal(b"value", aad)
    assert first.kek_id == "kek-2024"
    assert first.ciphertext != second.ciphertext
    assert first.wrapped_dek != second.wrapped_dek
    assert keyring.open(first, aad) == keyring.open(second, aad) == b"value"


@pytest.mark.parametrize(
    "moved_to",
    [
        dict(project_id=8),
        dict(environment_id=4),
        dict(name="DATABASE_URL_2"),
        dict(version=3),
        dict(version=1),
    ],
    ids=["project", "environment", "name", "version-next", "version-previous"],
)
def test_a4_row_moved_to_another_project_environment_name_or_version_is_refused(
    moved_to: dict[str, object], keyring: Keyring
) -> None:
    sealed = keyring.seal(b"value", _aad())
    assert keyring.open(sealed, _aad()) == b"value"
    with pytest.raises(IntegrityError):
        keyring.open(sealed, _aad(**moved_to))
    # A rotation must not launder a moved row into a valid one under the new KEK.
    rotating = Keyring([keyring.get("kek-2024"), LocalKek("kek-new", os.urandom(32))], current="kek-new")
    with pytest.raises(IntegrityError):
        rotating.rewrap(sealed, _aad(**moved_to))


def test_a4_swapping_wrapped_deks_between_rows_is_refused(keyring: Keyring) -> None:
    one = keyring.seal(b"value one", _aad(name="ONE"))
    two = keyring.seal(b"value two", _aad(name="TWO"))
    with pytest.raises(IntegrityError):
        keyring.open(Sealed(one.ciphertext, two.wrapped_dek, two.kek_id), _aad(name="ONE"))
    with pytest.raises(IntegrityError):
        keyring.open(Sealed(two.ciphertext, one.wrapped_dek, one.kek_id), _aad(name="TWO"))


def test_a4_swapping_wrapped_deks_between_seals_of_the_same_row_is_refused(
    keyring: Keyring, aad: bytes
) -> None:
    # Same AAD, so only the value tag under the wrong DEK can catch it.
    one, two = keyring.seal(b"same", aad), keyring.seal(b"same", aad)
    with pytest.raises(IntegrityError):
        keyring.open(Sealed(one.ciphertext, two.wrapped_dek, one.kek_id), aad)


def test_a4_relabelling_the_kek_id_is_refused_even_when_both_ids_hold_the_same_key(aad: bytes) -> None:
    key = os.urandom(32)
    keyring = Keyring([LocalKek("alpha", key), LocalKek("beta", key)], current="alpha")
    sealed = keyring.seal(b"value", aad)
    assert keyring.open(sealed, aad) == b"value"
    with pytest.raises(IntegrityError):
        keyring.open(Sealed(sealed.ciphertext, sealed.wrapped_dek, "beta"), aad)
    # An id the keyring lacks is not damage but a missing key, named as such (issue 12 item 2) ...
    with pytest.raises(KeyUnavailable) as missing:
        keyring.open(Sealed(sealed.ciphertext, sealed.wrapped_dek, "gamma"), aad)
    assert "gamma" in missing.value.message and "integrity" not in missing.value.message
    # ... while a malformed id is damage, and is not echoed.
    with pytest.raises(IntegrityError):
        keyring.open(Sealed(sealed.ciphertext, sealed.wrapped_dek, "not an id!"), aad)


def test_a6_rotation_rewraps_without_touching_the_value_and_survives_retiring_the_old_kek(
    old_kek: LocalKek, new_kek: LocalKek, new_key: bytes
) -> None:
    before = Keyring([old_kek], current="kek-2024")
    rows = {f"S{i}": (os.urandom(1 + i), _aad(name=f"S{i}")) for i in range(20)}
    stored = {name: before.seal(plaintext, aad) for name, (plaintext, aad) in rows.items()}

    rotating = Keyring([old_kek, new_kek], current="kek-2025")
    rewrapped = {name: rotating.rewrap(stored[name], aad) for name, (_, aad) in rows.items()}

    retired = Keyring([LocalKek("kek-2025", new_key)], current="kek-2025")
    for name, (plaintext, aad) in rows.items():
        old, new = stored[name], rewrapped[name]
        assert new.ciphertext == old.ciphertext
        assert new.wrapped_dek != old.wrapped_dek
        assert (old.kek_id, new.kek_id) == ("kek-2024", "kek-2025")
        assert retired.open(new, aad) == plaintext
        # The retired or not-yet-known key is reported missing by id, not as damage.
        with pytest.raises(KeyUnavailable):
            retired.open(old, aad)
        with pytest.raises(KeyUnavailable):
            before.open(new, aad)


def test_a7_mixed_state_reads_everything_and_a_rerun_is_idempotent(
    old_kek: LocalKek, new_kek: LocalKek
) -> None:
    before = Keyring([old_kek], current="kek-2024")
    rows = [(os.urandom(16), _aad(version=v)) for v in range(1, 21)]
    stored = [before.seal(plaintext, aad) for plaintext, aad in rows]

    rotating = Keyring([old_kek, new_kek], current="kek-2025")
    # The re-wrap job dies halfway: the first ten rows are rewritten, the rest are not.
    stored = [
        rotating.rewrap(s, aad) if i < 10 else s
        for i, (s, (_, aad)) in enumerate(zip(stored, rows, strict=True))
    ]
    assert [s.kek_id for s in stored] == ["kek-2025"] * 10 + ["kek-2024"] * 10
    assert [rotating.needs_rewrap(s) for s in stored] == [False] * 10 + [True] * 10
    for sealed, (plaintext, aad) in zip(stored, rows, strict=True):
        assert rotating.open(sealed, aad) == plaintext

    rerun = [rotating.rewrap(s, aad) for s, (_, aad) in zip(stored, rows, strict=True)]
    for i, (old, new) in enumerate(zip(stored, rerun, strict=True)):
        if i < 10:
            assert new is old
        else:
            assert new.kek_id == "kek-2025"
            assert new.ciphertext == old.ciphertext
    assert not any(rotating.needs_rewrap(s) for s in rerun)
    assert [rotating.rewrap(s, aad) for s, (_, aad) in zip(rerun, rows, strict=True)] == rerun
    only_new = Keyring([new_kek], current="kek-2025")
    for sealed, (plaintext, aad) in zip(rerun, rows, strict=True):
        assert only_new.open(sealed, aad) == plaintext


def test_rewrap_refuses_a_row_whose_kek_is_not_in_the_keyring(
    new_kek: LocalKek, keyring: Keyring, aad: bytes
) -> None:
    sealed = keyring.seal(b"value", aad)
    with pytest.raises(KeyUnavailable):
        Keyring([new_kek], current="kek-2025").rewrap(sealed, aad)
