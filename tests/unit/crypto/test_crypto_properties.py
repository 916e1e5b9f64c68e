"""Hypothesis round trips: anything sealed opens to the same bytes, and only under the same AAD."""

from __future__ import annotations

import os

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from broker.crypto.aead import Aead
from broker.crypto.envelope import secret_aad
from broker.crypto.kek import LocalKek
from broker.crypto.keyring import Keyring
from broker.errors import IntegrityError

# Module-level so hypothesis does not rebuild them per example; each is keyed randomly per run.
KEYRING = Keyring([LocalKek("old", os.urandom(32)), LocalKek("new", os.urandom(32))], current="old")
ROTATED = Keyring([KEYRING.get("old"), KEYRING.get("new")], current="new")
AEAD = Aead(os.urandom(32))


@given(plaintext=st.binary(max_size=4096), aad=st.binary(max_size=512))
def test_keyring_round_trip(plaintext: bytes, aad: bytes) -> None:
    sealed = KEYRING.seal(plaintext, aad)
    assert len(sealed.ciphertext) == len(plaintext) + 29
    assert KEYRING.open(sealed, aad) == plaintext
    assert ROTATED.open(ROTATED.rewrap(sealed, aad), aad) == plaintext


@given(plaintext=st.binary(max_size=1024), aad=st.binary(max_size=256))
def test_aead_round_trip(plaintext: bytes, aad: bytes) -> None:
    assert AEAD.open(AEAD.seal(plaintext, aad), aad) == plaintext


@given(plaintext=st.binary(max_size=256), aad=st.binary(max_size=64), other=st.binary(max_size=64))
def test_keyring_open_under_another_aad_fails(plaintext: bytes, aad: bytes, other: bytes) -> None:
    assume(other != aad)
    sealed = KEYRING.seal(plaintext, aad)
    with pytest.raises(IntegrityError):
        KEYRING.open(sealed, other)


_FIELDS = st.tuples(
    st.integers(0, 2**64 - 1),
    st.integers(0, 2**64 - 1),
    st.text(st.characters(exclude_categories=["Cs"]), max_size=40),
    st.integers(0, 2**64 - 1),
)


@given(first=_FIELDS, second=_FIELDS)
def test_secret_aad_is_injective(first: tuple[int, int, str, int], second: tuple[int, int, str, int]) -> None:
    def encode(fields: tuple[int, int, str, int]) -> bytes:
        project_id, environment_id, name, version = fields
        return secret_aad(project_id=project_id, environment_id=environment_id, name=name, version=version)

    assert (encode(first) == encode(second)) == (first == second)
