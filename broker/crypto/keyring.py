"""KEKs by id: the current one wraps new DEKs, every one can unwrap, and rewrap moves a row to the current.

Rotation is online: build a Keyring with the old and the new KEK and the new one current, call
:meth:`Keyring.rewrap` on each row (only ``wrapped_dek`` and ``kek_id`` change, the value
ciphertext stays byte-for-byte the same), then drop the old KEK once
:meth:`Keyring.needs_rewrap` is false for every row. The wire format is in
:mod:`broker.crypto.envelope`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from broker.crypto import envelope
from broker.errors import IntegrityError, KeyUnavailable


class Kek(Protocol):
    """A key encryption key: just an AEAD named by an id (local key, AWS KMS, Vault transit)."""

    @property
    def key_id(self) -> str:
        """Stable id stored with each row; matches envelope.KEK_ID_PATTERN."""
        ...

    # Positional-only, so an implementation may name its parameters as its product does.
    def wrap(self, dek: bytes, aad: bytes, /) -> bytes:
        """Encrypt and authenticate a DEK under this KEK."""
        ...

    def unwrap(self, wrapped: bytes, aad: bytes, /) -> bytes:
        """Reverse wrap(); raise IntegrityError if the blob or the AAD does not authenticate."""
        ...


class DataKeyKek(Kek, Protocol):
    """A KEK that makes the data key itself (AWS KMS GenerateDataKey, Vault transit datakey)."""

    def generate(self, aad: bytes, /) -> tuple[bytes, bytes]:
        """Return a fresh 32-byte DEK and its wrapping under this KEK, bound to aad."""
        ...


@dataclass(frozen=True, slots=True, repr=False)
class Sealed:
    """One encrypted value as stored: value ciphertext, its wrapped DEK and the wrapping KEK's id."""

    ciphertext: bytes
    wrapped_dek: bytes
    kek_id: str

    def __repr__(self) -> str:
        return (
            f"Sealed(ciphertext=<{len(self.ciphertext)} bytes>, "
            f"wrapped_dek=<{len(self.wrapped_dek)} bytes>, kek_id={self.kek_id!r})"
        )


def missing_key(kid: str) -> KeyUnavailable | IntegrityError:
    """The error for a row wrapped by a KEK this keyring lacks: KeyUnavailable naming a well-formed id
    (a rotation this process has not picked up, or a key retired too early), else IntegrityError (a
    malformed id is damage, and is not echoed)."""
    if isinstance(kid, str) and envelope.KEK_ID_PATTERN.fullmatch(kid):
        return KeyUnavailable(kid)
    return IntegrityError()


class Keyring:
    """KEKs by id; seal() wraps under the current KEK, open() unwraps under the row's KEK."""

    __slots__ = ("_current", "_wrappers")

    def __init__(self, keks: Sequence[Kek], current: str) -> None:
        wrappers: dict[str, envelope.DekWrapper] = {}
        for kek in keks:
            wrapper = envelope.DekWrapper(kek)
            if wrapper.kek_id in wrappers:
                raise ValueError(f"duplicate kek id {wrapper.kek_id!r}")
            wrappers[wrapper.kek_id] = wrapper
        if current not in wrappers:
            raise ValueError(f"current kek id {current!r} is not among the keyring's keks")
        self._wrappers = wrappers
        self._current = wrappers[current]

    @property
    def current_id(self) -> str:
        """Id of the KEK that wraps new DEKs."""
        return self._current.kek_id

    @property
    def ids(self) -> tuple[str, ...]:
        """Ids of every KEK that can unwrap, in the order given."""
        return tuple(self._wrappers)

    def get(self, kid: str) -> Kek:
        """Return the KEK with this id; KeyUnavailable (or IntegrityError for a malformed id) if absent."""
        return self._wrapper(kid).kek

    def seal(self, plaintext: bytes, aad: bytes) -> Sealed:
        """Encrypt plaintext under a fresh DEK wrapped by the current KEK."""
        current = self._current
        if current.generates:
            dek, wrapped = current.generate(aad)
        else:
            dek = envelope.new_dek()
            wrapped = current.wrap(dek, aad)
        return Sealed(
            ciphertext=envelope.seal_value(dek, plaintext, aad),
            wrapped_dek=wrapped,
            kek_id=current.kek_id,
        )

    def open(self, sealed: Sealed, aad: bytes) -> bytes:
        """Decrypt a sealed value; raise IntegrityError if any field or the AAD does not match."""
        # The lookup is inlined rather than a call to _wrapper(): this is the hot read path. The DEK
        # is passed straight through, never bound to a local here, so no frame of ours shows it.
        wrapper = self._wrappers.get(sealed.kek_id)
        if wrapper is None:
            raise missing_key(sealed.kek_id)
        return envelope.open_value(wrapper.unwrap(sealed.wrapped_dek, aad), sealed.ciphertext, aad)

    def needs_rewrap(self, sealed: Sealed) -> bool:
        """Return True if the row's DEK is wrapped by a KEK other than the current one."""
        return sealed.kek_id != self._current.kek_id

    def rewrap(self, sealed: Sealed, aad: bytes) -> Sealed:
        """Re-wrap the row's DEK under the current KEK; the value ciphertext is not touched."""
        if not self.needs_rewrap(sealed):
            return sealed
        # The value ciphertext is not decrypted: the DEK's tag already binds it to this AAD, and a
        # damaged value stays detectable on every later open. The DEK is not bound to a local,
        # as in open(), so a failing remote KEK's traceback cannot show it.
        current = self._current
        return Sealed(
            ciphertext=sealed.ciphertext,
            wrapped_dek=current.wrap(self._wrapper(sealed.kek_id).unwrap(sealed.wrapped_dek, aad), aad),
            kek_id=current.kek_id,
        )

    def refresh(self, sealed: Sealed, aad: bytes) -> Sealed:
        """Move the row's wrapped DEK to its KEK's newest upstream key version, where the KEK can
        (Vault transit rewrap); otherwise return the row unchanged. The KEK id does not change."""
        new = self._wrapper(sealed.kek_id).refresh(sealed.wrapped_dek, aad)
        if new is None:
            return sealed
        return Sealed(ciphertext=sealed.ciphertext, wrapped_dek=new, kek_id=sealed.kek_id)

    def _wrapper(self, kid: str) -> envelope.DekWrapper:
        wrapper = self._wrappers.get(kid)
        if wrapper is None:
            raise missing_key(kid)
        return wrapper

    def __repr__(self) -> str:
        return f"Keyring(current={self.current_id!r}, ids={self.ids!r})"

    __str__ = __repr__
