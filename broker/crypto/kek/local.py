"""A KEK held in process memory, loaded by the caller from an environment variable or a file."""

from __future__ import annotations

from typing import NoReturn

from broker.crypto.aead import Aead
from broker.crypto.envelope import check_kek_id


class LocalKek:
    """A Kek backed by a local 32-byte AES-256-GCM key: wrap() and unwrap() are Aead seal and open."""

    __slots__ = ("_aead", "key_id")

    def __init__(self, key_id: str, key: bytes) -> None:
        self.key_id: str = check_kek_id(key_id)
        self._aead = Aead(key)

    def wrap(self, dek: bytes, aad: bytes) -> bytes:
        """Encrypt a DEK; return nonce || ciphertext || tag."""
        return self._aead.seal(dek, aad)

    def unwrap(self, wrapped: bytes, aad: bytes) -> bytes:
        """Decrypt a DEK made by wrap(); raise IntegrityError on any mismatch."""
        return self._aead.open(wrapped, aad)

    def __repr__(self) -> str:
        return f"LocalKek(key_id={self.key_id!r}, key=***)"

    __str__ = __repr__

    def __reduce__(self) -> NoReturn:
        # Pickling would have to serialise the key; refuse rather than leak it into a cache or a file.
        raise TypeError("LocalKek objects hold key material and cannot be pickled")
